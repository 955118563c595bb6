"""jgradcheck: tells you, with evidence, whether your JAX gradients are right."""

from ._check import assert_grad as assert_grad
from ._check import check_grad as check_grad
from ._check import numerical_grad as numerical_grad
from ._errors import GradCheckError as GradCheckError
from ._report import Entry as Entry
from ._report import LeafResult as LeafResult
from ._report import Report as Report

__version__ = "0.1.0"

__all__ = [
    "Entry",
    "GradCheckError",
    "LeafResult",
    "Report",
    "assert_grad",
    "check_grad",
    "numerical_grad",
]
