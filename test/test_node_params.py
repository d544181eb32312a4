"""declare_params: a node's parameters from a dataclass, declared with descriptors and read back typed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from wam_ros.config import ConfigError
from wam_ros.ros.params import declare_params, param

pytestmark = pytest.mark.ros


@dataclass(frozen=True)
class Limits:
    delta: float = param(0.2, "Tolerance", range_=(0.0, 1.0))
    window: list[float] = param([0.0, 1.0], "Valid range")


@dataclass(frozen=True)
class Example:
    mode: str = param("rtc", "Hand-over", choices=("rtc", "naive"))
    steps: int = param(4, "Passes", range_=(1, 100))
    enabled: bool = param(True, "On/off")
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Undeclared:
    plain: int = 3


@pytest.fixture
def make_node():
    rclpy.init(args=["node-params-test"])
    nodes = []

    def make(**overrides) -> Node:
        node = Node(f"params_{len(nodes)}", parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown()


def test_defaults_and_overrides_come_back_typed_with_groups_as_dotted_names(make_node):
    assert declare_params(make_node(), Example) == Example()
    node = make_node(**{"mode": "naive", "steps": 9, "limits.delta": 0.5, "limits.window": [0.1, 0.9]})
    params = declare_params(node, Example)
    assert params == Example("naive", 9, True, Limits(0.5, [0.1, 0.9]))
    with pytest.raises(AttributeError):
        params.steps = 3  # frozen: a node cannot change its configuration behind the parameter server's back
    descriptor = node.describe_parameter("limits.delta")
    assert descriptor.description == "Tolerance" and descriptor.read_only
    assert descriptor.floating_point_range[0].to_value == 1.0
    assert node.describe_parameter("steps").integer_range[0].from_value == 1
    assert node.describe_parameter("mode").additional_constraints == "one of: rtc, naive"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mode": "blend"}, "parameter mode: unknown value 'blend'; allowed: rtc, naive"),
        ({"steps": 0}, "parameter steps: "),
        ({"limits.delta": 2.0}, "parameter limits.delta: "),
    ],
)
def test_bad_values_are_refused_by_name(make_node, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        declare_params(make_node(**overrides), Example)


@dataclass(frozen=True)
class Cameras:
    cameras: list[str] = param(["head"], "Cameras")
    delays: list[float] = param([0.0], "One delay per camera (s)")
    name: str = param("", "Defaults to the node's name")


def test_defaults_known_only_at_run_time_a_value_or_one_computed_from_earlier_fields(make_node):
    def one_per_camera(values: dict) -> list[float]:
        return [0.0] * len(values["cameras"])

    defaults = {"delays": one_per_camera, "name": "front"}
    params = declare_params(make_node(cameras=["head", "left", "right"]), Cameras, defaults=defaults)
    assert params == Cameras(["head", "left", "right"], [0.0, 0.0, 0.0], "front")
    # a value given by the user wins over the computed default
    params = declare_params(make_node(cameras=["head", "left"], delays=[0.01, 0.02]), Cameras, defaults=defaults)
    assert params.delays == [0.01, 0.02] and params.name == "front"


def test_a_field_without_a_description_is_a_programming_error(make_node):
    with pytest.raises(TypeError, match=r"Undeclared.plain: not declared with param"):
        declare_params(make_node(), Undeclared)
