"""Type aliases shared by every layer (one ``PyTree``, the option literals)."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

PyTree: TypeAlias = Any
"""A pytree of arrays (JAX's own ``PyTree`` is not a type; this documents intent)."""

Method: TypeAlias = Literal[
    "auto", "central", "central4", "central6", "richardson", "complex"
]
"""How each entry is first estimated (:data:`jgradcheck._options.METHODS`)."""

Mode: TypeAlias = Literal["full", "fast"]
"""``"full"``: every selected entry; ``"fast"``: random directions per leaf first."""

Precision: TypeAlias = Literal["float64", "native"]
"""The precision finite differences are evaluated at."""
