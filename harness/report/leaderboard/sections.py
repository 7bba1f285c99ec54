"""The leaderboard's one section model: titled tables of text cells and notes, built once for Markdown and HTML alike.

Every table and sentence the reader sees is decided here; ``markdown.py`` and ``html.py`` only
lay the sections out, so the two documents cannot drift apart. A section may also ask for a
figure (:class:`FigureRef`), which ``plots.py`` draws; a figure that could not be drawn is
dropped by :func:`with_figures` before rendering.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.report.leaderboard.build import Curve, Leaderboard, label
from harness.report.leaderboard.rarity import RarityCurve

FAILED_COLUMNS = ("trial", "protocol", "task", "model", "seed", "condition", "error")
MISSING = "—"  # the text of a cell without a value
METHOD = (
    "Success: mean over seeds, 95% stratified bootstrap CI (seeds and episodes resampled). "
    "Δ vs clean: paired on the same cases (bootstrap CI; exact McNemar p on discordant pairs). "
    "AUC: normalised area under success vs magnitude (mean success over the range), "
    "each curve starting at the clean condition at its axis's unperturbed value."
)


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, the value a sortable table orders it by, and how to show it."""

    text: str
    sort: float | str | None = None  # None or NaN: no value (sorted last either way)
    detail: str | None = None  # a longer text folded under the cell where the format can (a traceback)
    warn: bool = False  # a warning the reader should not miss
    link: str | None = None  # a file the cell links to (an image strip), as found on this machine: see :func:`href`


def href(link: str, page_dir: Path | None) -> str:
    """Where a cell's link points from a page written to ``page_dir``: a relative path for a local file (so the
    folder can be moved whole), a URI as it is, and the path as found when the page has no folder yet."""
    if page_dir is None or "://" in link:
        return link
    return Path(os.path.relpath(Path(link).resolve(), Path(page_dir).resolve())).as_posix()


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    marks: tuple[str, ...] = ()  # "floor", "ceiling", "regression": what kind of row it is, for styling


@dataclass(frozen=True)
class FigureRef:
    """A figure a section shows: its kind ("robustness", "pareto", "surprise", "rarity"), protocol and axis."""

    kind: str
    protocol_hash: str
    axis: str | None = None

    @property
    def stem(self) -> str:
        """The figure's file name without ``.png``, e.g. ``robustness-1a2b3c4d5e6f-sticky_prob``."""
        return "-".join(part for part in (self.kind, self.protocol_hash, self.axis) if part)


@dataclass(frozen=True)
class Section:
    """A heading with notes, an optional table and an optional figure."""

    title: str  # inline `code` in backticks
    level: int  # 1 the page, 2 a protocol or the failed trials, 3 a part of a protocol
    notes: tuple[str, ...] = ()  # paragraphs before the table
    header: tuple[str, ...] = ()  # no header: no table
    rows: tuple[Row, ...] = ()
    figure: FigureRef | None = None


# --------------------------------------------------------------------------- cell texts


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value)) or value is pd.NA


def _pct(value: float) -> str:
    return MISSING if _missing(value) else f"{100 * value:.1f}"


def _pct_ci(value: float, low: float, high: float) -> str:
    return MISSING if _missing(value) else f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _signed_ci(value: float, low: float, high: float) -> str:
    return MISSING if _missing(value) else f"{100 * value:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _number(value: float, digits: int = 0) -> str:
    return MISSING if _missing(value) else f"{value:.{digits}f}"


