"""Pure numerics on NumPy arrays: stencils, rounding, the verdict and the diagnosis."""
