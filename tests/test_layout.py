"""The package's shape: layers import only downwards, and no module imports itself back in a circle.

Layers, lowest first (docs/architecture.md): utils < data < model, numpy_model < config, visualize < evaluation < training,
serve < cli.
Imports inside functions count too: a lazy import still ties the layers together.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "captioner"
LAYERS = {"utils": 0, "data": 1, "model": 2, "numpy_model": 2, "config": 3, "visualize": 3, "evaluation": 4, "training": 5, "serve": 5,
          "cli": 6,
          "__main__": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The captioner modules `path` imports (the longest known prefix of each imported name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "captioner":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_belongs_to_a_layer():
    unplaced = sorted(m for m in import_graph() if m != "captioner" and layer(m) is None)
    assert not unplaced, f"modules outside the layers of {sorted(LAYERS)}: {unplaced}"


def test_no_lower_layer_imports_a_higher_one():
    upward = [f"{source} imports {target}" for source, targets in import_graph().items() for target in targets
              if layer(source) is not None and layer(target) is not None and layer(target) > layer(source)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    # a package's __init__ re-exporting its own modules is not a cycle
    graph = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in graph.items()}
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_see_a_violation(tmp_path):
    """The checks above must not pass vacuously: a data module importing training is caught."""
    bad = tmp_path / "captioner" / "data"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text("from captioner.training.trainer import train\n")
    found = imported_modules(bad / "x.py", {"captioner.training.trainer", "captioner.data.x"})
    assert found == {"captioner.training.trainer"}
    assert layer("captioner.data.x") < layer("captioner.training.trainer")


def captioner_imports(source: str) -> list[tuple[str, str | None]]:
    """(module, name) for every `import captioner...` / `from captioner... import name` in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "captioner"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "captioner":
            found += [(node.module, alias.name) for alias in node.names]
    return found


def notebook_and_script_sources():
    """Code outside the package that users run: notebooks, benchmarks, the root scripts, the docs' snippets."""
    import json

    root = PACKAGE.parent
    for path in sorted(root.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        # notebook magics are not Python
        yield path, "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    for path in sorted([*root.glob("bench/*.py"), *root.glob("*.py"), *root.glob("tests/*.py")]):
        yield path, path.read_text(encoding="utf-8")


def test_notebooks_and_scripts_import_what_exists():
    """A moved module breaks notebooks silently until someone runs them (it did once: `from captioner import
    metrics`); this finds it in a second, without TensorFlow."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    missing = []
    for path, source in notebook_and_script_sources():
        for module, name in captioner_imports(source):
            if module not in modules:
                missing.append(f"{path.name}: no module {module}")
            elif name is not None and f"{module}.{name}" not in modules and not defines(module, name):
                missing.append(f"{path.name}: {module} has no {name}")
    assert not missing, "\n".join(missing)


def defines(module: str, name: str) -> bool:
    """Whether `module`'s source binds `name` at top level (def, class, assignment or import)."""
    path = PACKAGE.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name.split(".")[0]) == name for alias in node.names):
                return True
    return False
