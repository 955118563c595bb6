"""The benchmark's models, each written once for JAX and once for PyTorch.

Three models, float64: the tanh MLP of ``bench/sweep.py`` (widths 64-128-128-10,
batch 32, 26,122 parameters), a small CNN (two 3×3 convolutions and a dense
head, 3,962 parameters) and a pre-norm transformer block (2-head self-attention
and a GELU MLP, each behind a layer norm, 12,704 parameters).

Weights and data are drawn with NumPy, so a process that times one framework
never imports the other (its memory is its own). ``torch_state`` copies the same
weights into the torch module's layout: ``nn.Linear`` stores ``(out, in)``, so
dense weights are transposed; convolutions are NCHW inputs and OIHW kernels in
both (``lax.conv_general_dilated`` with those dimension numbers, and
``torch.nn.functional.conv2d``), cross-correlations with explicit symmetric
padding (JAX's ``"SAME"`` pads asymmetrically at stride 2; torch's ``padding=1``
does not). JAX and torch are imported inside the functions that need them.

Each model has:

- ``init(quick)``: ``(params, data)``, a pytree of float64 NumPy arrays and the
  loss's other arguments ``(x, target)``;
- ``loss(params, x, target)``: the JAX loss (``jax_enable_x64`` must be on);
- ``torch_module(quick)``: the equivalent float64 ``torch.nn.Module``;
- ``torch_state(params)``: ``{torch parameter name: array}`` for that module;
- ``torch_objective(output, target)``: the torch loss of the module's output.

``torch_problem`` turns a model into what ``torch.autograd.gradcheck`` takes: a
function of the parameter tensors (``torch.func.functional_call``) and the
tensors themselves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MODELS = ("mlp", "cnn", "transformer")


def _normal(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    return scale * rng.standard_normal(shape)


def _dense(rng, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    return {"w": _normal(rng, (n_in, n_out), 1 / math.sqrt(n_in)),
            "b": _normal(rng, (n_out,), 0.1)}  # fmt: skip


def _t(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def _cross_entropy_jax(logits, labels):
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


# --------------------------------------------------------------------------- MLP


class MLP:
    """tanh MLP with a mean-squared-error loss: ``bench/sweep.py``'s model."""

    name = "mlp"

    @staticmethod
    def sizes(quick: bool) -> dict[str, Any]:
        return (
            {"widths": (8, 16, 4), "batch": 4}
            if quick
            else {"widths": (64, 128, 128, 10), "batch": 32}
        )

    @classmethod
    def describe(cls, quick: bool) -> str:
        s = cls.sizes(quick)
        return f"tanh MLP {list(s['widths'])}, batch {s['batch']}, MSE"

    @classmethod
    def init(cls, quick: bool, seed: int = 0):
        s = cls.sizes(quick)
        rng = np.random.default_rng(seed)
        widths = s["widths"]
        params = [_dense(rng, a, b) for a, b in zip(widths[:-1], widths[1:])]
        x = rng.standard_normal((s["batch"], widths[0]))
        y = rng.standard_normal((s["batch"], widths[-1]))
        return params, (x, y)

    @staticmethod
    def loss(params, x, y):
        import jax.numpy as jnp

        h = x
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                h = jnp.tanh(h)
        return jnp.mean((h - y) ** 2)

    @classmethod
    def torch_module(cls, quick: bool):
        from torch import nn

        widths = cls.sizes(quick)["widths"]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.Tanh())
        return nn.Sequential(*layers).double()

    @staticmethod
    def torch_state(params) -> dict[str, np.ndarray]:
        state = {}
        for i, layer in enumerate(params):  # Linear layers sit at 0, 2, 4, ...
            state[f"{2 * i}.weight"] = _t(layer["w"])
            state[f"{2 * i}.bias"] = layer["b"]
        return state

    @staticmethod
    def torch_objective(out, y):
        return ((out - y) ** 2).mean()


# --------------------------------------------------------------------------- CNN


