"""What a check_hvp report says, as :class:`~.sections.Section` records."""

from __future__ import annotations

from .._numerics.verdict import STATUS_NAMES
from .hvp_records import HvpDirection, HvpRecord
from .sections import Section
from .tables import Table, Tone, format_number, path_label


def hvp_headline(r: HvpRecord) -> str:
    """``check_hvp: passed …``, ``… FAILED …`` or ``… UNSURE …``, and where."""
    bad = [d for d in r.directions if d.n_fail]
    sym_bad = r.symmetry is not None and not r.symmetry.ok
    if bad or sym_bad:
        parts = (
            [
                f"H·v disagrees with finite differences of the gradient along "
                f"{len(bad)} of {len(r.directions)} directions"
            ]
            if bad
            else []
        )
        if sym_bad:
            parts.append("the Hessian is not symmetric")
        return "check_hvp: FAILED: " + "; ".join(parts)
    if not r.ok:
        return (
            "check_hvp: UNSURE: the finite-difference error bar was too wide to "
            "judge some entries of H·v (a kink or a noisy gradient near θ)"
        )
    n = sum(d.size for d in r.directions)
    return f"check_hvp: passed: {n} entries of H·v over {len(r.directions)} directions agree"


def _status(d: HvpDirection) -> str:
    word = STATUS_NAMES[d.status]
    if d.n_fail:
        return f"{word} ({d.n_fail} of {d.size})"
    if d.n_unsure:
        return f"{word} ({d.n_unsure} of {d.size})"
    return "ok"


def _direction_table(r: HvpRecord) -> Table:
    header = (
        "v",
        "worst entry",
        "hvp",
        "fd",
        "±err",
        "|hvp-fd|",
        "tolerance",
        "status",
    )
    rows = tuple(
        (
            str(d.direction),
            path_label(d.where),
            format_number(d.hvp),
            format_number(d.fd),
            format_number(d.error_bar),
            format_number(abs(d.hvp - d.fd)),
            format_number(d.tolerance),
            _status(d),
        )
        for d in r.directions
    )
    return Table(header, rows, frozenset({2, 3, 4, 5, 6}), 7)


def hvp_sections(r: HvpRecord) -> tuple[Section, ...]:
    """What an HVP check says: headline, one row per direction, symmetry.

    Args:
      r: the report of :func:`jgradcheck.check_hvp`.

    Returns:
      The headline (with what was compared), the direction table (each
      direction's worst entry) and the symmetry line.
    """
    tone: Tone = (
        "pass" if r.ok else ("fail" if "FAILED" in hvp_headline(r) else "unsure")
    )
    under = (
        "hvp = H·v reverse over reverse (jax.grad of ⟨jax.grad(loss), v⟩); "
        "fd = finite differences of jax.grad(loss) along v in float64, ±err "
        "its error bar",
        f"rounding of H·v allowed: {r.rounding}",
    )
    out = [
        Section("headline", hvp_headline(r), under, tone=tone),
        Section(
            "table",
            "per direction v, the entry of H·v closest to failing:",
            table=_direction_table(r),
        ),
    ]
    s = r.symmetry
    if s is None:
        line = "symmetry: not checked (one direction; pass directions=2 or more)"
        out.append(Section("lines", lines=(line,), marks=("info",)))
    else:
        i, j = s.worst
        line = (
            f"symmetry: {'ok' if s.ok else 'FAIL'} (v{i}ᵀ(H v{j}) = "
            f"{format_number(s.left)} against v{j}ᵀ(H v{i}) = {format_number(s.right)}"
            f": |Δ| {format_number(abs(s.left - s.right))}, allowance "
            f"{format_number(s.allowance)}; worst of {s.pairs} pair"
            f"{'s' if s.pairs != 1 else ''})"
        )
        out.append(Section("lines", lines=(line,), marks=("pass" if s.ok else "fail",)))
    return tuple(out)
