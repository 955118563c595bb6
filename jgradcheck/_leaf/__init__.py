"""Per-leaf checks: one leaf's estimates, escalation and verdict (full, complex step, fast)."""
