"""The leaderboard's figures (matplotlib, files only): a robustness curve per axis, the Pareto front, surprise,
success by rarity bucket."""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.report.leaderboard.build import Leaderboard, label  # noqa: E402
from harness.report.leaderboard.sections import FigureRef  # noqa: E402

_ROLE_COLOURS = {"floor": "0.55", "ceiling": "0.15"}  # the reference controllers in grey, darker for the ceiling


def _colours(board: Leaderboard) -> dict[tuple[str, str, str], object]:
    """(model, variant, source) -> colour, the same in every figure: the floor and ceiling grey, entries from tab10."""
    entries = board.conditions[["model", "variant", "source", "role"]].drop_duplicates(["model", "variant", "source"])
    palette = plt.get_cmap("tab10").colors
    models = sorted((m, v, s) for m, v, s, role in entries.itertuples(index=False) if role not in _ROLE_COLOURS)
    colours: dict[tuple[str, str, str], object] = {entry: palette[i % len(palette)] for i, entry in enumerate(models)}
    for model, variant, source, role in entries.itertuples(index=False):
        colours.setdefault((model, variant, source), _ROLE_COLOURS.get(role, "0.4"))
    return colours


def _task_panels(board: Leaderboard, curves: list, x_of: Callable, decorate: Callable) -> plt.Figure:
    """One panel per task, one line per curve with its 95% band, the legend beside the panels.

    ``x_of(curve)`` gives a curve's x values; ``decorate(ax, task, curves)`` titles and labels a task's panel.
    """
    tasks = sorted({c.task for c in curves})
    colours = _colours(board)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [c for c in curves if c.task == task]
        for curve in mine:
            colour = colours[(curve.model, curve.variant, curve.source)]
            x = np.asarray(x_of(curve))
            ax.plot(x, 100 * np.asarray(curve.success), "o-", color=colour,
                    label=label(curve.model, curve.variant, curve.role, curve.source))  # fmt: skip
            low, high = 100 * np.asarray(curve.success_ci_low), 100 * np.asarray(curve.success_ci_high)
            ax.fill_between(x, low, high, color=colour, alpha=0.15)
        decorate(ax, task, mine)
        ax.grid(alpha=0.3)
    legend = {text: handle for ax in axes.flat for handle, text in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.tight_layout()
    fig.legend(legend.values(), legend.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    return fig


def _robustness(board: Leaderboard, protocol_hash: str, axis: str) -> plt.Figure | None:
    """Success vs one axis's magnitude, one panel per task, one line per entry with its 95% CI band."""
    curves = [c for c in board.curves if c.protocol_hash == protocol_hash and c.axis == axis]
    if not curves:
        return None
    words = axis.replace("_", " ")

    def decorate(ax: plt.Axes, task: str, mine: list) -> None:
        for clean in sorted({c.clean_magnitude for c in mine if c.clean_magnitude is not None}):
            ax.axvline(clean, color="0.6", ls=":", lw=1)  # where the clean condition sits on this axis
        ax.set(title=f"{task}: {words}", xlabel=words, ylabel="success %", ylim=(-3, 103))

    return _task_panels(board, curves, lambda curve: curve.magnitudes, decorate)


def _pareto(board: Leaderboard, rows: pd.DataFrame) -> plt.Figure | None:
    """Clean success vs median planning time per task; the dashed line joins the entries no other beats on both.

    The floor and ceiling controllers do not plan; they are drawn as dotted horizontal references.
    """
    clean = rows[(rows["axis"] == "clean") & rows["success"].notna()]
    anchors = clean["role"].isin(["floor", "ceiling"])
    planners = clean[(clean["plan_ms_median"] > 0) & ~anchors]
    if planners.empty:
        return None
    tasks = sorted(planners["task"].unique())
    colours = _colours(board)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for row in clean[(clean["task"] == task) & anchors].itertuples():
            colour = colours[(row.model, row.variant, row.source)]
            name = label(row.model, row.variant, row.role, row.source)
            ax.axhline(100 * row.success, color=colour, ls=":", lw=1.2, label=name)
        points = planners[planners["task"] == task].sort_values(["plan_ms_median", "success"], ascending=[True, False])
        for row in points.itertuples():
            ax.errorbar(
                row.plan_ms_median,
                100 * row.success,
                yerr=[[100 * (row.success - row.success_ci_low)], [100 * (row.success_ci_high - row.success)]],
                fmt="o",
                color=colours[(row.model, row.variant, row.source)],
                capsize=3,
            )
            ax.annotate(
                label(row.model, row.variant, row.role, row.source),
                (row.plan_ms_median, 100 * row.success),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        frontier = points[points["success"] >= points["success"].cummax()]
        ax.step(frontier["plan_ms_median"], 100 * frontier["success"], where="post", color="0.4", ls="--", lw=1)
        ax.set(xscale="log", title=f"{task}: success vs plan time", xlabel="plan ms (median, log)", ylabel="success %")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _surprise(board: Leaderboard, rows: pd.DataFrame) -> plt.Figure | None:
    """Surprise AUROC (impossible vs possible events) per task and entry; 0.5 is chance."""
    values = rows[rows["surprise_auroc"].notna()].drop_duplicates(["task", "model", "variant", "source"])
    if values.empty:
        return None
    tasks = sorted(values["task"].unique())
    entries = sorted(set(values[["model", "variant", "source", "role"]].itertuples(index=False, name=None)))
    colours = _colours(board)
    width = 0.8 / len(entries)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.8 * len(tasks) * len(entries) ** 0.5), 3.4))
    for k, (model, variant, source, role) in enumerate(entries):
        mine = values[(values["model"] == model) & (values["variant"] == variant) & (values["source"] == source)]
        by_task = mine.set_index("task")["surprise_auroc"]
        heights = [by_task.get(task, np.nan) for task in tasks]
        offsets = np.arange(len(tasks)) + k * width
        colour, name = colours[(model, variant, source)], label(model, variant, role, source)
        ax.bar(offsets, heights, width, color=colour, label=name)
    ax.axhline(0.5, color="0.3", ls="--", lw=1, label="chance")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set(ylim=(0, 1), ylabel="surprise AUROC", title="Surprise on impossible events")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _rarity(board: Leaderboard, protocol_hash: str) -> plt.Figure | None:
    """Clean success vs rarity bucket (most common to rarest), one panel per task, one line per entry with its
    Wilson 95% band."""
    curves = [c for c in board.rarity if c.protocol_hash == protocol_hash]
    if not curves:
        return None

    def decorate(ax: plt.Axes, task: str, mine: list) -> None:
        buckets = max(c.buckets for c in mine)
        ticks = [f"Q{b}" for b in range(1, buckets + 1)]
        ticks[0], ticks[-1] = f"{ticks[0]}\ncommon", f"{ticks[-1]}\nrarest"
        ax.set_xticks(np.arange(1, buckets + 1), ticks)
        ax.set(title=f"{task}: success by rarity", xlabel="rarity bucket (clean)", ylabel="success %", ylim=(-3, 103))

    return _task_panels(board, curves, lambda curve: np.arange(1, curve.buckets + 1), decorate)


def draw(board: Leaderboard, figure: FigureRef) -> plt.Figure | None:
    """The figure a section asks for; None when its protocol has nothing to draw (no planners, no surprise scores)."""
    if figure.kind == "robustness":
        return _robustness(board, figure.protocol_hash, figure.axis or "")
    if figure.kind == "rarity":
        return _rarity(board, figure.protocol_hash)
    rows = board.conditions[board.conditions["protocol_hash"] == figure.protocol_hash]
    if figure.kind == "pareto":
        return _pareto(board, rows)
    if figure.kind == "surprise":
        return _surprise(board, rows)
    raise ValueError(f"unknown figure kind {figure.kind!r}; expected robustness, pareto, surprise or rarity")


def png(fig: plt.Figure) -> bytes:
    """A figure as PNG bytes (legends kept outside the axes), closing it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