class CNN:
    """conv 3×3 → tanh → conv 3×3 stride 2 → tanh → dense; cross-entropy loss."""

    name = "cnn"

    @staticmethod
    def sizes(quick: bool) -> dict[str, Any]:
        if quick:
            return {"batch": 2, "channels": (1, 2, 4), "hw": 4, "classes": 3}
        return {"batch": 16, "channels": (3, 8, 16), "hw": 8, "classes": 10}

    @classmethod
    def describe(cls, quick: bool) -> str:
        s = cls.sizes(quick)
        c0, c1, c2 = s["channels"]
        return (
            f"CNN {c0}×{s['hw']}×{s['hw']} → conv3×3 {c1} → conv3×3/2 {c2} → "
            f"dense {s['classes']}, tanh, batch {s['batch']}, cross-entropy"
        )

    @classmethod
    def init(cls, quick: bool, seed: int = 0):
        s = cls.sizes(quick)
        rng = np.random.default_rng(seed)
        c0, c1, c2 = s["channels"]
        hw2 = s["hw"] // 2
        params = {
            "conv1": {"w": _normal(rng, (c1, c0, 3, 3), 1 / math.sqrt(9 * c0)),
                      "b": _normal(rng, (c1,), 0.1)},
            "conv2": {"w": _normal(rng, (c2, c1, 3, 3), 1 / math.sqrt(9 * c1)),
                      "b": _normal(rng, (c2,), 0.1)},
            "head": _dense(rng, c2 * hw2 * hw2, s["classes"]),
        }  # fmt: skip
        x = rng.standard_normal((s["batch"], c0, s["hw"], s["hw"]))  # NCHW
        labels = rng.integers(0, s["classes"], s["batch"])
        return params, (x, labels)

    @staticmethod
    def loss(params, x, labels):
        import jax.numpy as jnp
        from jax import lax

        def conv(h, p, stride):
            out = lax.conv_general_dilated(
                h,
                p["w"],
                window_strides=(stride, stride),
                padding=((1, 1), (1, 1)),
                dimension_numbers=("NCHW", "OIHW", "NCHW"),
            )
            return jnp.tanh(out + p["b"][None, :, None, None])

        h = conv(x, params["conv1"], 1)
        h = conv(h, params["conv2"], 2)
        h = h.reshape(h.shape[0], -1)  # (C, H, W) order, as torch's flatten
        logits = h @ params["head"]["w"] + params["head"]["b"]
        return _cross_entropy_jax(logits, labels)

    @classmethod
    def torch_module(cls, quick: bool):
        import torch
        from torch import nn

        s = cls.sizes(quick)
        c0, c1, c2 = s["channels"]
        hw2 = s["hw"] // 2

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(c0, c1, 3, stride=1, padding=1)
                self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
                self.head = nn.Linear(c2 * hw2 * hw2, s["classes"])

            def forward(self, x):
                h = torch.tanh(self.conv1(x))
                h = torch.tanh(self.conv2(h))
                return self.head(h.flatten(1))

        return Net().double()

    @staticmethod
    def torch_state(params) -> dict[str, np.ndarray]:
        return {
            "conv1.weight": params["conv1"]["w"],  # OIHW in both
            "conv1.bias": params["conv1"]["b"],
            "conv2.weight": params["conv2"]["w"],
            "conv2.bias": params["conv2"]["b"],
            "head.weight": _t(params["head"]["w"]),
            "head.bias": params["head"]["b"],
        }

    @staticmethod
    def torch_objective(logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits, labels)


# ------------------------------------------------------------------- transformer


