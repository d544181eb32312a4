"""A recording stand-in for the `launch` / `launch_ros` APIs that dual_arm.launch.py uses.

`launch` cannot be installed from PyPI here, so the launch file is evaluated against these
classes instead: they record what the file declares, and `evaluate_launch_file` then does what
`ros2 launch` does with it — apply argument overrides to the declared defaults, set the
environment, run OpaqueFunctions — and returns the nodes launch would start.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class LaunchContext:
    configurations: dict[str, str]


class LaunchDescription:
    def __init__(self, entities: list[Any]):
        self.entities = list(entities)


@dataclass
class DeclareLaunchArgument:
    name: str
    default_value: str | None = None
    description: str = ""
    choices: list[str] | None = None


@dataclass
class SetEnvironmentVariable:
    name: str
    value: str


@dataclass
class OpaqueFunction:
    function: Callable[..., list[Any]]


@dataclass
class LaunchConfiguration:
    variable_name: str

    def perform(self, context: LaunchContext) -> str:
        return context.configurations[self.variable_name]


@dataclass
class Node:
    package: str
    executable: str
    name: str | None = None
    namespace: str | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    output: str = "log"


@dataclass
class EvaluatedLaunch:
    arguments: list[DeclareLaunchArgument]
    environment: dict[str, str]
    nodes: list[Node]


def _install_modules() -> None:
    modules = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {
            "DeclareLaunchArgument": DeclareLaunchArgument,
            "OpaqueFunction": OpaqueFunction,
            "SetEnvironmentVariable": SetEnvironmentVariable,
        },
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module


def evaluate_launch_file(path: Path, overrides: dict[str, str] | None = None) -> EvaluatedLaunch:
    """Load a launch file against the stand-in API and expand it as `ros2 launch path k:=v` would."""
    saved = {
        name: sys.modules.get(name)
        for name in ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")
    }
    _install_modules()
    try:
        spec = importlib.util.spec_from_file_location("launch_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
        configurations = {a.name: a.default_value for a in declared}
        configurations.update(overrides or {})
        for argument in declared:
            value = configurations[argument.name]
            if argument.choices and value not in argument.choices:
                raise ValueError(f"argument {argument.name}={value!r} not in {argument.choices}")
        context = LaunchContext(configurations)
        environment, nodes = {}, []
        for entity in description.entities:
            if isinstance(entity, SetEnvironmentVariable):
                environment[entity.name] = entity.value
            elif isinstance(entity, OpaqueFunction):
                nodes += [e for e in entity.function(context) if isinstance(e, Node)]
            elif isinstance(entity, Node):
                nodes.append(entity)
        return EvaluatedLaunch(declared, environment, nodes)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
