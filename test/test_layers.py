"""The package's layers, read from its import statements (every import, also those inside
functions): no module imports itself back through others, the ROS-free core never imports rclpy
or the ROS layer, datasets never import the model, and the model never imports the supervisor."""

from __future__ import annotations

import ast
from pathlib import Path

# the sources in this checkout, not the installed package: that one also holds the message and
# service modules rosidl generates (wam_ros.msg, wam_ros.srv), whose modules import each other
PACKAGE = Path(__file__).resolve().parents[1] / "wam_ros"
# where ROS lives: the nodes and their helpers, and the programs that bring nodes up
ROS_LAYER = (
    "wam_ros.ros",
    "wam_ros.perf",
    "wam_ros.benchmark.graph",
    "wam_ros.benchmark.run",
    "wam_ros.cli",
    "wam_ros.demo",
    "wam_ros.doctor",
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the wam_ros modules it imports, module -> the other top-level packages it imports)."""
    modules = _modules()
    internal, external = {}, {}
    for name, path in modules.items():
        deps, others = set(), set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            for target in targets:
                if target.split(".")[0] == "wam_ros":
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target != name and target != "wam_ros":
                        deps.add(target)
                else:
                    others.add(target.split(".")[0])
        internal[name], external[name] = deps, others
    return internal, external


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_module_imports_itself_back():
    internal, _ = import_graph()
    assert cycles(internal) == []


def test_the_ros_free_core_imports_neither_rclpy_nor_the_ros_layer():
    internal, external = import_graph()
    core = [m for m in internal if not _in(m, ROS_LAYER)]
    assert len(core) > 40  # the scan sees the package
    offenders = {m: sorted(d for d in internal[m] if _in(d, ROS_LAYER)) for m in core}
    assert {m: d for m, d in offenders.items() if d} == {}
    assert sorted(m for m in core if external[m] & {"rclpy", "launch", "launch_ros"}) == []


def test_datasets_never_import_the_model_and_the_model_never_imports_the_supervisor():
    internal, _ = import_graph()
    assert {
        m: sorted(d for d in deps if _in(d, ("wam_ros.model",)))
        for m, deps in internal.items()
        if _in(m, ("wam_ros.data",)) and any(_in(d, ("wam_ros.model",)) for d in deps)
    } == {}
    assert (
        sorted(m for m, deps in internal.items() if _in(m, ("wam_ros.model",)) and "wam_ros.control.supervisor" in deps)
        == []
    )


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
