"""DESIGN's layers, read from the imports of every module of the package."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "longtail"

#: The layers from the bottom; a module imports only from its own layer and those below.
LAYERS = [
    {"files", "errors", "hardware", "progress", "checkpoints", "curves"},
    {"optim", "models", "losses", "data"},
    {"evaluation"},
    {"methods"},
    {"config"},
    {"run"},
    {"predict"},
    {"cli", "__main__"},
]


def layer_of(module: str) -> int:
    """The layer of ``longtail.<top>...``; the package's face (``longtail``) is below all."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every ``longtail`` module that ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("longtail"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("longtail")}
    return found


MODULES = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert len(MODULES) > 30
    for module in MODULES:
        layer_of(module)  # raises StopIteration for a module that DESIGN does not place


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_upward(module):
    upward = [name for name in MODULES[module] if layer_of(name) > layer_of(module)]
    assert not upward, f"{module} (layer {layer_of(module)}) imports {upward}"


def test_no_import_cycles():
    def known(name):  # `from longtail.data import x` names the package, `import longtail.data.module` a file
        return name if name in MODULES else name.rsplit(".", 1)[0]

    graph = {module: {known(name) for name in names} - {module} for module, names in MODULES.items()}
    state = {}

    def visit(module, path):
        state[module] = "open"
        for name in graph.get(module, ()):
            assert state.get(name) != "open", f"import cycle: {' -> '.join(path + [module, name])}"
            if name not in state:
                visit(name, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_rule_sees_an_upward_import():
    # the check itself can fail: a data module importing the config is caught
    assert layer_of("longtail.config") > layer_of("longtail.data.readers")
