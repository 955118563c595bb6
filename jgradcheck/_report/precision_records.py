"""The record of a failing derivative compared again with its yardstick at
its own, narrower precision (:mod:`jgradcheck._checks.precision_match`):
precision mismatch, or a wrong formula."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PrecisionMatch(NamedTuple):
    """A failing rule compared again with its yardstick at the rule's own,
    narrower precision (:mod:`jgradcheck._checks.precision_match`): is the
    disagreement a precision mismatch or a wrong formula?"""

    dtype: str
    """The narrowest float dtype the rule's derivative program computes in."""
    where: tuple[tuple[str, int, int], ...]
    """``(equation kind, count in the rule's program, count in the
    yardstick's)`` of the rule's intermediates in ``dtype`` that the rule has
    more of, e.g. ``("dot_general → bfloat16", 2, 0)``."""
    other: str
    """The narrowest float the yardstick computes with (``"float32"``)."""
    yardstick: str
    """Who the rule was compared with: ``the reference attention_reference``,
    ``autodiff of the primal``."""
    program: str
    """``"VJP"``, ``"JVP"`` or ``"gradient"``."""
    leaf: str
    """The leaf whose numbers are shown (the worst by ``rule_err / allowed``)."""
    rule_err: float
    """``max |rule − ref64|`` over that leaf."""
    ref_err: float
    """The yardstick's own error at the native precision there (before matching)."""
    matched_err: float
    """The yardstick's error with matched precision: ``max |ref_matched − ref64|``."""
    factor: float
    """``k``: the allowance is ``k·matched_err + floor``."""
    floor: float
    """The rounding floor of the leaf's scale (native dtype)."""
    scale: float
    """The leaf's scale ``max |ref64|``."""
    eps: float
    """Machine epsilon of ``dtype``: the lost digits are counted in its ulps."""
    native: str
    """The dtype of the derivative (the yardstick's at the native precision)."""
    native_eps: float
    """Its machine epsilon."""
    agrees: bool
    """Whether the rule is within ``k`` times the matched yardstick's error
    on every leaf."""
    platform: str | None = None
    """None: ``dtype`` is a narrower dtype of the rule's intermediates. Else
    the platform (``"tpu"``, ``"gpu"``) on which the rule's float32 matrix
    products round their operands to ``dtype``, then an operand format
    (``"bfloat16"``, ``"tensorfloat32"``, ``"bfloat16_3x"``), and ``where``
    counts those products by their precision setting."""

    @property
    def allowed(self) -> float:
        """``k·matched_err + floor``: the allowance with matched precision."""
        return self.factor * self.matched_err + self.floor

    @property
    def line(self) -> str:
        """What the comparison says, in one line."""
        shown = ", ".join(
            f"{label} ×{n}" + (f" (the yardstick's: {m})" if m else "")
            for label, n, m in self.where[:3]
        )
        more = len(self.where) - 3
        where = shown + (f"; {more} more kind{'s' * (more > 1)}" if more > 0 else "")
        numbers = (
            f"{self.leaf}: max|rule − ref64| = {self.rule_err:.3g}, allowance "
            f"{self.factor:g}·{self.matched_err:.3g} + {self.floor:.2g} = "
            f"{self.allowed:.3g}"
        )
        if self.platform is not None:
            return self._matmul_line(where, numbers)
        matched = (
            f"with matched precision ({self.yardstick} with its inputs and every "
            f"intermediate rounded to {self.dtype})"
        )
        if not self.agrees:
            return (
                f"not a precision mismatch: the rule computes with {self.dtype} "
                f"intermediates ({where}), but {matched} they still disagree "
                f"({numbers}): "
                "precision does not explain the disagreement — the formula is wrong"
            )
        s = max(self.scale, float(np.finfo(np.float64).tiny))
        also = (
            f" ({_count(self.rule_err / s / self.native_eps)} {self.native} ulps)"
            if self.native != self.dtype
            else ""
        )
        return (
            f"precision mismatch: the rule computes with {self.dtype} "
            f"intermediates ({where}) where {self.yardstick} keeps {self.other}; "
            f"{matched} they agree "
            f"({numbers}) — the formula is right; the lost digits are "
            f"{self.dtype}'s: the rule is off by {_count(self.rule_err / s / self.eps)}"
            f" {self.dtype} ulps of the leaf's scale{also}, "
            f"{self.yardstick} at {self.native} by "
            f"{_count(self.ref_err / s / self.native_eps)} {self.native} ulps"
        )

    def _matmul_line(self, where: str, numbers: str) -> str:
        """:attr:`line` where the rule's matrix products round their operands."""
        runs = (
            f"on {self.platform} the rule's float32 matrix products run with "
            f"{self.dtype} operands ({where})"
        )
        matched = (
            f"with matched precision ({self.yardstick} with the operands of its "
            f"float32 matrix products rounded to {self.dtype})"
        )
        if not self.agrees:
            return (
                f"not a precision mismatch: {runs}, but {matched} they still "
                f"disagree ({numbers}): precision does not explain the "
                "disagreement — the formula is wrong"
            )
        s = max(self.scale, float(np.finfo(np.float64).tiny))
        return (
            f"precision mismatch: {runs} where {self.yardstick} keeps "
            f"{self.other}; {matched} they agree ({numbers}) — the formula is "
            f"right; the lost digits are the matrix products': the rule is off by "
            f"{_count(self.rule_err / s / self.eps)} {self.dtype} ulps of the "
            f"leaf's scale ({_count(self.rule_err / s / self.native_eps)} "
            f"{self.native} ulps), {self.yardstick} at {self.native} by "
            f"{_count(self.ref_err / s / self.native_eps)} {self.native} ulps; "
            "for full float32 products pass precision=jax.lax.Precision.HIGHEST "
            "to the rule's dots or trace it under "
            'jax.default_matmul_precision("float32")'
        )


def _count(x: float) -> str:
    """A count of ulps: ``3,822`` or ``0.47``."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.2g}"
