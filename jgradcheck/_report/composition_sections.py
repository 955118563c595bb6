"""What a check_compositions report says, as :class:`~.sections.Section` records."""

from __future__ import annotations

from .composition_records import CompositionRecord
from .sections import Section
from .tables import Table


def composition_headline(r: CompositionRecord) -> str:
    """``check_compositions: passed (vjp rule, 8 rows)`` or ``… FAILED in …``."""
    bad = [c.name for c in r.rows if not c.ok]
    if bad:
        return f"check_compositions: FAILED under {', '.join(bad)} ({r.kind} rule)"
    return f"check_compositions: passed ({r.kind} rule, {len(r.rows)} rows)"


def composition_sections(r: CompositionRecord) -> tuple[Section, ...]:
    """What a composition grid says: a headline, what was compared, the rows.

    Args:
      r: the report of :func:`jgradcheck.check_compositions`.

    Returns:
      The headline (with what each row compares and the allowance) and one
      table row per composition.
    """
    what = "Jᵀȳ (the VJP)" if r.kind == "vjp" else "J·u (the JVP)"
    under = (
        f"each row: the rule's {what} under the composition against the same "
        f"derivative run eagerly, at {r.points} input points for the batched rows",
        f"allowance: {r.rounding}",
    )
    table = Table(
        ("composition", "status", "detail"),
        tuple((c.name, c.status, c.detail) for c in r.rows),
        status=1,
    )
    return (
        Section(
            "headline", composition_headline(r), under, tone="pass" if r.ok else "fail"
        ),
        Section("table", "", table=table),
    )
