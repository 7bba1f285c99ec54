"""The leaderboard's sections as one self-contained HTML page: sortable tables, figures embedded as base64 PNG."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from html import escape
from pathlib import Path

import numpy as np

from harness.report.leaderboard.sections import Cell, FigureRef, Row, Section, href

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const dir = th.dataset.dir === "asc" ? -1 : 1;
  th.dataset.dir = dir > 0 ? "asc" : "desc";
  const key = (row) => { const v = row.cells[col].dataset.v; const n = Number(v);
                         return v === "" ? null : (isNaN(n) ? v : n); };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // missing values last either way
    return (typeof x === typeof y ? (x > y) - (x < y) : (typeof x === "number" ? -1 : 1)) * dir;
  }).forEach((row) => body.appendChild(row));
}));
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; white-space: nowrap; }
th { background: #f1f1f1; } table.sortable th { cursor: pointer; } table.sortable th:hover { background: #e2e2e2; }
tr.floor td, tr.ceiling td { color: #666; font-style: italic; }
span.warn { color: #a15c00; } tr.regression td { background: #fde8e8; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
pre { white-space: pre-wrap; font-size: 12px; margin: 0; } summary { cursor: pointer; }
"""


def _inline(text: str) -> str:
    """Escaped text with `backticked` spans as <code>."""
    parts = text.split("`")
    return "".join(f"<code>{escape(part)}</code>" if i % 2 else escape(part) for i, part in enumerate(parts))


def _sort_value(sort: float | str | None) -> str:
    if sort is None or (isinstance(sort, float | np.floating) and np.isnan(sort)):
        return ""
    return escape(str(sort))


def _cell(cell: Cell, page_dir: Path | None) -> str:
    content = escape(cell.text)
    if cell.link is not None:
        content = f'<a href="{escape(href(cell.link, page_dir))}">{content}</a>'
    if cell.warn:
        content = f'<span class="warn">{content}</span>'
    if cell.detail is not None:
        content = f"<details><summary>{content}</summary><pre>{escape(cell.detail)}</pre></details>"
    return f'<td data-v="{_sort_value(cell.sort)}">{content}</td>'


def _row(row: Row, page_dir: Path | None) -> str:
    css = f' class="{" ".join(row.marks)}"' if row.marks else ""
    return f"<tr{css}>" + "".join(_cell(cell, page_dir) for cell in row.cells) + "</tr>"


def _table(section: Section, page_dir: Path | None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in section.header)
    body = "".join(_row(row, page_dir) for row in section.rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(sections: list[Section], figures: Mapping[FigureRef, Path], page_dir: Path | None = None) -> str:
    """One self-contained page of ``sections``; each figure's PNG is read from ``figures`` and embedded. A cell's
    link (an image strip) stays a link, relative to ``page_dir`` where the page is written (as found when None)."""
    parts = []
    for section in sections:
        parts.append(f"<h{section.level}>{_inline(section.title)}</h{section.level}>")
        parts.extend(f"<p>{_inline(note)}</p>" for note in section.notes)
        if section.header:
            parts.append(_table(section, page_dir))
        if section.figure is not None:
            data = base64.b64encode(figures[section.figure].read_bytes()).decode("ascii")
            parts.append(f'<img alt="{escape(section.title)}" src="data:image/png;base64,{data}">')
    title = escape(sections[0].title.replace("`", "")) if sections else "leaderboard"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}<script>{_SORT_SCRIPT}</script></body></html>\n"
    )
