"""Where ``jgc_variant``'s value type lives, for type hints: :class:`Variant`.

The plugin itself is the top-level module ``_jgradcheck_pytest`` (registered
through the ``pytest11`` entry point); this module only re-exports the values
it hands to tests, from :mod:`jgradcheck._interfaces.pytest_variant`.
"""

from ._interfaces.pytest_variant import Variant as Variant
from ._interfaces.pytest_variant import summary_line as summary_line

__all__ = ["Variant", "summary_line"]
