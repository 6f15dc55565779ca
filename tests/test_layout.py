"""The shape of the code: the dependency arrow points one way and the modules form no import cycle; commands
import only what they need."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def runtime_nodes(tree: ast.AST):
    """Every node of `tree` that runs: functions' lazy imports included, `if TYPE_CHECKING:` blocks left out."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def module_imports() -> dict[str, set[str]]:
    """Imports between the project's modules (anywhere in a module, lazy ones too), by module name."""
    graph = {}
    for path in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("architectures/*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        found = set()
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                named = {f"{base}.{alias.name}" for alias in node.names}
                # `from . import sibling` names its package, which is already importing: an edge to the sibling only
                found |= named if name.startswith(base + ".") else {base} | named
        graph[name] = found
    return {name: {i for i in imports if i in graph and i != name} for name, imports in graph.items()}


def test_architectures_never_import_the_harness():
    graph = module_imports()
    assert not [(name, i) for name, imports in graph.items() if name.startswith("architectures") for i in imports if i.startswith("bench")]


def test_no_import_cycles():
    graph = module_imports()
    state: dict[str, str] = {}

    def visit(name, path):
        state[name] = "open"
        for child in sorted(graph[name]):
            assert state.get(child) != "open", " -> ".join([*path, name, child])
            if child not in state:
                visit(child, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_archbench_list_imports_no_report_gate_or_data_parallel_code():
    probe = (
        "import sys; from bench.cli import main; main(['list']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'scipy', 'matplotlib') "
        "or m.startswith(('torch.distributed.elastic', 'torch.distributed.launcher', 'bench.parallel.', "
        "'bench.report', 'bench.compare', 'bench.runner'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
