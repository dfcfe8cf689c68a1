"""The package's shape: the pipeline's subpackages, small modules, imports that flow one way."""

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

import landscape

ROOT = Path(landscape.__file__).resolve().parent
APPS = ROOT.parent / "apps"
SUBPACKAGES = ("problems", "minima", "paths", "symmetries", "valleys", "views", "studies", "viz")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every landscape module that ``path`` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "landscape":
                continue
            # "from .pkg import module" imports the module too
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if module_path(sub) else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "landscape")
    return {m for m in out if module_path(m)}


def module_path(name: str) -> Path | None:
    if name == "landscape":
        return ROOT / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.exists() and name.startswith("landscape"):
            return candidate
    return None


def modules():
    return sorted(ROOT.rglob("*.py"))


def test_the_tree_is_the_pipeline():
    found = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert found == sorted(SUBPACKAGES)
    for sub in SUBPACKAGES:  # each subpackage says what is in it
        doc = ast.get_docstring(ast.parse((ROOT / sub / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()) >= 3, sub


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_import_cycle_between_modules():
    """Lazy imports count too: a cycle hidden inside a function is still a cycle of ideas.

    A package's ``__init__`` re-exports its modules, so edges *into* an ``__init__`` from below are
    the only ones that could close a loop; none may exist.
    """
    graph = nx.DiGraph()
    for path in modules():
        name = module_name(path)
        graph.add_node(name)
        for target in imports(path):
            if target != name:
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert cycles == []


def test_apps_use_the_public_api():
    """The CLI imports ``landscape``, its subpackages and the public modules ``landscape.bench`` and
    ``landscape.io``, never a module inside them."""
    allowed = {"landscape", "landscape.bench", "landscape.io", *(f"landscape.{s}" for s in SUBPACKAGES)}
    private = {}
    for path in APPS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and not node.level else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bad = [n for n in names if n and n.split(".")[0] == "landscape" and n not in allowed]
            if bad:
                private.setdefault(path.name, []).extend(bad)
    assert private == {}


def test_public_names_resolve_and_helpers_stay_inside():
    for name in landscape.__all__:
        assert hasattr(landscape, name), name
    for helper in ("atomic_write", "atomic_write_bytes", "atomic_save", "Layout", "read_file"):
        assert helper not in landscape.__all__ and not hasattr(landscape, helper), helper


def test_import_landscape_loads_no_plotting_and_no_cluster_library():
    code = ("import sys, landscape; bad = [m for m in ('matplotlib', 'pyvista', 'distributed', 'dask') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
