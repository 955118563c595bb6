"""Which devices the sweeps run on, and how a batch is laid out across them.

With one device a batch of rows (``(index, value)`` pairs for a leaf sweep,
``(steps, directions)`` for fast mode's directional sweep) is one ``vmap``.
With several, the batch axis is split over a one-axis
:class:`jax.sharding.Mesh` (axis ``"coords"``) by :func:`jax.shard_map`: every
device evaluates the same per-device program on its own slice of the batch,
with the parameters and ``args`` replicated. Each row is evaluated by one
device, with exactly the operations the single-device program uses, so the
per-row results do not depend on the number of devices.
:class:`jgradcheck._engine.batch.BatchRunner` runs every sweep's batches on a
:class:`Layout`.

Only this process's (local) devices are used: under
``jax.distributed.initialize`` every process runs its own sweep
(docs/multi_device.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from . import programs

AXIS = "coords"
"""Name of the mesh axis the batch of coordinates is split over."""


def resolve_devices(devices: Any = None) -> tuple[jax.Device, ...]:
    """The devices a sweep runs on, from ``check_grad``'s ``devices=`` option.

    Args:
      devices: ``None`` for every local device of the default backend; an int
        ``n`` for the first ``n`` of them; or a sequence of local
        :class:`jax.Device` of one platform.

    Returns:
      A non-empty tuple of distinct devices addressable by this process.

    Raises:
      TypeError, ValueError: for anything else, saying what is available.
    """
    local = jax.local_devices()
    have = f"{len(local)} local {local[0].platform} device(s)"
    if devices is None:
        return tuple(local)
    if isinstance(devices, (bool, np.bool_)):
        raise TypeError(
            f"`devices` must be None, an int or a sequence of jax.Device; got {devices!r}."
        )
    if isinstance(devices, (int, np.integer)):
        if not 1 <= int(devices) <= len(local):
            raise ValueError(
                f"`devices` must be between 1 and {len(local)} (this process has "
                f"{have}); got {int(devices)}."
            )
        return tuple(local[: int(devices)])
    if isinstance(devices, jax.Device):
        devices = [devices]
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence):
        raise TypeError(
            "`devices` must be None, an int or a sequence of jax.Device; got "
            f"{type(devices).__name__} {devices!r}."
        )
    out = tuple(devices)
    if not out:
        raise ValueError(f"`devices` is empty; this process has {have}.")
    wrong = [d for d in out if not isinstance(d, jax.Device)]
    if wrong:
        raise TypeError(
            "`devices` must contain jax.Device objects (e.g. from "
            f"jax.local_devices()); got {wrong[0]!r} ({type(wrong[0]).__name__})."
        )
    if len(set(out)) != len(out):
        raise ValueError(f"`devices` lists a device more than once: {list(out)}.")
    platforms = sorted({d.platform for d in out})
    if len(platforms) > 1:
        raise ValueError(
            f"`devices` must all be of one platform; got {', '.join(platforms)}."
        )
    remote = [d for d in out if d.process_index != jax.process_index()]
    if remote:
        raise ValueError(
            f"`devices` must be local to this process (jax.local_devices()); "
            f"{remote[0]} belongs to process {remote[0].process_index}. Under "
            "jax.distributed each process sweeps with its own devices "
            "(docs/multi_device.md)."
        )
    return out


class Layout:
    """Where a sweep's operands live and how a batch is split over devices.

    Args:
      devices: from :func:`resolve_devices`.
    """

    def __init__(self, devices: tuple[jax.Device, ...]):
        self.devices = tuple(devices)
        self.platform = self.devices[0].platform
        if len(self.devices) > 1:
            self.mesh: Mesh | None = Mesh(np.array(self.devices), (AXIS,))
            self.batch_sharding: Any = NamedSharding(self.mesh, PartitionSpec(AXIS))
            self.replicated: Any = NamedSharding(self.mesh, PartitionSpec())
        else:
            self.mesh = None
            self.batch_sharding = SingleDeviceSharding(self.devices[0])
            self.replicated = self.batch_sharding

    @property
    def n(self) -> int:
        return len(self.devices)

    def replicate(self, tree: Any) -> Any:
        """A copy of ``tree``'s arrays on every device (once per check)."""
        return jax.device_put(tree, self.replicated)

    def put_batch(self, x: np.ndarray) -> jax.Array:
        """A batch, its leading axis split over the devices."""
        return jax.device_put(x, self.batch_sharding)

    def batch_of(
        self, one: Callable[..., Any], *, batched: int = 2, shared: int = 2
    ) -> Callable[..., Any]:
        """``one`` vmapped over its first ``batched`` arguments (see :meth:`jit`)."""
        axes = (0,) * batched + (None,) * shared

        def batch_of(*operands: Any) -> Any:
            return jax.vmap(one, in_axes=axes)(*operands)

        return batch_of

    def jit(
        self, one: Callable[..., Any], *, batched: int = 2, shared: int = 2
    ) -> jax.stages.Wrapped:
        """``jit`` of ``one`` vmapped over its first ``batched`` arguments, split
        over the devices.

        ``one(*row, *shared_args)`` evaluates one row: ``batched`` arguments
        with a leading batch axis (split over the devices), then ``shared``
        arguments every row reads (replicated). The leaf sweeps' ``one(i, v,
        pdyn, adyn)`` is the default, two and two.
        """
        batch_of = self.batch_of(one, batched=batched, shared=shared)
        if self.mesh is None:
            return programs.jit(batch_of)
        spec, rep = PartitionSpec(AXIS), PartitionSpec()
        split = jax.shard_map(
            batch_of,
            mesh=self.mesh,
            in_specs=(spec,) * batched + (rep,) * shared,
            out_specs=spec,
            check_vma=False,
        )
        return programs.jit(
            split,
            in_shardings=(self.batch_sharding,) * batched + (self.replicated,) * shared,
            out_shardings=self.batch_sharding,
        )
