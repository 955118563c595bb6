"""Pytree bookkeeping: params flattened into leaves with paths, and coordinate selection."""
