"""check_grad under jax.distributed: each process checks its share of the leaves.

Run one copy per process, with the same coordinator address, e.g. on one
machine with two CPU processes of two (forced) devices each:

    export XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu
    python docs/multi_device_example.py 0 2 localhost:12355 &
    python docs/multi_device_example.py 1 2 localhost:12355

On a cluster (Slurm, Cloud TPU, ...) ``jax.distributed.initialize()`` usually
needs no arguments; see the JAX documentation on multi-process programs.
"""

import sys

import jax

if len(sys.argv) == 4:
    jax.distributed.initialize(
        coordinator_address=sys.argv[3],
        num_processes=int(sys.argv[2]),
        process_id=int(sys.argv[1]),
    )
else:
    jax.distributed.initialize()

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

import jgradcheck as jgc  # noqa: E402


def loss(params, x):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"]) ** 2)


# The same params and data on every process (fixed seeds).
k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
params = {
    "w1": jax.random.normal(k1, (16, 32)) / 4,
    "b1": jnp.zeros(32),
    "w2": jax.random.normal(k2, (32, 4)) / 6,
}
x = jax.random.normal(k3, (8, 16))

# Leaf k is checked by process k % process_count, on that process's own
# devices (check_grad's default devices=None means jax.local_devices()).
me, n = jax.process_index(), jax.process_count()
leaves, treedef = jax.tree_util.tree_flatten(params)
mask = jax.tree_util.tree_unflatten(
    treedef,
    [np.ones(leaf.shape, bool) if k % n == me else None for k, leaf in enumerate(leaves)],
)
report = jgc.check_grad(loss, params, x, coords=mask)
print(f"process {me} checked {[leaf.path for leaf in report.leaves]} "
      f"on {report.timing.devices}: ok={report.ok}")

# One verdict for the whole run: every process's report.ok.
oks = multihost_utils.process_allgather(np.array(report.ok))
if me == 0:
    print("gradient correct on every process's share:", bool(np.all(oks)))
