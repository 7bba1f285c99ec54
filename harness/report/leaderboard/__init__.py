"""Leaderboard: read a sweep's Parquet rows back and compare entries with intervals, never bare means.

:func:`build` reads rows into a typed :class:`Leaderboard` (build.py); ``sections.document`` turns
it into one list of sections (sections.py) that markdown.py and html.py only lay out, with the
figures of plots.py. The command (``python -m harness leaderboard``) lives in harness/sweep/cli.py:
it calls :func:`build` and :func:`write` and prints the Markdown file. Several folders (and globs,
:func:`expand`) make one standing board, merged where protocol and cases agree (merge.py). Where the stress
commands left ``rarity.parquet`` and ``replays.parquet`` in a folder, the board adds success by rarity and the
replayed failures, linking their image strips (rarity.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from harness.report.leaderboard import html, markdown, plots, sections
from harness.report.leaderboard.build import (
    GROUP,
    WIDE_CI_HALF_WIDTH,
    Curve,
    Leaderboard,
    NoResultsError,
    build,
    label,
)
from harness.report.leaderboard.merge import NoFoldersError, Refusal, Source, expand
from harness.report.leaderboard.rarity import RarityCurve
from harness.report.leaderboard.sections import FigureRef, Section

__all__ = [
    "GROUP",
    "WIDE_CI_HALF_WIDTH",
    "Curve",
    "FigureRef",
    "Leaderboard",
    "NoFoldersError",
    "NoResultsError",
    "RarityCurve",
    "Refusal",
    "Section",
    "Source",
    "build",
    "default_output_dir",
    "expand",
    "label",
    "render",
    "to_html",
    "to_markdown",
    "write",
]

logger = logging.getLogger(__name__)


def to_markdown(board: Leaderboard, figures: dict[FigureRef, Path] | None = None) -> str:
    """The leaderboard as Markdown; ``figures`` (as :func:`write` draws them) adds links to their PNG files."""
    figures = figures or {}
    return markdown.render(sections.with_figures(sections.document(board), figures), figures)


def to_html(board: Leaderboard, figures: dict[FigureRef, Path] | None = None) -> str:
    """The leaderboard as one self-contained HTML page; ``figures`` are embedded from their PNG files."""
    figures = figures or {}
    return html.render(sections.with_figures(sections.document(board), figures), figures)


def write(board: Leaderboard, out_dir: str | Path) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.html and the PNG figures; returns {"markdown", "html", figure stem: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = sections.document(board)
    figures: dict[FigureRef, Path] = {}
    for section in document:
        if section.figure is None or (fig := plots.draw(board, section.figure)) is None:
            continue
        figures[section.figure] = out / f"{section.figure.stem}.png"
        figures[section.figure].write_bytes(plots.png(fig))
    shown = sections.with_figures(document, figures)
    written = {ref.stem: path for ref, path in figures.items()}
    written["markdown"] = out / "leaderboard.md"
    written["markdown"].write_text(markdown.render(shown, figures, page_dir=out), encoding="utf-8")
    written["html"] = out / "leaderboard.html"
    written["html"].write_text(html.render(shown, figures, page_dir=out), encoding="utf-8")
    return written


def default_output_dir(root: str | Path) -> Path:
    """``<root>/leaderboard`` for a local folder or ``file://`` URI; ``results/<name>/leaderboard`` otherwise."""
    root = str(root)
    if root.startswith("file://"):
        return Path(root.removeprefix("file://")) / "leaderboard"
    if "://" in root:
        return Path("results", root.rstrip("/").rsplit("/", 1)[-1], "leaderboard")
    return Path(root) / "leaderboard"


def render(
    root: str | Path | list[str | Path], out_dir: str | Path | None = None, baseline: str | Path | None = None
) -> dict[str, Path]:
    """Build the leaderboard of ``root`` (one folder or several; default output: the first's leaderboard/), log its
    warnings and refusals, write it."""
    board = build(root, baseline)
    for warning in board.warnings:
        logger.warning(warning)
    for refusal in board.refused:
        logger.warning(refusal.describe())
    return write(board, out_dir if out_dir is not None else default_output_dir(board.root))
