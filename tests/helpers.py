"""Small models and utilities shared by the tests."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np


def normal(seed, shape, dtype=jnp.float32):
    """Standard normal test data from NumPy's generator, as a JAX array.

    Not ``jax.random.normal``: on CPU its threefry program takes ~0.8 s to
    compile for every new shape, and the suite builds data of dozens of shapes.
    """
    draw = np.random.default_rng(seed).standard_normal(shape)
    return jnp.asarray(draw.astype(np.float32)).astype(dtype)


def mlp_params(widths, dtype=jnp.float32, seed=0):
    params = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        # A Python float, weakly typed: a NumPy float64 scalar would promote
        # float32 params to float64 under JAX_ENABLE_X64=1.
        w = normal([seed, k, 0], (a, b), dtype) / float(np.sqrt(a))
        params.append({"w": w, "b": 0.1 * normal([seed, k, 1], (b,), dtype)})
    return params


def mlp_loss(params, x, y):
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = jnp.tanh(h)
    return jnp.mean((h - y) ** 2)


def data(shape_x, shape_y, dtype=jnp.float32, seed=1):
    return normal([seed, 0], shape_x, dtype), normal([seed, 1], shape_y, dtype)


def failing_places(report):
    """Set of (path, index) of failing entries."""
    return {(e.path, e.index) for e in report.failures()}


def linear_problem(dtype=jnp.float32, n_in=8, n_out=8, batch=16):
    params = {
        "w": normal([0, 0], (n_in, n_out), dtype) / float(np.sqrt(n_in)),
        "b": 0.1 * normal([0, 1], (n_out,), dtype),
    }
    x, y = data((batch, n_in), (batch, n_out), dtype)
    return params, x, y


def linear_loss(p, x, y):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


def linear_grad(p, x, y, *, transpose=False, scale=1.0, sign=1.0):
    """The exact gradient of ``linear_loss``, optionally broken."""
    r = 2 * (x @ p["w"] + p["b"] - y) / y.size
    gw = x.T @ r
    return {"w": sign * scale * (gw.T if transpose else gw), "b": sign * r.sum(0)}


def once_per_session(
    name: str, produce: Callable[[], Any], tmp_path_factory: Any
) -> Any:
    """``produce()`` once per test session, even under pytest-xdist.

    Each xdist worker is its own process, so a module-scoped fixture runs once
    per worker that runs one of its tests. Here the first worker to ask runs
    ``produce`` (which must return JSON) under a lock in the session's shared
    temporary directory, and the others read its result. Without xdist it just
    calls ``produce``.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return produce()
    shared = Path(tmp_path_factory.getbasetemp()).parent  # one per session
    result = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(produce()))
        return json.loads(result.read_text())


class HtmlNode:
    """An element of a parsed HTML fragment (see :func:`parse_html`)."""

    def __init__(self, tag: str, attrs: dict[str, str | None], parent=None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[HtmlNode | str] = []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def iter(self):
        """This element and every element below it, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, HtmlNode):
                yield from child.iter()

    def find_all(self, cls: str) -> list[HtmlNode]:
        return [n for n in self.iter() if cls in n.classes]

    def text(self, skip: tuple[str, ...] = ()) -> str:
        """The text inside, leaving out elements with a class in ``skip``."""
        return "".join(
            c if isinstance(c, str) else c.text(skip)
            for c in self.children
            if isinstance(c, str) or not (c.classes & set(skip))
        )

    def inside(self, cls: str) -> bool:
        """Some ancestor has the class ``cls``."""
        node = self.parent
        while node is not None:
            if cls in node.classes:
                return True
            node = node.parent
        return False


def parse_html(page: str) -> HtmlNode:
    """A fragment as a tree of :class:`HtmlNode` (text unescaped), for tests of
    the HTML reports' structure. Fails on an element closed out of order."""
    from html.parser import HTMLParser

    void = {"br", "hr", "img", "meta", "link", "input", "col", "wbr"}
    root = HtmlNode("#root", {})

    class _Parser(HTMLParser):
        node = root

        def handle_starttag(self, tag, attrs):
            child = HtmlNode(tag, dict(attrs), self.node)
            self.node.children.append(child)
            if tag not in void:
                self.node = child

        def handle_endtag(self, tag):
            assert self.node.tag == tag, f"</{tag}> closes <{self.node.tag}>"
            self.node = self.node.parent

        def handle_data(self, data):
            self.node.children.append(data)

    parser = _Parser(convert_charrefs=True)
    parser.feed(page)
    parser.close()
    assert parser.node is root, f"<{parser.node.tag}> left open"
    return root
