"""The package's shape: no import cycles between its modules, and no module-level name defined twice."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tfattn"


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path, modules, top_level_only):
    """The tfattn modules `path` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tfattn.models import encoders` imports the submodule when there is one.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _cycles(graph):
    """Every import cycle of `graph` (module -> imported modules), each as a list of modules."""
    cycles, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(stack[stack.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def _graph(top_level_only):
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        imported = _imports(path, modules, top_level_only)
        # A package's own __init__ importing its submodules is how packages work, not a cycle.
        graph[name] = {module for module in imported if module != name and not name.startswith(module + ".")}
    return graph


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_import_cycles_at_module_level():
    assert _cycles(_graph(top_level_only=True)) == []


def test_no_import_cycles_even_through_function_level_imports():
    assert _cycles(_graph(top_level_only=False)) == []


# tfattn.keras3.layers gives the tf-keras layers' names to their Keras 3 twins on purpose: the
# same import line works in either Keras. Their math is shared (tfattn.attention_math).
KERAS3_TWINS = "tfattn.keras3.layers"


def test_no_module_level_name_is_defined_twice():
    """A class, function or constant is defined in one module; others import it."""
    definitions = defaultdict(list)
    for name, path in _modules().items():
        if name == KERAS3_TWINS:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                targets = [node.name]
            elif isinstance(node, ast.Assign):
                targets = [target.id for target in node.targets if isinstance(target, ast.Name)]
            else:
                continue
            for target in targets:
                if target not in ("__all__",) and not target.startswith("_"):
                    definitions[target].append(name)
    repeated = {target: modules for target, modules in definitions.items() if len(modules) > 1}
    assert repeated == {}


def test_keras3_twins_define_only_names_of_the_tf_keras_layers():
    """What the Keras 3 module defines is a twin of a `tfattn.layers` name, nothing of its own."""
    import tfattn.keras3.layers as keras3_layers
    import tfattn.layers as tf_keras_layers

    assert set(keras3_layers.__all__) <= set(tf_keras_layers.__all__)
