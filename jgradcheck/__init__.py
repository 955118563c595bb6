"""jgradcheck: tells you, with evidence, whether your JAX gradients are right."""

from ._check import assert_grad as assert_grad
from ._check import check_grad as check_grad
from ._check import numerical_grad as numerical_grad
from ._eps import EpsSweep as EpsSweep
from ._eps import eps_sweep as eps_sweep
from ._errors import GradCheckError as GradCheckError
from ._jvp import assert_jvp as assert_jvp
from ._jvp import check_jvp as check_jvp
from ._plot import plot_report as plot_report
from ._reference import NondeterministicLossError as NondeterministicLossError
from ._report import Directions as Directions
from ._report import Entry as Entry
from ._report import LeafResult as LeafResult
from ._report import Report as Report
from ._rules_report import Check as Check
from ._rules_report import DotTest as DotTest
from ._rules_report import RuleReport as RuleReport
from ._vjp import assert_vjp as assert_vjp
from ._vjp import check_vjp as check_vjp
from ._warmup import WarmUp as WarmUp
from ._warmup import warm_up as warm_up

__version__ = "0.1.0"

__all__ = [
    "Check",
    "DotTest",
    "Directions",
    "Entry",
    "EpsSweep",
    "GradCheckError",
    "LeafResult",
    "NondeterministicLossError",
    "Report",
    "RuleReport",
    "WarmUp",
    "assert_grad",
    "assert_jvp",
    "assert_vjp",
    "check_grad",
    "check_jvp",
    "check_vjp",
    "eps_sweep",
    "numerical_grad",
    "plot_report",
    "warm_up",
]
