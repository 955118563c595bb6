"""One validated options object for every check, and the one table of methods.

:class:`Options` is built once per call by ``check_grad``, ``check_vjp``,
``check_jvp``, ``numerical_grad`` and the CLI; every option is checked there,
with a message naming the argument. Layers below read its fields.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TextIO, get_args

import numpy as np

from ._typing import Method, Mode, Precision


class MethodSpec(NamedTuple):
    """One entry of :data:`METHODS`."""

    name: str
    evals_per_coord: int
    """Evaluations of J per coordinate in the first pass (sizes sweeps and bars)."""
    summary: str


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("auto", 2, "central differences at cbrt(eps), 2 evaluations"),
        MethodSpec("central", 4, "2-point stencil at steps 2h and h"),
        MethodSpec("central4", 8, "4-point stencil at steps 2h and h"),
        MethodSpec("central6", 12, "6-point stencil at steps 2h and h"),
        MethodSpec("richardson", 8, "steps from eps^(1/5) halving 3 times"),
        MethodSpec("complex", 2, "complex step Im J(θ+ih)/h, probed first"),
    )
}
"""Every ``method=`` jgradcheck knows, in the order the docs list them."""

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
MODES: tuple[str, ...] = get_args(Mode)
PRECISIONS: tuple[str, ...] = get_args(Precision)
assert METHOD_NAMES == get_args(Method)

DEFAULT_DIRECTIONS = 4
"""Random directions per leaf in fast mode, unless ``directions=`` says."""

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Default bound on the memory one batch of evaluations may take (bytes)."""

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def check_precision(precision: Any) -> Precision:
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}; got {precision!r}.")
    return precision


def check_method(method: Any) -> Method:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHOD_NAMES}; got {method!r}.")
    return method


def check_directions(mode: Any, directions: Any) -> int | None:
    """Check ``mode`` and ``directions``; the number of directions (None: full)."""
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}.")
    if directions is None:
        return DEFAULT_DIRECTIONS if mode == "fast" else None
    if mode != "fast":
        raise ValueError(
            f"`directions` is an option of mode='fast'; got directions={directions!r} "
            "with mode='full'. Pass mode='fast' too, or drop `directions`."
        )
    if (
        isinstance(directions, bool)
        or not isinstance(directions, (int, np.integer))
        or directions < 1
    ):
        raise ValueError(f"`directions` must be a positive int; got {directions!r}.")
    return int(directions)


def parse_memory_budget(budget: Any) -> int:
    """Bytes from ``memory_budget=``: None (the default), an int, or a size
    such as ``"2GB"``, ``"512MiB"``."""
    if budget is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(budget, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", budget)
        unit = m and m.group(2).lower()
        if not m or unit not in _UNITS:
            raise ValueError(
                f"`memory_budget` must be a number of bytes or a size such as "
                f"'2GB' or '512MiB'; got {budget!r}."
            )
        value = int(float(m.group(1)) * _UNITS[unit])
    elif isinstance(budget, bool) or not isinstance(budget, (int, float, np.number)):
        raise ValueError(
            f"`memory_budget` must be a number of bytes or a size such as "
            f"'2GB' or '512MiB'; got {budget!r}."
        )
    else:
        value = int(budget)
    if value <= 0:
        raise ValueError(f"`memory_budget` must be positive; got {budget}.")
    return value


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Engine knobs that benchmarks vary (not public options of the checks).

    ``sparse``: sweep a leaf through :mod:`jgradcheck._engine.sparse` (False:
    a dense perturbed copy per coordinate). ``patches``: carry the change of
    a sparse leaf's product on as a patch into the next product (False: dense
    after the leaf's own product). ``cpu_working_set``: bytes of
    intermediates a CPU batch is kept within. ``on_sweep``: called with every
    sweep the evaluation context creates (bench/memory.py records them).
    """

    sparse: bool = True
    patches: bool = True
    cpu_working_set: int = 16 * 2**20
    on_sweep: Callable[[Any], None] | None = None


@dataclasses.dataclass(frozen=True)
class Options:
    """The options of one check, validated when built.

    Fields are :func:`jgradcheck.check_grad`'s keyword options (its docstring
    says what each does); ``directions`` is resolved (fast mode's default
    filled in, None in full mode) and ``memory_budget`` is in bytes.
    ``devices`` and ``progress`` are checked by the engine, which resolves them.
    """

    coords: Any = None
    key: Any = 0
    precision: Precision = "float64"
    rtol: float | None = None
    atol: float | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    method: Method = "auto"
    mode: Mode = "full"
    directions: int | None = None
    devices: int | Sequence[Any] | None = None
    progress: bool | TextIO | None = None
    engine: EngineSettings = EngineSettings()

    @classmethod
    def build(
        cls,
        *,
        coords: Any = None,
        key: Any = 0,
        precision: Any = "float64",
        rtol: float | None = None,
        atol: float | None = None,
        memory_budget: Any = None,
        method: Any = "auto",
        mode: Any = "full",
        directions: Any = None,
        devices: Any = None,
        progress: Any = None,
        engine: EngineSettings | None = None,
    ) -> Options:
        """Validate every option (in the order check_grad always has) and build."""
        precision = check_precision(precision)
        method = check_method(method)
        directions = check_directions(mode, directions)
        return cls(
            coords=coords,
            key=key,
            precision=precision,
            rtol=rtol,
            atol=atol,
            memory_budget=parse_memory_budget(memory_budget),
            method=method,
            mode=mode,
            directions=directions,
            devices=devices,
            progress=progress,
            engine=engine or EngineSettings(),
        )

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` (validated again)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        if fields["mode"] == "full" and "directions" not in changes:
            fields["directions"] = None
        return Options.build(**fields)
