"""Reports as HTML (notebooks): the same sections as the text, styled.

Every section of :mod:`jgradcheck._report.sections` becomes one block; nothing is
said here that the text does not say, only laid out: the headline as a banner
in its tone, tables with right-aligned monospace numbers and each verdict cell
marked by colour *and* a symbol (✓ passed, ✗ FAILED, ? unsure, • not judged),
the diagnosis as a call-out, nested reports (a failing term, a localisation)
indented under a rule in their tone, and every table collapsible (``<details>``;
a long one starts closed unless a row in it failed).

One ``<style>`` block travels with each report. Its rules all sit under the
``.jgc`` class of the report's root element, so nothing leaks into the notebook;
colours are CSS variables that follow JupyterLab's and VS Code's theme
variables where they exist, ``prefers-color-scheme: dark`` elsewhere, and the
light/dark markers of JupyterLab, VS Code and Colab when the notebook's theme
differs from the system's. No JavaScript. Every string is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from itertools import zip_longest

from .sections import Section
from .tables import Table, Tone, status_tone

SYMBOLS: dict[Tone, str] = {"pass": "✓", "fail": "✗", "unsure": "?", "info": "•"}
"""The symbol beside every coloured verdict, so colour is never the only sign."""
_BANNER_SYMBOLS: dict[Tone, str] = {**SYMBOLS, "info": "i"}

LONG_TABLE = 12
"""Tables with more rows than this start collapsed, unless a row failed."""

_LIGHT = {
    "fg": "var(--jp-content-font-color0, var(--vscode-editor-foreground, #1f2328))",
    "muted": "var(--jp-content-font-color2, var(--vscode-descriptionForeground, "
    "#59636e))",
    "pass-fg": "#1a7f37",
    "fail-fg": "#cf222e",
    "unsure-fg": "#9a6700",
    "info-fg": "#0969da",
    "pass-bg": "rgba(31, 136, 61, 0.10)",
    "fail-bg": "rgba(207, 34, 46, 0.09)",
    "unsure-bg": "rgba(212, 167, 44, 0.15)",
    "info-bg": "rgba(9, 105, 218, 0.08)",
    "on-tone": "#ffffff",
}
_DARK = {
    "fg": "var(--jp-content-font-color0, var(--vscode-editor-foreground, #e6edf3))",
    "muted": "var(--jp-content-font-color2, var(--vscode-descriptionForeground, "
    "#9198a1))",
    "pass-fg": "#3fb950",
    "fail-fg": "#f85149",
    "unsure-fg": "#d29922",
    "info-fg": "#4493f8",
    "pass-bg": "rgba(46, 160, 67, 0.15)",
    "fail-bg": "rgba(248, 81, 73, 0.14)",
    "unsure-bg": "rgba(187, 128, 9, 0.18)",
    "info-bg": "rgba(56, 139, 253, 0.13)",
    "on-tone": "#0d1117",
}
_DARK_HOSTS = (
    'body[data-jp-theme-light="false"] .jgc',
    "body.vscode-dark .jgc",
    "body.vscode-high-contrast:not(.vscode-high-contrast-light) .jgc",
    'html[theme="dark"] .jgc',
    '[data-theme="dark"] .jgc',
)
"""A dark notebook under a light system: JupyterLab, VS Code, Colab, Sphinx."""
_LIGHT_HOSTS = (
    'body[data-jp-theme-light="true"] .jgc',
    "body.vscode-light .jgc",
    "body.vscode-high-contrast-light .jgc",
    'html[theme="light"] .jgc',
    '[data-theme="light"] .jgc',
)

_RULES = """
.jgc {
  --jgc-line: var(--jp-border-color2, rgba(127, 127, 127, 0.28));
  --jgc-head-bg: rgba(127, 127, 127, 0.10);
  --jgc-stripe: rgba(127, 127, 127, 0.05);
  --jgc-mono: var(--jp-code-font-family, var(--vscode-editor-font-family,
    ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace));
  --jgc-sans: var(--jp-ui-font-family, var(--vscode-font-family, system-ui,
    -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif));
  --jgc-tone: var(--jgc-info-fg);
  --jgc-tone-bg: var(--jgc-info-bg);
  color: var(--jgc-fg); font-family: var(--jgc-sans); font-size: 13px;
  line-height: 1.45; text-align: left; max-width: 100%;
}
.jgc .jgc-pass { --jgc-tone: var(--jgc-pass-fg); --jgc-tone-bg: var(--jgc-pass-bg); }
.jgc .jgc-fail { --jgc-tone: var(--jgc-fail-fg); --jgc-tone-bg: var(--jgc-fail-bg); }
.jgc .jgc-unsure {
  --jgc-tone: var(--jgc-unsure-fg); --jgc-tone-bg: var(--jgc-unsure-bg);
}
.jgc .jgc-info { --jgc-tone: var(--jgc-info-fg); --jgc-tone-bg: var(--jgc-info-bg); }
.jgc .jgc-sym { color: var(--jgc-tone); font-weight: 700; }
.jgc .jgc-banner {
  display: flex; align-items: flex-start; gap: 0.65em; margin: 0 0 0.5em;
  padding: 0.55em 0.85em; border: 1px solid var(--jgc-tone);
  border-left-width: 6px; border-radius: 6px; background: var(--jgc-tone-bg);
}
.jgc .jgc-banner > .jgc-sym {
  flex: none; display: inline-flex; align-items: center; justify-content: center;
  width: 1.45em; height: 1.45em; border-radius: 50%; background: var(--jgc-tone);
  color: var(--jgc-on-tone); font-size: 0.95em; margin-top: 0.05em;
}
.jgc .jgc-banner b { font-size: 1.07em; font-weight: 600; }
.jgc .jgc-sub { color: var(--jgc-muted); margin-top: 0.15em; }
.jgc .jgc-about {
  font-family: var(--jgc-mono); font-size: 0.86em; color: var(--jgc-muted);
  white-space: pre-wrap; margin: 0.3em 0 0.6em 0.15em;
}
.jgc .jgc-section { margin: 0.5em 0; }
.jgc .jgc-heading { font-weight: 600; margin: 0 0 0.25em; }
.jgc .jgc-heading-note { font-weight: 400; color: var(--jgc-muted); font-size: 0.92em; }
.jgc summary.jgc-heading { cursor: pointer; }
.jgc .jgc-count {
  margin-left: 0.5em; padding: 0 0.45em; border-radius: 1em; font-weight: 400;
  font-size: 0.85em; color: var(--jgc-muted); background: var(--jgc-head-bg);
}
.jgc .jgc-line { white-space: pre-wrap; }
.jgc .jgc-line > .jgc-sym { display: inline-block; width: 1.2em; }
.jgc .jgc-callout {
  width: fit-content; min-width: 24em; max-width: 100%; box-sizing: border-box;
  padding: 0.45em 0.85em; border-left: 4px solid var(--jgc-tone);
  border-radius: 0 6px 6px 0; background: var(--jgc-tone-bg);
}
.jgc .jgc-callout > .jgc-heading { color: var(--jgc-tone); }
.jgc .jgc-callout .jgc-line { font-weight: 500; }
.jgc .jgc-nested {
  margin: 0.3em 0 0.6em 0.45em; padding-left: 0.9em;
  border-left: 2px solid var(--jgc-tone);
}
.jgc .jgc-nested .jgc-banner { font-size: 0.95em; padding: 0.35em 0.7em; }
.jgc .jgc-scroll { overflow-x: auto; max-width: 100%; }
.jgc table.jgc-table {
  border-collapse: collapse; border-spacing: 0; border: none; margin: 0.15em 0;
  font-size: 12.5px; table-layout: auto; width: auto; color: inherit;
}
.jgc .jgc-table th, .jgc .jgc-table td {
  padding: 0.25em 0.8em; border: none; border-bottom: 1px solid var(--jgc-line);
  text-align: left; vertical-align: top; white-space: nowrap; line-height: 1.4;
  max-width: none;
}
.jgc .jgc-table th {
  font-weight: 600; color: var(--jgc-muted); background: var(--jgc-head-bg);
}
.jgc .jgc-table tbody tr, .jgc .jgc-table tbody tr:nth-child(odd) {
  background: transparent;
}
.jgc .jgc-table tbody tr:nth-child(even) { background: var(--jgc-stripe); }
.jgc .jgc-table tbody tr:hover { background: var(--jgc-head-bg); }
.jgc .jgc-table .jgc-num {
  text-align: right; font-family: var(--jgc-mono); font-variant-numeric: tabular-nums;
}
.jgc .jgc-table td.jgc-key { font-family: var(--jgc-mono); }
.jgc .jgc-table tbody tr.jgc-row-fail, .jgc .jgc-table tbody tr.jgc-row-unsure {
  background: var(--jgc-tone-bg);
}
.jgc .jgc-table tr.jgc-row-fail > td:first-child,
.jgc .jgc-table tr.jgc-row-unsure > td:first-child {
  box-shadow: inset 3px 0 0 var(--jgc-tone);
}
.jgc .jgc-badge {
  display: inline-block; padding: 0 0.55em; border-radius: 1em; font-weight: 600;
  color: var(--jgc-tone); background: var(--jgc-tone-bg);
}
.jgc .jgc-badge > .jgc-sym { margin-right: 0.3em; }
"""


def _declarations(colors: dict[str, str]) -> str:
    return " ".join(f"--jgc-{name}: {value};" for name, value in colors.items())


def stylesheet() -> str:
    """The report's one ``<style>`` block: every rule under ``.jgc``."""
    light, dark = _declarations(_LIGHT), _declarations(_DARK)
    return (
        f"<style>\n.jgc {{ {light} }}\n"
        f"@media (prefers-color-scheme: dark) {{ .jgc {{ {dark} }} }}\n"
        f"{', '.join(_DARK_HOSTS)} {{ {dark} }}\n"
        f"{', '.join(_LIGHT_HOSTS)} {{ {light} }}"
        f"{_RULES}</style>"
    )


