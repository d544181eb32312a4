"""`wam-ros bringup`: every wam_ros node of the system description in one process, one executor."""

from __future__ import annotations

import importlib
import os
from dataclasses import replace
from importlib import resources

from rclpy.node import Node
from rclpy.parameter import Parameter

from wam_ros.ros.system import NodeSpec, dds_environment

# ROS packages' nodes that bring-up replaces by this package's equivalent (same name, parameters
# and topics), so that a pip install without them still publishes what viewers need
IN_PROCESS_SUBSTITUTES = {("robot_state_publisher", "robot_state_publisher"): "state_publisher_node"}


def console_scripts() -> dict[str, str]:
    """executable name -> module, from the list that also feeds setup.py and CMakeLists.txt."""
    entries = {}
    for line in resources.files("wam_ros").joinpath("console_scripts.txt").read_text().splitlines():
        if "=" in line:
            name, target = (part.strip() for part in line.split("=", 1))
            entries[name] = target.split(":")[0]
    return entries


def apply_environment() -> None:
    """Set the DDS environment before rclpy.init, as the launch file does."""
    os.environ.update(dds_environment(os.environ))


def create_node(spec: NodeSpec) -> Node:
    modules = console_scripts()
    if spec.executable not in modules:
        raise KeyError(f"no wam_ros executable {spec.executable!r}; known: {', '.join(modules)}")
    node_class = importlib.import_module(modules[spec.executable]).NODE_CLASS
    cli_args = ["--ros-args"] + [a for src, dst in spec.remappings for a in ("-r", f"{src}:={dst}")]
    return node_class(
        node_name=spec.name,
        namespace=spec.namespace or None,
        parameter_overrides=[Parameter(k, value=v) for k, v in spec.parameters.items()],
        cli_args=cli_args if spec.remappings else None,
    )


def create_nodes(specs: list[NodeSpec]) -> tuple[list[Node], list[NodeSpec]]:
    """Instantiate the in-process nodes; return them and the external specs that were skipped."""
    nodes, skipped = [], []
    try:
        for spec in specs:
            substitute = IN_PROCESS_SUBSTITUTES.get((spec.package, spec.executable))
            if spec.in_process or substitute:
                nodes.append(create_node(replace(spec, package="wam_ros", executable=substitute or spec.executable)))
            else:
                skipped.append(spec)
    except Exception:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes, skipped
