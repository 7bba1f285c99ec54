"""The leaderboard's sections as Markdown: a heading, its notes, its table and a link to its figure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.report.leaderboard.sections import Cell, FigureRef, Section, href


def _table(header: tuple[str, ...], body: list[list[str]]) -> str:
    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(cells) for cells in body)])


def _cell(cell: Cell, page_dir: Path | None) -> str:
    """A cell's text, as a link when it has one (angle brackets keep a path with spaces or brackets whole)."""
    if cell.link is None:
        return cell.text
    target = href(cell.link, page_dir)
    return f"[{cell.text}](<{target}>)" if any(c in target for c in " ()<>") else f"[{cell.text}]({target})"


def render(sections: list[Section], figures: Mapping[FigureRef, Path], page_dir: Path | None = None) -> str:
    """Markdown of ``sections``; a figure is linked by file name, so the PNG must lie beside the Markdown file.
    A cell's link is relative to ``page_dir``, where the page is written (as found when None)."""
    parts = []
    for section in sections:
        parts.append("#" * (section.level + 1) + " " + section.title)  # the page is "##": it prints inside a log
        parts.extend(section.notes)
        if section.header:
            body = [[_cell(cell, page_dir) for cell in row.cells] for row in section.rows]
            parts.append(_table(section.header, body))
        if section.figure is not None:
            alt = section.title.replace("[", "(").replace("]", ")")
            parts.append(f"![{alt}]({figures[section.figure].name})")
    return "\n\n".join(parts) + "\n"