def _e(text: str) -> str:
    return html.escape(text)


def _symbol(tone: Tone) -> str:
    return f'<span class="jgc-sym">{SYMBOLS[tone]}</span>'


def _heading_text(title: str) -> str:
    """A heading, its trailing ``(explanation):`` in a quieter span."""
    main, sep, rest = title.partition(" (")
    if sep and title.endswith("):"):
        return f'{_e(main)} <span class="jgc-heading-note">({_e(rest)}</span>'
    return _e(title)


# ----------------------------------------------------------------- tables


def _row_tones(table: Table) -> list[Tone | None]:
    col = table.status
    return [None if col is None else status_tone(r[col]) for r in table.rows]


def _cell(table: Table, c: int, cell: str, tone: Tone | None) -> str:
    if c == table.status and tone is not None:
        badge = f'<span class="jgc-badge jgc-{tone}">{_symbol(tone)}{_e(cell)}</span>'
        return f'<td class="jgc-status">{badge}</td>'
    kind = "jgc-num" if c in table.right else "jgc-key" if c == 0 else "jgc-text"
    return f'<td class="{kind}">{_e(cell)}</td>'


def html_table(table: Table) -> str:
    """The table as ``<table class="jgc-table">``: numbers right-aligned in
    monospace (``jgc-num``), each row's verdict as a badge with its symbol and
    the row marked ``jgc-row-<tone>``; every cell escaped."""
    head = "".join(
        f'<th class="{"jgc-num" if c in table.right else "jgc-text"}">{_e(h)}</th>'
        for c, h in enumerate(table.header)
    )
    rows = []
    for row, tone in zip(table.rows, _row_tones(table)):
        marked = f' class="jgc-row-{tone} jgc-{tone}"' if tone else ""
        cells = "".join(_cell(table, c, cell, tone) for c, cell in enumerate(row))
        rows.append(f"<tr{marked}>{cells}</tr>")
    return (
        f'<table class="jgc-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _table_section(section: Section, table: Table) -> str:
    """A titled table in ``<details>``: open unless long and free of failures."""
    tones = _row_tones(table)
    bad = sum(t in ("fail", "unsure") for t in tones)
    long = len(table.rows) > LONG_TABLE
    count = ""
    if long:
        flagged = f", {bad} {SYMBOLS['fail']}/{SYMBOLS['unsure']}" if bad else ""
        count = f'<span class="jgc-count">{len(table.rows)} rows{flagged}</span>'
    is_open = " open" if bad or not long else ""
    return (
        f'<details class="jgc-section jgc-fold"{is_open}>'
        f'<summary class="jgc-heading">{_heading_text(section.title)}{count}'
        f'</summary><div class="jgc-scroll">{html_table(table)}</div></details>'
    )


# ----------------------------------------------------------------- sections


def _banner(section: Section) -> str:
    tone = section.tone or "unsure"
    sub = "".join(f'<div class="jgc-sub">{_e(s)}</div>' for s in section.lines)
    symbol = f'<span class="jgc-sym">{_BANNER_SYMBOLS[tone]}</span>'
    return (
        f'<div class="jgc-banner jgc-{tone}">{symbol}'
        f"<div><b>{_e(section.title)}</b>{sub}</div></div>"
    )


def _line(text: str, mark: Tone | None) -> str:
    if mark is None:
        return f'<div class="jgc-line">{_e(text)}</div>'
    return f'<div class="jgc-line jgc-{mark}">{_symbol(mark)}{_e(text)}</div>'


def _lines_section(section: Section) -> str:
    """Lines under an optional heading: a call-out when the section has a
    tone (the diagnosis), quiet monospace when it has no heading."""
    pairs = zip_longest(section.lines, section.marks[: len(section.lines)])
    body = "".join(_line(text, mark) for text, mark in pairs)
    if not section.title:
        quiet = "" if section.marks else " jgc-about"
        return f'<div class="jgc-section{quiet}">{body}</div>'
    heading = _heading_text(section.title)
    if section.tone is None:
        return (
            f'<div class="jgc-section"><div class="jgc-heading">{heading}</div>'
            f"{body}</div>"
        )
    return (
        f'<div class="jgc-section jgc-callout jgc-{section.tone}">'
        f'<div class="jgc-heading">{_symbol(section.tone)} {heading}</div>'
        f"{body}</div>"
    )


def _nested_section(section: Section) -> str:
    """A term or part: its verdict line, then its own report indented."""
    tone = section.tone or "info"
    kind = "jgc-term" if section.kind == "term" else "jgc-part"
    title_class = "jgc-term-title" if section.kind == "term" else "jgc-heading"
    title = (
        f'<div class="{title_class} jgc-{tone}">{_symbol(tone)} '
        f"<b>{_e(section.title)}</b></div>"
    )
    nested = (
        f'<div class="jgc-nested jgc-{tone}">{_blocks(section.nested)}</div>'
        if section.nested
        else ""
    )
    return f'<div class="jgc-section {kind}">{title}{nested}</div>'


def _section_html(section: Section) -> str:
    if section.kind == "headline":
        return _banner(section)
    if section.kind in ("term", "part"):
        return _nested_section(section)
    if section.table is not None:
        return _table_section(section, section.table)
    return _lines_section(section)


def _blocks(sections: Sequence[Section]) -> str:
    return "\n".join(_section_html(s) for s in sections)


def render_html(sections: Sequence[Section]) -> str:
    """A report's sections as one HTML fragment: a ``<div class="jgc">`` holding
    its ``<style>`` and one block per section."""
    return f'<div class="jgc">\n{stylesheet()}\n{_blocks(sections)}\n</div>'
