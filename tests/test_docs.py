"""The documentation stays in step with the package (cheap: no mkdocs needed).

``make docs`` (``mkdocs build --strict``) is the full check; these tests catch
the usual drift in the plain test suite: a public name missing from the API
reference, a nav entry or link to a page that does not exist, a README
quickstart that no longer runs, and docstring shapes that mkdocstrings renders
wrongly.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
from pathlib import Path

import pytest

import jgradcheck

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _api_text() -> str:
    pages = [DOCS / "api.md", *sorted((DOCS / "api").glob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages if p.exists())


def _nav_pages() -> list[str]:
    """Every ``*.md`` named in mkdocs.yml's ``nav:`` block (no YAML parser needed)."""
    lines = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines()
    start = lines.index("nav:")
    pages = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break  # the next top-level key
        m = re.search(r"([\w./-]+\.md)\s*$", line)
        if m:
            pages.append(m.group(1))
    return pages


@pytest.mark.parametrize("name", jgradcheck.__all__)
def test_every_public_name_is_in_the_api_reference(name):
    assert re.search(rf"^::: jgradcheck\.{name}\s*$", _api_text(), re.MULTILINE), (
        f"`jgradcheck.{name}` is public but docs/api.md has no "
        f"`::: jgradcheck.{name}` entry"
    )


PUBLIC_MODULES = ("strategies",)
"""Public modules outside ``jgradcheck.__all__`` (imported on their own:
``jgradcheck.strategies`` needs hypothesis), documented as a whole."""


def test_api_reference_names_only_public_objects():
    documented = re.findall(r"^::: jgradcheck\.(\w+)", _api_text(), re.MULTILINE)
    assert documented, "docs/api.md documents nothing"
    assert set(documented) <= set(jgradcheck.__all__) | set(PUBLIC_MODULES)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_module_is_in_the_api_reference(module):
    assert re.search(rf"^::: jgradcheck\.{module}\s*$", _api_text(), re.MULTILINE)


def test_nav_pages_exist_and_every_page_is_in_the_nav():
    nav = _nav_pages()
    assert "index.md" in nav and "api.md" in nav
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml nav names missing pages: {missing}"
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    orphans = sorted(pages - set(nav))
    assert not orphans, f"pages not in mkdocs.yml nav: {orphans}"


def _relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link.split("#")[0] for link in links if not re.match(r"[a-z]+:|#", link)]


def test_readme_links_point_at_files():
    links = _relative_links(README.read_text(encoding="utf-8"))
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_docs_links_point_at_pages():
    missing = []
    for page in DOCS.rglob("*.md"):
        for link in _relative_links(page.read_text(encoding="utf-8")):
            if link and not (page.parent / link).exists():
                missing.append(f"{page.relative_to(DOCS)} -> {link}")
    assert not missing, f"broken links in docs/: {missing}"


def test_readme_quickstart_runs_and_finds_the_bug():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md quickstart", "exec"), namespace)
    printed = out.getvalue()
    assert printed.splitlines()[0] == "True"  # jax.grad(loss) passes
    report = namespace["report"]  # the hand-written backprop with the bug
    assert not report.ok
    assert [leaf.path for leaf in report.leaves if leaf.n_fail] == ["['w2']"]
    assert "scaled: a ≈ 2·n" in printed
    # The output quoted in the README is what the code prints.
    assert "gradient check FAILED: 16 of 80 checked entries disagree, in ['w2']" in (
        printed
    )
    assert "gradient check FAILED: 16 of 80" in section


def _public_docstrings():
    for module in PUBLIC_MODULES:
        mod = importlib.import_module(f"jgradcheck.{module}")
        for name in mod.__all__:
            yield f"{module}.{name}", inspect.getdoc(getattr(mod, name)) or ""
    for name in jgradcheck.__all__:
        obj = getattr(jgradcheck, name)
        yield name, inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            members: dict = {}  # the class's own and its jgradcheck bases' members
            for klass in reversed(obj.__mro__):
                if klass.__module__.startswith("jgradcheck"):
                    members.update(vars(klass))
            for attr, member in members.items():
                if attr.startswith("_"):
                    continue
                member = getattr(member, "fget", member)  # properties
                if callable(member):
                    yield f"{name}.{attr}", inspect.getdoc(member) or ""


SECTION = re.compile(
    r"^(Args|Arguments|Returns|Raises|Yields|Example|Examples|Note|Notes):\s*$"
)


