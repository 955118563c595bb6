"""Reports as HTML (notebooks): the same sections as the text, as HTML blocks.

The headline is coloured by its tone; a failing term or nested report is
indented in a ``<div>``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .sections import Section, Tone
from .tables import Table

TONE_COLORS: dict[Tone, str] = {
    "pass": "#1a7f37",
    "fail": "#cf222e",
    "unsure": "#9a6700",
}
"""The headline's colour: green (passed), red (FAILED), amber (UNSURE)."""


def html_table(table: Table) -> str:
    """The table as ``<table>`` with a header row; cells escaped."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
        for r in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _paragraph(lines: Sequence[str]) -> str:
    return "<p>" + "<br>".join(html.escape(s) for s in lines) + "</p>" if lines else ""


def _section_html(section: Section) -> str:
    title = section.title
    if section.kind == "headline":
        color = TONE_COLORS[section.tone or "unsure"]
        out = f"<p style='color:{color}'><b>{html.escape(title)}</b></p>"
        return out + ("\n" + _paragraph(section.lines) if section.lines else "")
    if section.nested:
        return (
            f"<div style='margin-left:2em'><p><b>{html.escape(title)}</b></p>"
            f"{render_html(section.nested)}</div>"
        )
    out = _paragraph(([title] if title else []) + list(section.lines))
    return out + (html_table(section.table) if section.table is not None else "")


def render_html(sections: Sequence[Section]) -> str:
    """A report's sections as an HTML fragment, one block per line."""
    return "\n".join(_section_html(s) for s in sections)
