"""The documentation site (mkdocs.yml, issue 22).

* Fast, no mkdocs needed: every ``::: dotted.name`` of docs/api/*.md imports, so
  a page naming a function that no longer exists fails the default test run.
* With mkdocs installed (the ``docs`` extra): ``mkdocs build --strict`` builds the
  whole site into tmp_path; a broken link, anchor or API name is an error.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)


def directives(text: str) -> list[str]:
    """Every ``::: dotted.name`` of a Markdown page, in order."""
    return DIRECTIVE.findall(text)


def resolve(name: str) -> object:
    """Import ``name`` (a module, or an attribute path below the longest importable module).

    Raises ImportError / AttributeError when it does not exist.
    """
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # only "this module does not exist" moves on to the parent; a missing
            # dependency inside an existing module is reported as it is
            if exc.name is not None and module_name.startswith(exc.name):
                continue
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module of {name!r} can be imported")


def api_names() -> list[tuple[str, str]]:
    return [(page.name, name) for page in sorted(API.glob("*.md"))
            for name in directives(page.read_text(encoding="utf-8"))]


def test_directive_parser_and_resolver():
    text = "# t\n\n::: ibscope.estimators\n    options:\n      members: false\n\n::: ibscope.mutual_information\n"
    assert directives(text) == ["ibscope.estimators", "ibscope.mutual_information"]
    import ibscope
    assert resolve("ibscope.mutual_information") is ibscope.mutual_information
    with pytest.raises(AttributeError):
        resolve("ibscope.estimators.no_such_function")
    with pytest.raises(ImportError):
        resolve("ibscope_no_such_package.x")


def test_api_pages_cover_the_public_modules():
    names = {name for _, name in api_names()}
    for module in ("ibscope", "estimators", "tracking", "weights", "objectives", "ntk", "lm",
                   "reproduce", "training", "store", "plots", "integrations"):
        full = "ibscope" if module == "ibscope" else f"ibscope.{module}"
        assert full in names, f"docs/api/ has no '::: {full}'"


# Modules whose import pulls in a heavy optional package (lightning alone takes
# ~20 s to import on 2 cores): located with find_spec and their names checked
# in the source (top-level def/class/assignment), without executing them.
STATIC = ("ibscope.integrations.",)


def static_resolve(name: str) -> None:
    """Check ``name`` below a STATIC module exists without importing that module."""
    parts = name.split(".")
    # walk down the packages with find_spec; find_spec of "a.b.c" would import
    # "a.b", so it is only asked for a child of a package (never of a module)
    i, spec = 1, importlib.util.find_spec(parts[0])
    if spec is None:
        raise ImportError(f"no module {parts[0]!r}")
    while i < len(parts) and spec.submodule_search_locations is not None:
        child = importlib.util.find_spec(".".join(parts[: i + 1]))
        if child is None:
            break
        i, spec = i + 1, child
    rest = parts[i:]
    if not rest:
        return
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
    if rest[0] not in defined:
        raise AttributeError(f"{'.'.join(parts[:i])} defines no {rest[0]!r}")


@pytest.mark.parametrize(("page", "name"), api_names())
def test_every_api_name_imports(page, name):
    if name.startswith(STATIC):
        static_resolve(name)
    else:
        resolve(name)


def test_static_resolver():
    static_resolve("ibscope.integrations.lightning")
    static_resolve("ibscope.integrations.tensorboard")
    with pytest.raises(AttributeError, match="no_such_module"):
        static_resolve("ibscope.integrations.no_such_module")
    with pytest.raises(AttributeError):
        static_resolve("ibscope.integrations.lightning.no_such_callback")


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: about 15 s on 2 cores, hence slow."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
         "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    api = (site / "api" / "estimators" / "index.html").read_text(encoding="utf-8")
    assert 'id="ibscope.estimators.available"' in api
