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


def param(default: Any, description: str, *, range_: tuple[float, float] | None = None,
          choices: Sequence[str] | None = None, read_only: bool = True) -> Any:
    """A dataclass field that is a node parameter (list defaults are copied per instance)."""
    metadata = {"description": description, "range": range_, "choices": tuple(choices) if choices else None,
                "read_only": read_only}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declare_params(node: Node, cls: type[T], prefix: str = "", *,
                   defaults: Mapping[str, Any] | None = None) -> T:
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
        if prefix + f.name in defaults:
            default = defaults[prefix + f.name]
            default = default(values) if callable(default) else default
        values[f.name] = declare(node, prefix + f.name, default, f.metadata["description"],
                                 read_only=f.metadata["read_only"], range_=f.metadata["range"],
                                 choices=f.metadata["choices"])
    return cls(**values)