def _p_value(value: float) -> str:
    if _missing(value):
        return MISSING
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _text(value: Any) -> str:
    if _missing(value):
        return MISSING
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def _one_line(error: str, limit: int = 160) -> str:
    """The last non-empty line of an error (where a traceback names the exception), cut to ``limit``."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "(no error recorded)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _words(axis: str) -> str:
    return axis.replace("_", " ")


def _flag(row: pd.Series, key: str) -> bool:
    """A boolean column that may be missing or NaN (rows without a baseline match)."""
    value = row.get(key, False)
    return isinstance(value, bool | np.bool_) and bool(value)


def _label_cell(model: str, variant: str, role: str, source: str = "") -> Cell:
    name = label(model, variant, role, source)
    return Cell(name, name)


def _marks(role: str, regression: bool = False) -> tuple[str, ...]:
    return (*((role,) if role in ("floor", "ceiling") else ()), *(("regression",) if regression else ()))


# --------------------------------------------------------------------------- the condition table


def _notes(row: pd.Series) -> str:
    notes = []
    if row.get("wide_ci", False):
        notes.append(f"⚠ CI ±{100 * row['success_half_width']:.0f} pp")
    if row.get("failed_trials", 0):
        notes.append(f"✗ {row['failed_trials']} failed")
    if _flag(row, "regression"):
        notes.append("▼ regression vs baseline")
    if _flag(row, "improvement_vs_baseline"):
        notes.append("▲ better than baseline")
    if row.get("seeds", 0) == 0:
        notes.append("no successful trial")
    return "; ".join(notes)


def _columns(board: Leaderboard) -> list[tuple[str, str]]:
    """(header, key) of the condition table's columns; the key names a formatter in _cell."""
    columns = [
        ("task", "task"),
        ("model", "model"),
        *([("sweep", "source")] if len(board.sources) > 1 else []),  # which folder a row of a merged board is from
        ("condition", "condition"),
        ("success % [95% CI]", "success"),
        ("Δ vs clean, pp [95% CI]", "delta"),
        ("McNemar p", "mcnemar_p"),
        ("plan ms", "plan_ms_median"),
        ("tokens/frame", "tokens_per_frame"),
        ("seeds × eps", "n"),
    ]
    if board.baseline is not None:
        columns.append(("vs baseline, pp [95% CI]", "vs_baseline"))
    columns.append(("notes", "notes"))
    return columns


def _cell(row: pd.Series, key: str) -> Cell:
    if key == "model":
        return _label_cell(row["model"], row["variant"], row["role"])
    if key in ("task", "condition", "source"):
        return Cell(str(row[key]), str(row[key]))
    if key == "success":
        return Cell(_pct_ci(row["success"], row["success_ci_low"], row["success_ci_high"]), row["success"])
    if key == "delta":
        return Cell(_signed_ci(row["delta_vs_clean"], row["delta_ci_low"], row["delta_ci_high"]), row["delta_vs_clean"])
    if key == "mcnemar_p":
        return Cell(_p_value(row["mcnemar_p"]), row["mcnemar_p"])
    if key == "plan_ms_median":
        return Cell(_number(row[key], 1), row[key])
    if key == "tokens_per_frame":
        return Cell(_number(row[key]), row[key])
    if key == "n":
        return Cell(f"{row['seeds']} × {row['episodes'] // max(row['seeds'], 1)}", row["episodes"])
    if key == "vs_baseline":
        value = row.get("vs_baseline", np.nan)
        text = _signed_ci(value, row.get("vs_baseline_low"), row.get("vs_baseline_high"))
        if not _missing(value):
            text += " paired" if row.get("vs_baseline_paired") else " unpaired"
        return Cell(text, value)
    notes = _notes(row)
    return Cell(notes, notes, warn=bool(notes))


def _condition_section(board: Leaderboard, protocol_hash: str, rows: pd.DataFrame) -> Section:
    """One protocol's condition table; a column without a value in any row (no baseline match, say) is left out."""
    columns = _columns(board)
    cells = [[_cell(row, key) for _, key in columns] for _, row in rows.iterrows()]
    always = {"task", "model", "source", "condition", "success", "notes"}
    keep = [j for j, (_, key) in enumerate(columns) if key in always or any(row[j].text != MISSING for row in cells)]
    body = tuple(
        Row(tuple(row_cells[j] for j in keep), _marks(row["role"], _flag(row, "regression")))
        for (_, row), row_cells in zip(rows.iterrows(), cells, strict=True)
    )
    title = _protocol_title(protocol_hash, board.protocols.get(protocol_hash, {}))
    return Section(title, 2, header=tuple(columns[j][0] for j in keep), rows=body)


def _protocol_title(protocol_hash: str, protocol: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in sorted(protocol.items()) if k != "name")
    name = protocol.get("name", "?")
    return f"Protocol `{protocol_hash}` — {name}" + (f" ({fields})" if fields else "")


