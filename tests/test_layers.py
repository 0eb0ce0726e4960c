"""The layout holds: no import cycles among our modules, no module past ~400 lines, and the sidecar
loads neither KServe nor torch (issue #13)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model_server", "bark_common", "webhook_sidecar")
#: "No module over ~400 lines": Bark's generation rules (decoding.py) sit just above 400.
MAX_LINES = 410


def our_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_at_load(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Our modules that `name` imports when it loads (module level; not inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # Importing a.b.c loads a and a.b first.
            parts = target.split(".")
            found |= {".".join(parts[:n]) for n in range(1, len(parts) + 1)} & modules.keys()
    found.discard(name)
    return found


def test_no_import_cycles_among_our_modules() -> None:
    modules = our_modules()
    graph = {name: imports_at_load(path, name, modules) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for imported in sorted(graph[name]):
            # A package's __init__ loading its own submodule is not a cycle.
            if not imported.startswith(name + "."):
                visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_module_is_much_over_400_lines() -> None:
    long = {name: n for name, path in our_modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_sidecar_loads_neither_kserve_nor_torch() -> None:
    heavy = (
        "import webhook_sidecar.__main__, sys; "
        "print([m for m in ('kserve', 'torch', 'transformers') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", heavy], cwd=REPO, check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_imports_run_down_the_layers_only() -> None:
    """The HTTP edge sits on the model and the service, which sit on generation: nothing below the
    edge imports it (the CLI wires everything), and generation imports neither the edge nor the
    service. A module that needs a thing from above gets it moved below both."""
    modules = our_modules()
    upward: list[str] = []
    for name, path in modules.items():
        imported = imports_at_load(path, name, modules)
        if not name.startswith(("model_server.http", "model_server.__main__")):
            upward += [f"{name} -> {target}" for target in imported if target.startswith("model_server.http")]
        if name.startswith("model_server.generation"):
            above = ("model_server.synthesis", "model_server.model", "model_server.schema")
            upward += [f"{name} -> {target}" for target in imported if target.startswith(above)]
    assert not upward, upward
