"""The leaderboard's sections as Markdown: a heading, its notes, its table and a link to its figure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.report.leaderboard.sections import FigureRef, Section


def _table(header: tuple[str, ...], body: list[list[str]]) -> str:
    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(cells) for cells in body)])


def render(sections: list[Section], figures: Mapping[FigureRef, Path]) -> str:
    """Markdown of ``sections``; a figure is linked by file name, so the PNG must lie beside the Markdown file."""
    parts = []
    for section in sections:
        parts.append("#" * (section.level + 1) + " " + section.title)  # the page is "##": it prints inside a log
        parts.extend(section.notes)
        if section.header:
            parts.append(_table(section.header, [[cell.text for cell in row.cells] for row in section.rows]))
        if section.figure is not None:
            alt = section.title.replace("[", "(").replace("]", ")")
            parts.append(f"![{alt}]({figures[section.figure].name})")
    return "\n\n".join(parts) + "\n"