def protocol_note(protocols: dict[str, dict[str, Any]]) -> str:
    """One line saying why several protocols get separate tables, naming the fields that differ."""
    if len(protocols) < 2:
        return ""
    keys = sorted({k for p in protocols.values() for k in p} - {"name"})
    differing = []
    for key in keys:
        values = [p.get(key) for p in protocols.values()]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            differing.append(f"{key} ({' vs '.join(str(v) for v in values)})")
    why = "; they differ in " + ", ".join(differing) if differing else ""
    names = ", ".join(f"{p.get('name', '?')} `{h}`" for h, p in protocols.items())
    return (
        f"Note: {len(protocols)} evaluation protocols ({names}) are shown in separate tables, "
        f"never ranked together: a success rate means something else under each{why}."
    )


# --------------------------------------------------------------------------- summaries and curves


def _iqm_section(models: pd.DataFrame) -> Section:
    rows = tuple(
        Row(
            (
                _label_cell(m.model, m.variant, m.role, m.source),
                Cell(_pct_ci(m.iqm, m.iqm_ci_low, m.iqm_ci_high), m.iqm),
                Cell(m.tasks, m.tasks),
                Cell(str(m.runs), m.runs),
            ),
            _marks(m.role),
        )
        for m in models.itertuples()
    )
    header = ("model", "IQM % [95% CI]", "tasks", "runs")
    return Section("Interquartile mean of clean success across tasks (rliable)", 3, header=header, rows=rows)


def _improvement_section(pairs: pd.DataFrame) -> Section:
    rows = tuple(
        Row(
            (
                Cell(p.task, p.task),
                _label_cell(p.model_x, p.variant_x, p.role_x, p.source_x),
                _label_cell(p.model_y, p.variant_y, p.role_y, p.source_y),
                Cell(f"{p.p_x_better:.2f}", p.p_x_better),
                Cell(str(p.runs_x), p.runs_x),
                Cell(str(p.runs_y), p.runs_y),
            )
        )
        for p in pairs.itertuples()
    )
    header = ("task", "X", "Y", "P(X > Y)", "runs X", "runs Y")
    return Section("Probability of improvement P(X > Y), clean, over seeds", 3, header=header, rows=rows)


def _probe_section(probes: pd.DataFrame) -> Section:
    """What the encoder knows: a linear probe per named quantity on held-out frames (the paper's probe table)."""
    rows = tuple(
        Row(
            (
                Cell(p.task, p.task),
                _label_cell(p.model, p.variant, "model", p.source),
                Cell(p.quantity, p.quantity),
                Cell(f"{p.pearson_r:.3f}", p.pearson_r),
                Cell(f"{p.r2:.3f}", p.r2),
                Cell(str(p.seeds), p.seeds),
            )
        )
        for p in probes.itertuples()
    )
    note = (
        "Ridge probes from the frozen latent to each named state quantity, fitted on training frames "
        "and scored on held-out ones; mean over seeds."
    )
    header = ("task", "model", "quantity", "Pearson r", "R²", "seeds")
    return Section("Linear probes of the latent (held-out)", 3, notes=(note,), header=header, rows=rows)


def _curve_section(protocol_hash: str, axis: str, curves: list[Curve]) -> Section:
    """Success % at each magnitude of one axis, one row per task × entry, with the curve's AUC and its plot."""
    magnitudes = sorted({m for curve in curves for m in curve.magnitudes})
    clean_at = sorted({curve.clean_magnitude for curve in curves if curve.clean_magnitude is not None})
    header = ("task", "model", *(f"{m:g}" + (" (clean)" if m in clean_at else "") for m in magnitudes), "AUC %")
    rows = []
    for curve in curves:
        at = dict(zip(curve.magnitudes, curve.success, strict=True))
        cells = [Cell(curve.task, curve.task), _label_cell(curve.model, curve.variant, curve.role, curve.source)]
        cells += [Cell(_pct(at.get(m, np.nan)), at.get(m, np.nan)) for m in magnitudes]
        rows.append(Row((*cells, Cell(_pct(curve.auc), curve.auc)), _marks(curve.role)))
    start = ", ".join(f"{axis}={m:g}" for m in clean_at) or "none: no clean condition"
    note = (
        f"Success % vs {_words(axis)} (plot: 95% CI bands). The clean condition sits at the axis's unperturbed value "
        f"({start}); AUC %: normalised area under the curve, the mean success over the magnitudes run."
    )
    kinds = {curve.task: curve.camera_kind for curve in curves if curve.camera_kind}
    if kinds:  # a camera axis: say on which tasks the camera itself moved and where the frames were warped
        by_task = "; ".join(f"{task}: {kind}" for task, kind in sorted(kinds.items()))
        note += (
            f" Camera change ({by_task}): viewpoint, a moved 3-D camera rendering the scene with parallax; "
            "pixel, the rendered frame warped."
        )
    figure = FigureRef("robustness", protocol_hash, axis)
    return Section(f"Robustness to {_words(axis)}", 3, notes=(note,), header=header, rows=tuple(rows), figure=figure)


