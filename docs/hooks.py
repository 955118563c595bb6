"""mkdocs hook: render Sphinx-style roles left in docstrings.

The package's docstrings use ``:func:`check_grad``` and ``:class:`Report```
(readable in ``help()``); mkdocstrings' Google parser leaves the role name in
the HTML. Public names become links to their entry in the API reference; other
names become plain code.
"""

from __future__ import annotations

import re

import jgradcheck

_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj):<code>~?([^<]+)</code>")
_PUBLIC = set(jgradcheck.__all__)


def on_page_content(html, page, config, files):  # noqa: ARG001 - mkdocs signature
    api = page.file.src_uri == "api.md"

    def link(m: re.Match) -> str:
        name = m.group(1)
        short = name.removeprefix("jgradcheck.")
        head = short.split(".")[0]
        if api and head in _PUBLIC:
            return f'<a href="#jgradcheck.{short}"><code>{name}</code></a>'
        return f"<code>{name}</code>"

    return _ROLE.sub(link, html)