def _sections(doc: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in doc.splitlines():
        m = SECTION.match(line)
        if m:
            current = out.setdefault(m.group(1), [])
        elif current is not None and (line.startswith(" ") or not line):
            current.append(line)
        else:
            current = None
    return out


def _docstring_problems(where: str, doc: str) -> list[str]:
    """Shapes that mkdocstrings' Google parser renders wrongly, found in this repo."""
    problems = []
    sections = _sections(doc)
    for line in sections.get("Args", []):
        # "rtol, atol: ..." is read as one parameter named "rtol, atol".
        if re.match(r"^\s{1,4}[\w*]+\s*,\s*[\w*]+[\w*, ]*:", line):
            problems.append(f"{where}: one Args entry per parameter: {line!r}")
    returns = [line for line in sections.get("Returns", []) if line.strip()]
    # A colon in the first line makes the text before it the return type.
    if returns and ":" in re.sub(r"``[^`]*``", "", returns[0]):
        problems.append(f"{where}: colon in Returns: {returns[0].strip()!r}")
    return problems


def test_public_docstrings_render():
    problems = [
        p for w, doc in _public_docstrings() for p in _docstring_problems(w, doc)
    ]
    assert not problems, "\n".join(problems)


def test_docstring_check_catches_both_shapes():
    bad = "Do it.\n\nArgs:\n  rtol, atol: tolerances.\n\nReturns:\n  A :class:`X`.\n"
    assert len(_docstring_problems("bad", bad)) == 2
    good = "Do it.\n\nArgs:\n  rtol: a.\n  atol: b.\n\nReturns:\n  A ``X``.\n"
    assert _docstring_problems("good", good) == []


# ---------------------------------------------------------- runnable guides

RUNNABLE_PAGES = ("guide/low-precision.md", "guide/points.md")
"""Pages whose ``python`` blocks run in order as one script. A block followed by
"prints (real output)" and a ``text`` block must print exactly that text."""

VARIANT_PAGES = ("guide/low-precision.md",)
"""Runnable pages that define ``jgc_variant`` tests, which are run too."""

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::(\w+))?"$', re.MULTILINE)


def _snippet(match: re.Match) -> str:
    """pymdownx.snippets' ``--8<-- "path:section"``: the file's lines between
    ``# --8<-- [start:section]`` and ``# --8<-- [end:section]`` (or all of it)."""
    text = (ROOT / match.group(1)).read_text(encoding="utf-8")
    section = match.group(2)
    if section:
        text = text.split(f"# --8<-- [start:{section}]\n", 1)[1]
        text = text.split(f"# --8<-- [end:{section}]", 1)[0]
    return text


def _python_blocks(page: str) -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for every python block of ``page``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    blocks = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        expected = None
        if i + 1 < len(fences) and fences[i + 1].group(1) == "text":
            between = text[fence.end() : fences[i + 1].start()]
            if "prints (real output)" in between:
                expected = fences[i + 1].group(2)
        blocks.append((SNIPPET.sub(_snippet, fence.group(2)), expected))
    return blocks


def _run_variant_tests(namespace: dict) -> list[str]:
    """Run every ``test_*(jgc_variant)`` the page defined, once per variant of its
    ``@pytest.mark.jgradcheck`` marker, as the plugin would; their ids."""
    from jgradcheck.pytest_plugin import Variant

    ran = []
    for name, fn in list(namespace.items()):
        if not (name.startswith("test_") and callable(fn)):
            continue
        (mark,) = [m for m in getattr(fn, "pytestmark", []) if m.name == "jgradcheck"]
        jits = mark.kwargs.get("jit", (False, True))
        for dtype in mark.kwargs["dtypes"]:
            for jit in jits if isinstance(jits, tuple) else (jits,):
                variant = Variant(dtype, jit=jit)
                with variant.scope():
                    fn(variant)
                ran.append(f"{name}[{variant.id}]")
    return ran


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_guide_code_blocks_run_and_print_what_the_page_says(page):
    blocks = _python_blocks(page)
    assert blocks, f"{page} has no python blocks"
    namespace: dict = {"__name__": "docs_" + Path(page).stem.replace("-", "_")}
    for i, (code, expected) in enumerate(blocks, 1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{page}, python block {i}", "exec"), namespace)
        if expected is not None:
            assert out.getvalue() == expected, f"{page}, python block {i}"
    if page in VARIANT_PAGES:
        assert _run_variant_tests(namespace), f"{page} defines no jgc_variant test"
