"""Declare parameters with descriptors (type, range, read-only) in one call per parameter."""

from __future__ import annotations

from typing import Any, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from wam_ros.config import ConfigError


def declare(node: Node, name: str, default: Any, description: str, *, read_only: bool = True,
            range_: tuple[float, float] | None = None, choices: Sequence[str] | None = None) -> Any:
    """Declare `name` and return its value; a value outside `choices` raises ConfigError."""
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        desc.additional_constraints = f"one of: {', '.join(choices)}"
    if range_ is not None:
        if isinstance(default, int) and not isinstance(default, bool):
            desc.integer_range = [IntegerRange(from_value=int(range_[0]), to_value=int(range_[1]), step=1)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(range_[0]), to_value=float(range_[1]), step=0.0)]
    try:
        value = node.declare_parameter(name, default, desc).value
    except Exception as exc:  # rclpy raises InvalidParameterValueException etc. for out-of-range overrides
        raise ConfigError(f"parameter {name}: {exc}") from None
    if choices and value not in choices:
        raise ConfigError(f"parameter {name}: unknown value {value!r}; allowed: {', '.join(choices)}")
    return value
