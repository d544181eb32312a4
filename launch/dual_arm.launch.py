"""Bring up a dual-arm WAM system: `ros2 launch wam_ros dual_arm.launch.py robot:=franka rviz:=true`.

The node list comes from wam_ros.ros.system.describe_system, the same description that
`wam-ros bringup` runs in one process. `ros2 launch wam_ros dual_arm.launch.py --show-args`
lists every argument with its description and allowed values.
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from wam_ros.ros.system import LAUNCH_ARGUMENTS, SystemOptions, dds_environment, describe_system


def _nodes(context, *args, **kwargs):
    values = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in LAUNCH_ARGUMENTS}
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            parameters=[spec.parameters],
            remappings=list(spec.remappings),
            arguments=list(spec.arguments),
            output="screen",
        )
        for spec in describe_system(SystemOptions.from_arguments(values))
    ]


def generate_launch_description():
    actions = [SetEnvironmentVariable(name, value) for name, value in dds_environment(os.environ).items()]
    actions += [
        DeclareLaunchArgument(
            arg.name,
            default_value=arg.default,
            description=arg.description,
            **({"choices": list(arg.choices)} if arg.choices else {}),
        )
        for arg in LAUNCH_ARGUMENTS
    ]
    actions.append(OpaqueFunction(function=_nodes))
    return LaunchDescription(actions)
