"""The package's architecture as tests: layers, cycles, sizes, what ``import sparsejax`` loads.

The layers (``docs/architecture.md``), bottom to top; a module imports only from its own
layer or below, and the import graph (module-level and function-level imports alike) has no
cycle. Deprecated alias modules, kept so that old import paths resolve, are exempt.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sparsejax"

LAYERS: dict[str, int] = {
    # 0: the core (jax, optax and numpy only)
    "tree": 0, "_platform": 0, "_gpu_kernels": 0, "masks": 0, "structures": 0,
    "schedules": 0, "select": 0, "scores": 0, "transforms": 0,
    # 1: jax-only tools
    "metrics": 1, "sensitivity": 1, "regularizers": 1, "parallel": 1, "block_sparse": 1,
    "deploy": 1,
    # 2: the Flax layer's ground
    "models": 2, "data": 2, "checkpoint": 2,
    # 3: techniques on models
    "lottery": 3, "variational": 3, "dynamic": 3, "shrink": 3, "posttrain": 3,
    # 4: training
    "train": 4,
    # 5: the experiment runner
    "runner": 5,
}
CORE = 0
# Old import paths kept as thin re-exports of the new homes.
ALIASES = {"experiment", "structured", "kernels", "criteria"}
# A line with this marker may import up (a deprecated function kept under its old name).
UPWARD_MARKER = "deprecated alias: imports up a layer"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(module: str, path: pathlib.Path) -> list[tuple[str, int, str]]:
    """``(imported sparsejax module, line, source line)`` for every import in the file."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import name` imports pkg.name when that is a module.
            names = [
                f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix
                for a in node.names
            ]
        for name in names:
            if name == "sparsejax" or name.startswith("sparsejax."):
                while name not in MODULES and "." in name:
                    name = name.rpartition(".")[0]
                found.append((name, node.lineno, lines[node.lineno - 1]))
    return found


def _is_alias(module: str) -> bool:
    return _top(module) in ALIASES


def test_every_module_has_a_layer():
    unknown = sorted({_top(m) for m in MODULES if _top(m) and not _is_alias(m)} - set(LAYERS))
    assert not unknown, f"modules with no layer in LAYERS: {unknown}"


def test_imports_point_down():
    upward = []
    for module, path in MODULES.items():
        top = _top(module)
        if top is None or _is_alias(module):
            continue
        for target, line, text in _imports(module, path):
            t = _top(target)
            if t is None:
                continue
            if t in ALIASES:
                upward.append(f"{module}:{line} imports the deprecated alias {target}")
            elif LAYERS[t] > LAYERS[top] and UPWARD_MARKER not in text:
                upward.append(f"{module}:{line} (layer {LAYERS[top]}) imports {target} "
                              f"(layer {LAYERS[t]})")
    assert not upward, "\n".join(sorted(set(upward)))


def test_no_import_cycle():
    graph = {
        m: {t for t, _, text in _imports(m, p) if t != m and UPWARD_MARKER not in text}
        for m, p in MODULES.items()
        if not _is_alias(m) and m != "sparsejax"
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # A package importing its own submodules is not a cycle unless they import it back.
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_core_imports_no_flax():
    bad = []
    for module, path in MODULES.items():
        top = _top(module)
        if top is None or _is_alias(module) or LAYERS[top] != CORE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bad += [f"{module}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] == "flax"]
    assert not bad, "\n".join(bad)


def _loaded_after(statement: str) -> set[str]:
    code = (f"{statement}; import sys; print(' '.join(m for m in sys.modules if 'pallas' in m "
            "or 'triton' in m or m.split('.')[0] == 'flax'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_sparsejax_loads_no_pallas_triton_or_flax():
    # `import jax` itself loads jaxlib.gpu_triton (its GPU plugin registry, even on a CPU
    # install): sparsejax must load nothing beyond what jax, optax and numpy load.
    baseline = _loaded_after("import jax, jax.numpy, optax, numpy")
    assert _loaded_after("import sparsejax") - baseline == set()
    assert not {m for m in baseline if "pallas" in m or m.split(".")[0] == "flax"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size_and_docstring(module):
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 600, f"{path} has {len(source.splitlines())} lines"
    doc = ast.get_docstring(ast.parse(source)) or ""
    assert len(doc.splitlines()) <= 30, f"{path}: module docstring of {len(doc.splitlines())} lines"


# Measured numbers belong in docs/results.md and results/, not in the package.
_TIMING = re.compile(r"\d\s?(µs|us|ms)\b|\bH100\b|\bH200\b|\bA100\b")


def test_no_measured_numbers_in_the_package():
    hits = [
        f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
        for path in MODULES.values()
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _TIMING.search(line)
    ]
    assert not hits, "\n".join(hits)
