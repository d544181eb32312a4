"""Node parameters with descriptors (type, range, choices, read-only).

A node describes its parameters as a frozen dataclass whose fields carry their description,
range and choices (`param(...)`); `declare_params` declares them all and returns an instance, so
the node reads `self.params.rollback.delta`, typed, instead of a string key. A field whose type is
itself such a dataclass becomes a group: its parameters are declared as `group.name`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Sequence, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from wam_ros.config import ConfigError

T = TypeVar("T")


def param(
    default: Any,
    description: str,
    *,
    range_: tuple[float, float] | None = None,
    choices: Sequence[str] | None = None,
    read_only: bool = True,
) -> Any:
    """A dataclass field that is a node parameter (list defaults are copied per instance)."""
    metadata = {
        "description": description,
        "range": range_,
        "choices": tuple(choices) if choices else None,
        "read_only": read_only,
    }
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declare_params(node: Node, cls: type[T], prefix: str = "", *, defaults: Mapping[str, Any] | None = None) -> T:
    """Declare every parameter of the dataclass `cls` on `node` (groups as `group.name`) and return
    the values as an instance of `cls`.

    `defaults` (by full parameter name) replaces a field's default where it is only known at run
    time: the node's name, or, given as a callable, a default computed from the values of the
    fields declared before it in the same group (e.g. one delay per configured camera)."""
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            values[f.name] = declare_params(node, kind, f"{prefix}{f.name}.", defaults=defaults)
            continue
        if "description" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: not declared with param(...)")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        name = prefix + f.name
        if name in defaults:
            default = defaults[name](values) if callable(defaults[name]) else defaults[name]
        try:
            value = node.declare_parameter(name, default, _descriptor(default, f.metadata)).value
        except Exception as exc:  # rclpy raises InvalidParameterValueException etc. for out-of-range overrides
            raise ConfigError(f"parameter {name}: {exc}") from None
        choices = f.metadata["choices"]
        if choices and value not in choices:
            raise ConfigError(f"parameter {name}: unknown value {value!r}; allowed: {', '.join(choices)}")
        values[f.name] = value
    return cls(**values)


def _descriptor(default: Any, metadata: Mapping[str, Any]) -> ParameterDescriptor:
    """The ROS descriptor of a param(...) field: description, read-only, choices, range."""
    desc = ParameterDescriptor(description=metadata["description"], read_only=metadata["read_only"])
    if metadata["choices"]:
        desc.additional_constraints = f"one of: {', '.join(metadata['choices'])}"
    low_high = metadata["range"]
    if low_high is not None:
        if isinstance(default, int) and not isinstance(default, bool):
            desc.integer_range = [IntegerRange(from_value=int(low_high[0]), to_value=int(low_high[1]), step=1)]
        else:
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(low_high[0]), to_value=float(low_high[1]), step=0.0)
            ]
    return desc
