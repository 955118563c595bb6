"""The engine: evaluates J (and the gradient under test) many times, on devices."""
