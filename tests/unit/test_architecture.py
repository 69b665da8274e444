"""The shape of the package, checked from the source (ast), so it cannot rot.

* No production module imports development tooling: ``gateway.dev`` (and its old path
  ``gateway.pki``) and ``adapters.testing`` (fakes for tests). ``adapters.synth`` is not
  development tooling: ``credit-adapter synth`` is a department's command. The one
  exception is the ``credit-gateway`` dispatcher, which imports ``gateway.dev.demo`` and
  ``gateway.dev.pki`` inside the ``demo`` and ``certs`` subcommands.
* No import cycle among the modules of ``gateway`` and ``adapters``, counting module-level
  imports; and adding the function-local imports must not make one either (a local import
  may save start-up time, never hide a circle).
* The README's Layout section names every folder under ``gateway/``.
* A hand-written module over :data:`LONG_MODULE` lines says why it is one module: its
  docstring holds a paragraph starting :data:`WHY_ONE_MODULE`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("gateway", "adapters")
DEV = ("gateway.dev", "gateway.pki", "adapters.testing")
#: Production modules allowed to import development tooling, and only inside a function.
DEV_DISPATCHERS = {"gateway.cli.gateway"}
#: Longer than this (lines), a module states why it is not split.
LONG_MODULE = 600
WHY_ONE_MODULE = "Why one module"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_dev(name: str) -> bool:
    return any(name == d or name.startswith(d + ".") for d in DEV)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules of ours that ``node`` (in ``module``) imports."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
    for name in candidates:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            names.add(name)
    return names


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(module-level imports, function-local imports) of ``module``; TYPE_CHECKING excluded."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top: set[str] = set()
    local: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                (local if in_function else top).update(_targets(module, child))
            visit(
                child,
                in_function
                or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda),
            )

    visit(tree, False)
    return top, local


IMPORTS = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _without_packages(edges: set[str], module: str) -> set[str]:
    # A package's __init__ importing its own submodules, and a submodule importing a name
    # from its package, is how packages work, not a circle between two concerns.
    return {e for e in edges if not (e.startswith(module + ".") or module.startswith(e + "."))}


def test_the_walk_sees_the_package() -> None:
    assert "gateway.pipeline.validation" in MODULES
    assert "gateway.dev.pki" in MODULES
    assert "adapters.sdk" in MODULES
    assert "gateway.auth.certs" in IMPORTS["gateway.auth.registry"][0]


def test_no_production_module_imports_development_tooling() -> None:
    offenders = []
    for module, (top, local) in IMPORTS.items():
        if _is_dev(module):
            continue
        for target in sorted(top | local):
            if _is_dev(target) and not (module in DEV_DISPATCHERS and target not in top):
                offenders.append(f"{module} -> {target}")
    assert offenders == []


def test_development_tooling_is_reached_only_from_the_dispatcher() -> None:
    # Guard the exception itself: the dispatcher imports dev tooling lazily, never at import.
    for module in DEV_DISPATCHERS:
        top, local = IMPORTS[module]
        assert not any(_is_dev(t) for t in top)
        assert any(_is_dev(t) for t in local)


def test_no_import_cycle_at_module_level() -> None:
    graph = {m: _without_packages(top, m) for m, (top, _local) in IMPORTS.items()}
    assert _cycles(graph) == []


def test_no_function_local_import_hides_a_cycle() -> None:
    graph = {m: _without_packages(top | local, m) for m, (top, local) in IMPORTS.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_gateway_has_few_top_level_modules() -> None:
    top = sorted(p.name for p in (REPO / "gateway").glob("*.py"))
    assert len(top) <= 8, top


def _layout_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    return match.group(1)


@pytest.mark.parametrize(
    "folder",
    sorted(
        p.relative_to(REPO).as_posix()
        for p in (REPO / "gateway").rglob("*")
        if p.is_dir() and p.name != "__pycache__" and (p / "__init__.py").exists()
    ),
)
def test_readme_layout_names_every_gateway_folder(folder: str) -> None:
    section = _layout_section()
    name = folder.rsplit("/", 1)[-1]
    assert re.search(rf"(^|[\s/`]){re.escape(name)}/", section, re.M), folder


def test_the_pipeline_and_the_domain_never_import_the_grpc_edge() -> None:
    # The layers point one way: api -> pipeline -> domain, never back.
    for module, (top, local) in IMPORTS.items():
        if module.startswith(("gateway.pipeline", "gateway.domain")):
            assert not [t for t in top | local if t.startswith("gateway.api")], module


def test_old_import_paths_keep_working() -> None:
    # Departments' code and the certificate README name these (python-tuf style re-exports).
    import gateway.catalog
    import gateway.console
    import gateway.identifiers
    import gateway.pki
    from gateway.auth.certs import FEDERATION_IDENTITY
    from gateway.dev import pki
    from gateway.domain import catalog, identifiers

    assert gateway.identifiers.validate_uscc is identifiers.validate_uscc
    assert gateway.catalog.load_catalog is catalog.load_catalog
    assert gateway.console.console_script is not None
    assert gateway.pki.init_pki is pki.init_pki
    assert gateway.pki.FEDERATION_IDENTITY == FEDERATION_IDENTITY


def test_a_module_over_600_lines_says_why_it_is_one() -> None:
    unexplained = []
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) <= LONG_MODULE:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not re.search(rf"^{WHY_ONE_MODULE}\b", doc, re.M):
            unexplained.append(module)
    assert not unexplained, unexplained


def test_command_line_paths_use_the_one_argparse_type() -> None:
    """``type=Path`` reads ``--ca ""`` as the current folder; every path flag goes
    through :func:`gateway.cli.console.path_arg`, which refuses the empty path."""
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in _modules().values()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "type=Path" in line.replace(" ", "")
    ]
    assert offenders == []