# --------------------------------------------------------------------------- the rare-state study


def _bucket_names(buckets: int) -> list[str]:
    """Column names of the rarity buckets, the most common first: ``Q1 (most common)`` ... ``Q4 (rarest)``."""
    ends = {0: " (most common)", buckets - 1: " (rarest)"}
    return [f"Q{bucket + 1}{ends.get(bucket, '')}" for bucket in range(buckets)]


def _surprise_number(value: float) -> str:
    """A surprise in the model's own latent units, whatever their scale: three significant digits (whole above 1000)."""
    if _missing(value):
        return MISSING
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:#.3g}"


def _surprise_cells(curve: RarityCurve, buckets: int) -> list[Cell]:
    """Mean surprise per bucket and Spearman's ρ of rarity and surprise with its n (no values: a reference
    controller, or a model whose cases were not scored)."""
    means = [curve.surprise[b] if b < len(curve.surprise) else np.nan for b in range(buckets)]
    cells = [Cell(_surprise_number(value), value) for value in means]
    rho = curve.surprise_spearman
    if not curve.surprise_pairs:
        return [*cells, Cell(MISSING)]
    text = f"{MISSING if _missing(rho) else f'{rho:+.2f}'} (n = {curve.surprise_pairs})"
    return [*cells, Cell(text, rho)]


def _rarity_section(protocol_hash: str, curves: list[RarityCurve]) -> Section:
    """Clean success % per rarity bucket, one row per task × entry, with rarest − most common and its plot; where
    world models' cases carry surprise, their mean surprise per bucket and its rank correlation with rarity."""
    buckets = max(curve.buckets for curve in curves)
    with_surprise = any(curve.surprise_pairs for curve in curves)
    header = ("task", "model", *_bucket_names(buckets), "rarest − most common, pp [95% CI]", "episodes per Q")
    if with_surprise:
        header += (*(f"surprise Q{bucket + 1}" for bucket in range(buckets)), "Spearman ρ rarity–surprise")
    rows = []
    for curve in curves:
        cells = [Cell(curve.task, curve.task), _label_cell(curve.model, curve.variant, curve.role, curve.source)]
        for bucket in range(buckets):
            if bucket < curve.buckets:
                value = curve.success[bucket]
                text = _pct_ci(value, curve.success_ci_low[bucket], curve.success_ci_high[bucket])
                cells.append(Cell(text, value))
            else:
                cells.append(Cell(MISSING))
        cells.append(Cell(_signed_ci(curve.gap, curve.gap_ci_low, curve.gap_ci_high), curve.gap))
        counts = " · ".join(str(count) for count in curve.episodes)
        cells.append(Cell(counts, sum(curve.episodes)))
        if with_surprise:
            cells += _surprise_cells(curve, buckets)
        rows.append(Row(tuple(cells), _marks(curve.role)))
    ks = ", ".join(str(k) for k in sorted({curve.rarity_k for curve in curves}))
    note = (
        f"Clean condition. A case is as rare as its rarer end: the start's or the goal's mean distance to its "
        f"k = {ks} nearest training states, per dimension standardised (`python -m harness stress rarity`). "
        f"Q1 … Q{buckets}: quantiles of each task's cases, Q1 the most common, Q{buckets} the rarest; the edges "
        "are shared by every model of a task, so a column compares models on the same cases. Success %: Wilson 95% "
        "interval over seeds × cases pooled (plot: the same intervals as bands). Rarest − most common: Newcombe's "
        "95% interval from the two Wilson intervals, unpaired, since the two buckets hold different cases (no paired "
        "test within one model exists); models are compared case for case below."
    )
    surprise_note = (
        "Surprise: a world model's mean one-step latent prediction error ‖predict(z≤t, a≤t) − encode(frame t+1)‖² "
        "(the surprise test's quantity, not z-scored) along each case's recorded frames from its start to its goal, "
        "averaged per Q over seeds × cases; Spearman ρ: rank correlation of a case's rarity with that surprise, "
        "seeds × cases pooled (n), above 0 when rarer cases surprise the model more."
    )
    notes = (note, surprise_note) if with_surprise else (note,)
    figure = FigureRef("rarity", protocol_hash)
    return Section("Success by rarity", 3, notes=notes, header=header, rows=tuple(rows), figure=figure)


