"""Griffe extension: read a Google-style ``Example:`` section as ``Examples:``.

jgradcheck's docstrings head their runnable ``>>>`` examples with ``Example:``
(as optax does). Griffe's Google parser only treats ``Examples:`` as examples
(code); ``Example:`` would become a quoted admonition. This renames the heading
in the text griffe parses; the package itself is untouched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
