"""The shape of the code: the dependency arrow points one way and the modules form no import cycle; commands
import only what they need, and reading results imports neither torch nor the code that runs models."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def module_imports() -> dict[str, set[str]]:
    """Imports between the project's modules, by module name: anywhere in a module, lazy ones in functions and
    type-only ones under `if TYPE_CHECKING:` too (a module named only for its types is still depended on)."""
    graph = {}
    for path in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("architectures/*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
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
        "or m.startswith(('torch.distributed.elastic', 'torch.distributed.launcher', 'bench.run.parallel.', "
        "'bench.results.report', 'bench.gate.compare', 'bench.gate.ab', 'bench.run.runner'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_reading_results_imports_neither_torch_nor_the_registry_nor_the_running_code(tmp_path):
    """`archbench report RUN`, `archbench compare A B`, `archbench history add` and `history check` in a fresh
    interpreter, on two tiny runs of one commit."""
    for args in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "c"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for run, speed in (("a", 100.0), ("b", 101.0)):
        (tmp_path / run).mkdir()
        records = [
            {"record_version": 8, "run_id": run, "architecture": name, "task": "classify", "dataset": "synthetic",
             "status": "ok", "config_id": "c", "mode": "fp32", "seed": seed, "test_accuracy": 0.5 + seed / 100,
             "train_throughput": speed + seed, "train_throughput_repeats": [speed + seed] * 3, "params": 10,
             "git_commit": head, "record_id": f"{run}-{name}-{seed}"}
            for name in ("x", "y") for seed in (0, 1)
        ]
        (tmp_path / run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    commands = {
        "report": ["report", str(tmp_path / "a"), "--output", str(tmp_path / "report")],
        "compare": ["compare", str(tmp_path / "a"), str(tmp_path / "b")],
        "history add": ["history", "add", str(tmp_path / "a"), str(tmp_path / "b"), "--history", str(tmp_path / "h")],
        "history check": ["history", "check", "--history", str(tmp_path / "h"), "--repo", str(tmp_path)],
    }
    forbidden = ("torch", "architectures", "bench.run.runner", "bench.tasks.loop")
    for command, argv in commands.items():
        probe = (
            "import contextlib, io, sys; from bench.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): code = main({argv!r})\n"
            f"print(code, sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r} or m.startswith({forbidden!r})))"
        )
        done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
        assert done.stdout.splitlines()[-1] == "0 []", (command, done.stdout, done.stderr)


def rebound_parameters(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each assignment in a function that rebinds one of its parameters to a value not made from it
    (`x, train = ..., TensorSource(...)` where `train` was a flag); a default filled in under `if name is None:`
    is not one."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        arguments = function.args
        parameters = {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
        defaults = {
            id(assign)
            for branch in ast.walk(function)
            if isinstance(branch, ast.If) and _is_none_test(branch.test)
            for assign in ast.walk(branch)
            if isinstance(assign, ast.Assign)
        }
        for node in ast.walk(function):
            if not isinstance(node, ast.Assign) or id(node) in defaults:
                continue
            uses = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                found += [(node.lineno, n.id) for n in names if isinstance(n, ast.Name) and n.id in parameters - uses]
    return found


def _is_none_test(test: ast.expr) -> bool:
    return isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Is) and getattr(test.comparators[0], "value", 0) is None


def test_no_function_rebinds_a_parameter_to_something_else():
    assert rebound_parameters(ast.parse("def run(train: bool = True):\n    x, train = 1, object()\n")) == [(2, "train")]
    kept = "def f(model, low, high, text=None):\n    model = prepare(model)\n    low, high = 1 / high, 1 / low\n"
    assert rebound_parameters(ast.parse(kept + "    if text is None:\n        text = read()\n")) == []
    found = [
        f"{path.relative_to(ROOT)}:{line} rebinds {name}"
        for path in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("architectures/*.py")]
        for line, name in rebound_parameters(ast.parse(path.read_text()))
    ]
    assert not found