def _rarity_pairs_section(pairs: pd.DataFrame) -> Section:
    """Models compared on the same rare cases: X − Y on the rarest bucket, and the difference of their gaps."""
    rows = tuple(
        Row(
            (
                Cell(p.task, p.task),
                _label_cell(p.model_x, p.variant_x, "model", p.source),
                _label_cell(p.model_y, p.variant_y, "model", p.source),
                Cell(_signed_ci(p.rarest_difference, p.rarest_ci_low, p.rarest_ci_high), p.rarest_difference),
                Cell(_p_value(p.mcnemar_p), p.mcnemar_p),
                Cell(_signed_ci(p.gap_difference, p.gap_ci_low, p.gap_ci_high), p.gap_difference),
                Cell(f"{p.rarest_pairs} / {p.common_pairs}", p.rarest_pairs),
            )
        )
        for p in pairs.itertuples()
    )
    header = (
        "task", "X", "Y", "rarest Q: X − Y, pp [95% CI]", "McNemar p", "gap X − gap Y, pp [95% CI]",
        "pairs (rarest / most common)",
    )  # fmt: skip
    note = (
        "World models compared on the same cases (same seed, same case, so the same bucket; seeds × cases pooled). "
        "Rarest Q: X's success minus Y's on the rarest bucket, a paired bootstrap 95% CI and the exact McNemar p on "
        "the discordant cases. Gap X − gap Y: how much more X loses than Y from the most common bucket to the rarest "
        "(negative: X loses more), a bootstrap 95% CI of the per-case differences X − Y over the two buckets' cases."
    )
    return Section("Rare cases, models compared case for case", 3, notes=(note,), header=header, rows=rows)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _replays_section(replays: pd.DataFrame) -> Section:
    """The adversarial search's hardest cases, replayed, each linking its image strip."""
    several = replays["protocol_hash"].nunique() > 1
    rows = []
    for r in replays.itertuples():
        agrees = r.success == r.recorded_success and abs(r.final_distance - r.recorded_final_distance) < 1e-3
        success = f"{_yes_no(r.success)} ({_yes_no(r.recorded_success)})"
        distance = f"{r.final_distance:.3f} ({r.recorded_final_distance:.3f})"
        rarity = f"{_number(r.start_rarity, 2)} / {_number(r.goal_rarity, 2)}"
        name = Path(r.strip).name
        strip = Cell(name, name, link=r.strip_path) if r.strip_exists else Cell(f"missing: {r.strip}", warn=True)
        cells = [
            *([Cell(r.protocol_hash, r.protocol_hash)] if several else []),
            Cell(r.task, r.task),
            _label_cell(r.model, r.variant, r.role, r.source),
            Cell(str(r.seed), r.seed),
            Cell(r.condition, r.condition),
            Cell(str(r.failure_row), r.failure_row),
            Cell(success, int(r.success), warn=not agrees),
            Cell(distance, r.final_distance, warn=not agrees),
            Cell(rarity, r.start_rarity if not _missing(r.start_rarity) else None),
            strip,
        ]
        rows.append(Row(tuple(cells), _marks(r.role)))
    header = (
        *(("protocol",) if several else ()), "task", "model", "seed", "condition", "row",
        "success: replayed (searched)", "final distance: replayed (searched)", "rarity: start / goal", "strip",
    )  # fmt: skip
    note = (
        "The hardest cases the adversarial search found (`python -m harness stress search`), replayed with the "
        "trial's own controller and drawn by `python -m harness replay-failures RESULTS`: the start, the frame "
        "after each executed action block and the goal, as the controller saw them. Row: the case's row in "
        "`failures/<trial>.parquet` (0 = the hardest). In brackets what the search recorded; a replay that "
        "disagrees is marked."
    )
    title = f"Replayed failures ({len(replays)})"
    return Section(title, 2, notes=(note,), header=header, rows=tuple(rows))


