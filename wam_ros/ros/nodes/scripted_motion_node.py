"""scripted_motion_node: a scripted policy. Publishes ActionChunks of smooth joint motion
(ScriptedMotion), or with task:=<name> the scripted expert's plan for that benchmark episode
(wam_ros.sim.expert; the same task, condition and seed as the simulator's), on policy/chunk,
which the supervisor checks and forwards to the arms: the command stream a recorder sees from a
teleoperator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node

from wam_ros.config import ROBOTS, load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.msg import ActionChunk, GateState
from wam_ros.robots.urdf import generate_urdf
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import COMMAND_QOS
from wam_ros.sim.expert import plan_expert
from wam_ros.sim.motion import MotionConfig, ScriptedMotion
from wam_ros.sim.tasks import CONDITIONS, PERTURBATIONS, TASKS, EpisodeSpec, sample_episode


@dataclass(frozen=True)
class ScriptedMotionParams:
    robot: str = param("agilex", "Robot setup whose joints are commanded", choices=ROBOTS)
    chunk_rate: float = param(2.0, "Chunks per second (ROS time)", range_=(0.1, 100.0))
    horizon: int = param(15, "Steps per chunk", range_=(1, 1000))
    control_rate: float = param(15.0, "Steps per second within a chunk (Hz)", range_=(1.0, 1000.0))
    amplitude: float = param(0.35, "Joint motion amplitude (rad)", range_=(0.0, 1.5))
    period: float = param(6.0, "Base period of the motion (s)", range_=(0.5, 120.0))
    task: str = param(
        "", "Benchmark task whose scripted expert runs (empty: the smooth demo motion)", choices=("", *TASKS)
    )
    condition: str = param("clean", "Task condition (must match the simulator's)", choices=CONDITIONS)
    seed: int = param(
        0, "Episode seed (must match the simulator's); also seeds the expert's noise", range_=(0, 2**31 - 1)
    )
    perturbation: str = param(
        "none",
        "Task perturbation (must match the simulator's); the expert grasps a slipped object again",
        choices=PERTURBATIONS,
    )


class ScriptedMotionNode(Node):
    def __init__(self, node_name: str = "scripted_motion", **kwargs):
        super().__init__(node_name, **kwargs)
        p = self.params = declare_params(self, ScriptedMotionParams)
        robot = load_robot_config(p.robot)
        self.dt = 1.0 / p.control_rate
        task, condition, seed, perturbation = p.task, p.condition, p.seed, p.perturbation
        if task:
            setup = sample_episode(EpisodeSpec(task, robot.name, condition, seed, perturbation), robot)
            self.motion = plan_expert(robot, Kinematics(generate_urdf(robot)), setup, np.random.default_rng(seed))
            self.get_logger().info(
                f"expert for {task} ({condition}, seed {seed}, perturbation {perturbation}): "
                f"{self.motion.duration:.1f} s"
            )
        else:
            self.motion = ScriptedMotion(robot, MotionConfig(amplitude=p.amplitude, period=p.period))
        names = self.motion.joint_names
        self._arm = [i for i, n in enumerate(names) if not n.endswith("_gripper")]
        self._grippers = [i for i, n in enumerate(names) if n.endswith("_gripper")]
        self._arm_names = [names[i] for i in self._arm]
        self._gripper_names = [names[i] for i in self._grippers]
        self._gripper_max = np.array([robot.joint_limits()[n][1] for n in self._gripper_names])
        self.pub = self.create_publisher(ActionChunk, "policy/chunk", COMMAND_QOS)
        self._start_ns: int | None = None
        self._chunk_id = 0
        # ROS time (sim time under use_sim_time), so the motion follows the simulator's clock.
        self.create_timer(1.0 / p.chunk_rate, self._tick)

    def _tick(self) -> None:
        now = self.get_clock().now()
        if now.nanoseconds == 0:
            return  # no /clock received yet
        if self._start_ns is None:
            self._start_ns = now.nanoseconds
        t0 = (now.nanoseconds - self._start_ns) * 1e-9
        rows = np.array([self.motion.targets(t0 + k * self.dt) for k in range(self.params.horizon)])
        self._chunk_id += 1
        msg = ActionChunk(
            chunk_id=self._chunk_id,
            action_space=ActionChunk.ACTION_SPACE_JOINT_POSITION,
            joint_names=self._arm_names,
            horizon=self.params.horizon,
            dt=self.dt,
            positions=rows[:, self._arm].ravel().tolist(),
            gripper_names=self._gripper_names,
            # the plan's keyframes lie within [0, max]; its interpolation can round past them
            gripper=np.clip(rows[:, self._grippers] / self._gripper_max, 0.0, 1.0).ravel().tolist(),
            expert=GateState.EXPERT_SCRIPTED,
            value=math.nan,
        )
        msg.header.stamp = now.to_msg()
        msg.execute_from = now.to_msg()
        self.pub.publish(msg)


NODE_CLASS = ScriptedMotionNode


def main(args: list[str] | None = None) -> int:
    return run_node(ScriptedMotionNode, args)
