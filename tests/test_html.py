"""The notebook view (``_repr_html_``): its structure, not its pixels.

One scoped ``<style>``, a banner in the verdict's tone, numbers right-aligned in
monospace, verdicts marked by a class *and* a symbol, long tables collapsible,
every user string escaped, light and dark themes. Each failing case has a
passing twin, so a view that marks everything (or nothing) fails here.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import HtmlNode, parse_html
from jgradcheck._report.html import LONG_TABLE, render_html
from jgradcheck._report.sections import Section
from jgradcheck._report.tables import Table

EVIL = "<script>alert('x')</script> & co"
"""A dict key no notebook must run or mangle."""


def _report(ok: bool):
    def loss(p):
        return jnp.sum(jnp.sin(p[EVIL]) * p["b"] ** 2)

    def grad(p):
        g = jax.grad(loss)(p)
        return g if ok else {EVIL: g[EVIL], "b": g["b"].at[1].multiply(-1.0)}

    params = {EVIL: jnp.array([0.3, 1.1, 2.0]), "b": jnp.array([0.5, 1.5, -1.0])}
    return jgc.check_grad(loss, params, grad=grad)


@pytest.fixture(scope="module", params=[True, False], ids=["passing", "failing"])
def report(request):
    return _report(request.param)


def _page(obj) -> tuple[str, HtmlNode]:
    page = obj._repr_html_()
    return page, parse_html(page)


def _top(root: HtmlNode, cls: str) -> list[HtmlNode]:
    """Elements with class ``cls`` outside nested reports."""
    return [n for n in root.find_all(cls) if not n.inside("jgc-nested")]


def _selectors(css: str) -> list[str]:
    """Every selector of every rule (inside ``@media`` too)."""
    return [
        s.strip()
        for group in re.findall(r"([^{}]+)\{[^{}]*\}", css)
        for s in group.split(",")
    ]


def test_one_scoped_style_block_with_themes(report):
    page, root = _page(report)
    styles = [n for n in root.iter() if n.tag == "style"]
    assert len(styles) == 1 and page.count("<style") == 1
    (top,) = [c for c in root.children if isinstance(c, HtmlNode)]
    assert top.tag == "div" and "jgc" in top.classes and styles[0].parent is top
    css = styles[0].text()
    selectors = _selectors(css)
    assert len(selectors) > 20
    assert all(".jgc" in s for s in selectors), [
        s for s in selectors if ".jgc" not in s
    ]
    assert "@media (prefers-color-scheme: dark)" in css
    assert (
        "var(--jp-content-font-color0" in css
        and "var(--vscode-editor-foreground" in css
    )
    assert 'body[data-jp-theme-light="false"] .jgc' in css  # JupyterLab dark theme
    assert "<script" not in page.lower()


def test_banner_carries_the_verdict(report):
    _, root = _page(report)
    (banner,) = _top(root, "jgc-banner")
    tone = "jgc-pass" if report.ok else "jgc-fail"
    other = "jgc-fail" if report.ok else "jgc-pass"
    assert tone in banner.classes and other not in banner.classes
    assert banner.text(skip=("jgc-sym",)) == str(report).splitlines()[0]
    (symbol,) = banner.find_all("jgc-sym")
    assert symbol.text() == ("✓" if report.ok else "✗")


def _table(root: HtmlNode, heading: str) -> HtmlNode:
    """The table under the (top-level) heading starting with ``heading``."""
    for details in _top(root, "jgc-fold"):
        (summary,) = details.find_all("jgc-heading")
        if summary.text().startswith(heading):
            (table,) = [n for n in details.iter() if n.tag == "table"]
            return table
    raise AssertionError(f"no table under {heading!r}")


def _rows(table: HtmlNode) -> list[list[HtmlNode]]:
    return [
        [c for c in tr.children if isinstance(c, HtmlNode)]
        for tr in table.iter()
        if tr.tag == "tr" and tr.parent is not None and tr.parent.tag == "tbody"
    ]


def test_numbers_are_right_aligned_monospace(report):
    page, root = _page(report)
    table = _table(root, "worst entries" if not report.ok else "closest calls")
    rows = _rows(table)
    assert rows
    for row in rows:
        # where | a | n | ±err | |a-n| | rel err | tolerance | status
        assert all("jgc-num" in c.classes for c in row[1:7])
        assert "jgc-num" not in row[0].classes and "jgc-num" not in row[7].classes
        float(row[1].text())  # a number, nothing else in the cell
    rule = re.search(r"\.jgc \.jgc-table \.jgc-num \{([^}]*)\}", page)
    assert rule and "text-align: right" in rule.group(1)
    assert "font-family: var(--jgc-mono)" in rule.group(1)
    assert "monospace" in page.split("--jgc-mono:")[1].split(";")[0]


def test_fail_rows_carry_class_and_symbol(report):
    _, root = _page(report)
    for heading in ("per leaf", "worst entries" if not report.ok else "closest calls"):
        for row in _rows(_table(root, heading)):
            tr, status = row[0].parent, row[-1]
            assert tr is not None
            text = status.text()
            if "FAIL" in text:
                assert {"jgc-row-fail", "jgc-fail"} <= tr.classes
                assert status.find_all("jgc-sym")[0].text() == "✗"
            else:
                assert "jgc-row-pass" in tr.classes and "jgc-row-fail" not in tr.classes
                assert status.find_all("jgc-sym")[0].text() == "✓"
    failing = [n for n in root.iter() if n.tag == "tr" and "jgc-row-fail" in n.classes]
    assert bool(failing) == (not report.ok)
    # The leaf with the bug (and only it) is marked in the per-leaf table.
    marked = [
        r[0].text()
        for r in _rows(_table(root, "per leaf"))
        if "jgc-row-fail" in r[0].parent.classes
    ]
    assert marked == ([] if report.ok else ["['b']"])


def test_diagnosis_is_a_callout(report):
    _, root = _page(report)
    callouts = _top(root, "jgc-callout")
    if report.ok:
        assert not callouts
        return
    (callout,) = callouts
    assert "jgc-fail" in callout.classes
    assert callout.find_all("jgc-heading")[0].text(skip=("jgc-sym",)).strip() == (
        "diagnosis:"
    )
    assert "['b']:" in callout.text()


def test_every_user_string_is_escaped(report):
    page, root = _page(report)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    # Parsed back, the path reads as written, in the tables and (failing) nowhere
    # as markup.
    first_cells = [r[0].text() for r in _rows(_table(root, "per leaf"))]
    assert f"[{EVIL!r}]" in first_cells
    assert not [n for n in root.iter() if n.tag == "script"]


def _section(n_rows: int, failing_row: int | None = None) -> Section:
    rows = tuple(
        (f"x[{k}]", f"{k:.3e}", "FAIL" if k == failing_row else "pass")
        for k in range(n_rows)
    )
    table = Table(("where", "value", "status"), rows, frozenset({1}), 2)
    return Section("table", "some entries (a note):", table=table)


@pytest.mark.parametrize(
    "n_rows, failing_row, is_open",
    [
        (LONG_TABLE + 8, None, False),  # long, all pass: collapsed
        (LONG_TABLE + 8, LONG_TABLE + 3, True),  # long, a failure: open
        (3, None, True),  # short: open
        (3, 1, True),
    ],
)
def test_long_tables_are_collapsible(n_rows, failing_row, is_open):
    root = parse_html(render_html([_section(n_rows, failing_row)]))
    (details,) = [n for n in root.iter() if n.tag == "details"]
    (summary,) = [c for c in details.children if isinstance(c, HtmlNode)][:1]
    assert summary.tag == "summary"
    assert ("open" in details.attrs) == is_open
    assert summary.text(skip=("jgc-count",)) == "some entries (a note):"
    counts = details.find_all("jgc-count")
    assert bool(counts) == (n_rows > LONG_TABLE)
    (table,) = [n for n in details.iter() if n.tag == "table"]
    assert len(_rows(table)) == n_rows


@pytest.mark.parametrize("tone", ["pass", "fail", "unsure", "info"])
def test_banner_tones_and_escaping_by_hand(tone):
    title = "<img src=x onerror=alert(1)>"
    page = render_html(
        [
            Section("headline", title, ("a & b",), tone=tone),
            Section("lines", "notes <i>:", ("x < y",), tone=None),
            Section(
                "lines", lines=("ok   first", "FAIL second"), marks=("pass", "fail")
            ),
        ]
    )
    assert "<img" not in page and "<i>" not in page
    root = parse_html(page)
    (banner,) = root.find_all("jgc-banner")
    assert f"jgc-{tone}" in banner.classes
    assert banner.find_all("jgc-sub")[0].text() == "a & b"
    marked = root.find_all("jgc-line")[-2:]
    assert [m.find_all("jgc-sym")[0].text() for m in marked] == ["✓", "✗"]
    assert ["jgc-pass" in marked[0].classes, "jgc-fail" in marked[1].classes] == [
        True
    ] * 2


# ----------------------------------------------------------------- rule reports


def _fwd(x):
    return jnp.tanh(x), x


def _make_bwd(factor):
    def bwd(x, g):
        return (factor * g * (1 - jnp.tanh(x) ** 2),)

    return bwd


@pytest.mark.parametrize("factor", [1.0, -1.0], ids=["passing", "failing"])
def test_rule_report_view(factor):
    f = jax.custom_vjp(lambda x: jnp.tanh(x))
    f.defvjp(_fwd, _make_bwd(factor))
    report = jgc.check_vjp(f, jnp.array([0.2, -0.7, 1.3]))
    assert report.ok == (factor == 1.0)
    page, root = _page(report)
    assert page.count("<style") == 1 and "<pre>" not in page
    (banner,) = _top(root, "jgc-banner")
    assert ("jgc-pass" if report.ok else "jgc-fail") in banner.classes
    assert banner.find_all("jgc-sym")[0].text() == ("✓" if report.ok else "✗")
    # Structure checks are marked line by line; the dot-product rows by verdict.
    marks = [
        n.find_all("jgc-sym")[0].text()
        for n in _top(root, "jgc-line")
        if n.find_all("jgc-sym")
    ]
    assert marks and set(marks) == {"✓"}  # primal and structure hold either way
    dots = _rows(_table(root, "dot-product tests"))
    symbols = {r[-1].find_all("jgc-sym")[0].text() for r in dots}
    assert symbols == ({"✓"} if report.ok else {"✗"})
    nested = root.find_all("jgc-nested")
    assert bool(nested) == (not report.ok)  # a failing localisation is nested
    if nested:
        assert "jgc-fail" in nested[0].classes
        assert nested[0].find_all("jgc-callout")  # with its diagnosis
    # Text and HTML say the same headings.
    text_titles = [line for line in str(report).splitlines() if line.endswith(":")]
    html_titles = [
        h.text(skip=("jgc-sym", "jgc-count")).strip()
        for h in root.find_all("jgc-heading")
    ]
    assert [t for t in html_titles if t.endswith(":")] == [
        t.strip() for t in text_titles
    ]


# ----------------------------------------------------------------- eps_sweep


def test_eps_sweep_view_says_what_its_text_says():
    s = jgc.eps_sweep(
        lambda p: jnp.sum(jnp.sin(p)), jnp.array([0.3, 1.2]), eps=np.logspace(-9, -1, 9)
    )
    text = str(s)
    assert text.startswith("eps_sweep: finite-difference error against ε at 2 coord")
    assert "array(" not in text
    page, root = _page(s)
    assert page.count("<style") == 1
    (banner,) = root.find_all("jgc-banner")
    assert "jgc-info" in banner.classes
    assert banner.text(skip=("jgc-sym",)) == text.splitlines()[0]
    headings = [h.text().strip() for h in root.find_all("jgc-heading")]
    assert headings == [line for line in text.splitlines() if line.endswith(":")]
    rows = _rows(_table(root, "per coordinate"))
    assert [r[0].text() for r in rows] == ["[0]", "[1]"]
    assert all("jgc-num" in c.classes for r in rows for c in r[1:])
    best = float(rows[0][2].text())
    assert best == pytest.approx(float(s.best_eps["central"][0]), rel=0.05)