class Transformer:
    """Pre-norm block: x + attn(LN(x)), then + MLP(LN(·)); MSE to a target."""

    name = "transformer"
    heads = 2

    @staticmethod
    def sizes(quick: bool) -> dict[str, Any]:
        if quick:
            return {"batch": 2, "seq": 4, "dim": 8, "hidden": 16}
        return {"batch": 4, "seq": 8, "dim": 32, "hidden": 128}

    @classmethod
    def describe(cls, quick: bool) -> str:
        s = cls.sizes(quick)
        return (
            f"transformer block d={s['dim']}, {cls.heads} heads, MLP {s['hidden']}, "
            f"seq {s['seq']}, batch {s['batch']}, pre-LN, GELU(tanh), MSE"
        )

    @classmethod
    def init(cls, quick: bool, seed: int = 0):
        s = cls.sizes(quick)
        rng = np.random.default_rng(seed)
        d, hid = s["dim"], s["hidden"]

        def norm():
            return {
                "scale": 1 + _normal(rng, (d,), 0.1),
                "bias": _normal(rng, (d,), 0.1),
            }

        params = {
            "ln1": norm(),
            "qkv": _dense(rng, d, 3 * d),
            "proj": _dense(rng, d, d),
            "ln2": norm(),
            "fc1": _dense(rng, d, hid),
            "fc2": _dense(rng, hid, d),
        }
        x = rng.standard_normal((s["batch"], s["seq"], d))
        target = rng.standard_normal((s["batch"], s["seq"], d))
        return params, (x, target)

    @classmethod
    def loss(cls, params, x, target):
        import jax
        import jax.numpy as jnp

        b, t, d = x.shape
        heads = cls.heads

        def layer_norm(h, p):
            mu = h.mean(-1, keepdims=True)
            var = ((h - mu) ** 2).mean(-1, keepdims=True)
            return (h - mu) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]

        def dense(h, p):
            return h @ p["w"] + p["b"]

        q, k, v = jnp.split(dense(layer_norm(x, params["ln1"]), params["qkv"]), 3, -1)

        def split(a):  # (B, T, D) -> (B, H, T, D/H)
            return a.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)

        q, k, v = split(q), split(k), split(v)
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads), -1)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        h = x + dense(o, params["proj"])
        m = jax.nn.gelu(dense(layer_norm(h, params["ln2"]), params["fc1"]), True)
        h = h + dense(m, params["fc2"])
        return jnp.mean((h - target) ** 2)

    @classmethod
    def torch_module(cls, quick: bool):
        import torch
        import torch.nn.functional as F
        from torch import nn

        s = cls.sizes(quick)
        d, heads, hid = s["dim"], cls.heads, s["hidden"]

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1 = nn.LayerNorm(d, eps=1e-5)
                self.qkv = nn.Linear(d, 3 * d)
                self.proj = nn.Linear(d, d)
                self.ln2 = nn.LayerNorm(d, eps=1e-5)
                self.fc1 = nn.Linear(d, hid)
                self.fc2 = nn.Linear(hid, d)

            def forward(self, x):
                b, t, _ = x.shape
                q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)

                def split(a):
                    return a.reshape(b, t, heads, d // heads).transpose(1, 2)

                q, k, v = split(q), split(k), split(v)
                att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), -1)
                o = (att @ v).transpose(1, 2).reshape(b, t, d)
                h = x + self.proj(o)
                m = F.gelu(self.fc1(self.ln2(h)), approximate="tanh")
                return h + self.fc2(m)

        return Block().double()

    @staticmethod
    def torch_state(params) -> dict[str, np.ndarray]:
        state = {}
        for ln in ("ln1", "ln2"):
            state[f"{ln}.weight"] = params[ln]["scale"]
            state[f"{ln}.bias"] = params[ln]["bias"]
        for lin in ("qkv", "proj", "fc1", "fc2"):
            state[f"{lin}.weight"] = _t(params[lin]["w"])
            state[f"{lin}.bias"] = params[lin]["b"]
        return state

    @staticmethod
    def torch_objective(out, target):
        return ((out - target) ** 2).mean()


REGISTRY = {m.name: m for m in (MLP, CNN, Transformer)}


def get(name: str):
    """The model class called ``name`` (one of :data:`MODELS`)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}") from None


def n_params(params) -> int:
    """Number of scalar parameters in a nested dict/list of arrays."""
    if isinstance(params, dict):
        return sum(n_params(v) for v in params.values())
    if isinstance(params, list | tuple):
        return sum(n_params(v) for v in params)
    return int(np.size(params))


def torch_problem(model, quick: bool, params, data):
    """``(fn, inputs)`` for ``torch.autograd.gradcheck``, and the module's loss.

    ``inputs`` are the module's parameters (float64 tensors with
    ``requires_grad``) holding the same values as ``params``; ``fn(*inputs)``
    runs the module through ``torch.func.functional_call`` on the fixed data and
    returns the scalar loss.
    """
    import torch
    from torch.func import functional_call

    module = model.torch_module(quick)
    state = model.torch_state(params)
    names = [n for n, _ in module.named_parameters()]
    if sorted(names) != sorted(state):
        raise AssertionError(f"torch names {names} != mapped names {sorted(state)}")
    for name, p in module.named_parameters():
        if tuple(p.shape) != state[name].shape:
            raise AssertionError(
                f"{name}: torch {tuple(p.shape)} vs {state[name].shape}"
            )
    inputs = tuple(
        torch.tensor(state[n], dtype=torch.float64, requires_grad=True) for n in names
    )
    x, target = (torch.from_numpy(np.asarray(a)) for a in data)

    def fn(*tensors):
        out = functional_call(module, dict(zip(names, tensors)), (x,))
        return model.torch_objective(out, target)

    return fn, inputs, names
