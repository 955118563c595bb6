"""Reports as plain text (``str(report)``): sections laid out as aligned lines.

Every section but the headline (and a passing term's one line) follows a blank
line; a title's lines are indented by two spaces, a nested report by two more
than its title.
"""

from __future__ import annotations

from collections.abc import Sequence

from .sections import Section
from .tables import Table


def text_table(table: Table) -> list[str]:
    """The table as lines: columns padded to their widest cell, two-space gutters."""
    rows = [table.header, *table.rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(table.header))]
    out = []
    for r in rows:
        cells = [
            r[c].rjust(widths[c]) if c in table.right else r[c].ljust(widths[c])
            for c in range(len(r))
        ]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _indent(lines: list[str], by: int) -> list[str]:
    return [" " * by + line if line else "" for line in lines]


def _section_lines(section: Section) -> list[str]:
    kind, title = section.kind, section.title
    if kind == "headline":
        return [title, *section.lines]
    if kind == "term":
        if not section.nested:
            return ["  " + title]
        return ["", "  " + title, *_indent(text_lines(section.nested), 4)]
    out = [""] + ([title] if title else [])
    if kind == "part":
        return out + _indent(text_lines(section.nested), 2)
    if section.table is not None:
        out += text_table(section.table)
    return out + _indent(list(section.lines), 2 if title else 0)


def text_lines(sections: Sequence[Section]) -> list[str]:
    """The lines of a report's sections (see the module docstring for the layout)."""
    return [line for section in sections for line in _section_lines(section)]


def render_text(sections: Sequence[Section]) -> str:
    """A report's sections as plain text, one string."""
    return "\n".join(text_lines(sections))
