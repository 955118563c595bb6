"""jgradcheck: tells you, with evidence, whether your JAX gradients are right."""

from ._checks.compositions import assert_compositions as assert_compositions
from ._checks.compositions import check_compositions as check_compositions
from ._checks.eps import EpsSweep as EpsSweep
from ._checks.eps import eps_sweep as eps_sweep
from ._checks.grad import assert_grad as assert_grad
from ._checks.grad import check_grad as check_grad
from ._checks.grad import numerical_grad as numerical_grad
from ._checks.hvp import assert_hvp as assert_hvp
from ._checks.hvp import check_hvp as check_hvp
from ._checks.jvp import assert_jvp as assert_jvp
from ._checks.jvp import check_jvp as check_jvp
from ._checks.vjp import assert_vjp as assert_vjp
from ._checks.vjp import check_vjp as check_vjp
from ._checks.warmup import WarmUp as WarmUp
from ._checks.warmup import warm_up as warm_up
from ._errors import GradCheckError as GradCheckError
from ._errors import NondeterministicLossError as NondeterministicLossError
from ._report.composition_records import Composition as Composition
from ._report.composition_report import CompositionReport as CompositionReport
from ._report.hvp_records import HvpDirection as HvpDirection
from ._report.hvp_records import Symmetry as Symmetry
from ._report.hvp_report import HvpReport as HvpReport
from ._report.plot import plot_report as plot_report
from ._report.records import Directions as Directions
from ._report.records import Entry as Entry
from ._report.records import LeafResult as LeafResult
from ._report.report import Report as Report
from ._report.report import RuleReport as RuleReport
from ._report.rule_records import Check as Check
from ._report.rule_records import DotTest as DotTest

__version__ = "0.1.0"

__all__ = [
    "Check",
    "Composition",
    "CompositionReport",
    "DotTest",
    "Directions",
    "Entry",
    "EpsSweep",
    "GradCheckError",
    "HvpDirection",
    "HvpReport",
    "LeafResult",
    "NondeterministicLossError",
    "Report",
    "RuleReport",
    "Symmetry",
    "WarmUp",
    "assert_compositions",
    "assert_grad",
    "assert_hvp",
    "assert_jvp",
    "assert_vjp",
    "check_compositions",
    "check_grad",
    "check_hvp",
    "check_jvp",
    "check_vjp",
    "eps_sweep",
    "numerical_grad",
    "plot_report",
    "warm_up",
]