# --------------------------------------------------------------------------- the document


def _failed_section(failed: pd.DataFrame) -> Section:
    title = f"Failed trials ({len(failed)})"
    if not len(failed):
        return Section(title, 2, notes=("None.",))
    rows = []
    for f in failed.itertuples():
        values = [f.trial_id, f.protocol_hash, f.task, label(f.model, f.variant, f.role, f.source), f.seed, f.condition]
        cells = [Cell(_text(value), _text(value)) for value in values]
        error = _one_line(f.error)
        rows.append(Row((*cells, Cell(error, error, detail=str(f.error)))))
    return Section(title, 2, header=FAILED_COLUMNS, rows=tuple(rows))


def _source_notes(board: Leaderboard) -> list[str]:
    """On a merged board: which folders its rows come from (the sweep column), and what was left off and why."""
    if len(board.sources) < 2:
        return []
    notes = [
        "Merged from several results folders, each row marked with its folder in the sweep column; rows are "
        "ranked together only where the protocol hash and the case fingerprint agree (the first folder founds "
        "the board): " + "; ".join(source.describe() for source in board.sources) + "."
    ]
    notes += [f"⚠ {refusal.describe()}." for refusal in board.refused]
    return notes


def document(board: Leaderboard) -> list[Section]:
    """Every section of the leaderboard, in reading order: the page, each protocol's tables and figures, failures."""
    folders = [source.folder for source in board.sources] or [board.root]
    where = "Results: " + ", ".join(f"`{folder}`" for folder in folders)
    where += f"; baseline: `{board.baseline}`" if board.baseline else ""
    page_notes = [where, *_source_notes(board), *filter(None, [protocol_note(board.protocols)]), METHOD]
    if board.left_out:
        page_notes.append(
            f"⚠ {len(board.left_out)} trial(s) left out of every statistic, their files unreadable or inconsistent "
            "(`--resume` runs them again): " + "; ".join(f"`{t}`: {why}" for t, why in board.left_out.items())
        )
    sections = [Section("wmbench leaderboard", 1, notes=tuple(page_notes))]
    for protocol_hash, rows in board.conditions.groupby("protocol_hash", sort=True):
        sections.append(_condition_section(board, protocol_hash, rows))
        models = board.models[board.models["protocol_hash"] == protocol_hash]
        if len(models):
            sections.append(_iqm_section(models))
        pairs = board.improvement[board.improvement["protocol_hash"] == protocol_hash]
        if len(pairs):
            sections.append(_improvement_section(pairs))
        probes = board.probes[board.probes["protocol_hash"] == protocol_hash]
        if len(probes):
            sections.append(_probe_section(probes))
        for axis in board.axes:
            curves = [c for c in board.curves if c.protocol_hash == protocol_hash and c.axis == axis]
            if curves:
                sections.append(_curve_section(protocol_hash, axis, curves))
        rarity = [c for c in board.rarity if c.protocol_hash == protocol_hash]
        if rarity:
            sections.append(_rarity_section(protocol_hash, rarity))
        pairs = board.rarity_pairs[board.rarity_pairs["protocol_hash"] == protocol_hash]
        if len(pairs):
            sections.append(_rarity_pairs_section(pairs))
        pareto, surprise = FigureRef("pareto", protocol_hash), FigureRef("surprise", protocol_hash)
        sections.append(Section("Success vs planning time (clean; dashed: Pareto front)", 3, figure=pareto))
        sections.append(Section("Surprise AUROC on impossible events", 3, figure=surprise))
    if len(board.replays):
        sections.append(_replays_section(board.replays))
    sections.append(_failed_section(board.failed))
    return sections


def with_figures(sections: list[Section], drawn: Collection[FigureRef]) -> list[Section]:
    """The sections as shown once figures are drawn: a figure not drawn is dropped, and so is a section left empty."""
    shown = []
    for section in sections:
        if section.figure is not None and section.figure not in drawn:
            section = dataclasses.replace(section, figure=None)
            if not (section.header or section.notes):
                continue
        shown.append(section)
    return shown
