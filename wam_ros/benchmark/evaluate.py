"""Closed-loop evaluation in one process (ROS-free): the nodes' core code without DDS.

One episode wires what the node graph wires, through the same classes the nodes call: SimWorld
and its TaskMonitor (sim_node), the checkpoint behind PolicyLoop (policy_node: observation gating,
chunk ids, seeds, resample, refusals; DeployedPolicy with real-time chunking), the safety and
rollback Supervisor (supervisor_node: chunk with its value, Command.offsets for the trajectory) and
the limited trajectory Bridge into the simulated arms (sim_node). What it adds is the clock. Time is simulated time. While the model thinks, the simulation advances by the
measured inference time (times `latency_scale`): the arms keep executing the current chunk, as
on a robot, so slow inference costs success here just as it would there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from wam_ros.config import RobotConfig
from wam_ros.control.chunking import ChunkScheduler
from wam_ros.control.commands import Command
from wam_ros.control.supervisor import (
    Rejection,
    ResampleRequest,
    RollbackConfig,
    RollbackFired,
    Supervisor,
    SupervisorConfig,
)
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.model.deploy import ChunkReady, DeployConfig, DeployedPolicy, chunking_config
from wam_ros.model.policy import WorldActionPolicy
from wam_ros.model.policy_loop import PolicyLoop
from wam_ros.robots.actions import ActionConverter
from wam_ros.robots.bridge import Bridge, BridgeLimits, CommandRejected
from wam_ros.robots.sim import SimBackend
from wam_ros.robots.urdf import generate_urdf
from wam_ros.sim.tasks import EpisodeSpec, TaskMonitor, get_task, setup_world
from wam_ros.sim.world import SimConfig, SimWorld


@dataclass(frozen=True)
class EvalOptions:
    """One evaluated variant (the ablations switch these)."""

    rollback: bool = True
    expert: str = "gated"  # gated | predictive | reactive
    ans: bool = True  # actions final after T_a passes; False: synchronous, T_a = T_O
    depth: bool = True  # the depth branch (runs with the video)
    video: bool = False  # finish the predicted video each chunk (the 4D cloud)
    rollback_delta: float = 0.2
    max_seconds: float = 25.0  # sim time before an episode counts as failed
    latency_scale: float = 1.0  # sim seconds that pass per wall second of inference
    physics_rate: float = 100.0  # Hz, as sim_node


@dataclass
class EpisodeResult:
    spec: EpisodeSpec
    success: bool
    time_to_success: float  # s of sim time; NaN on failure
    stage: int  # stages completed
    rollbacks: int
    rollback_recovered: bool  # a rollback fired and the episode then succeeded
    perturbed: bool
    latency_ms: list[float] = field(default_factory=list)  # observation -> actions final, per chunk
    chunks: int = 0
    rejected: int = 0  # chunks the supervisor or the bridge refused
    last_rejection: str = ""
    final_mode: str = ""
    wall_s: float = 0.0

    def row(self) -> dict:
        return {
            "task": self.spec.task,
            "condition": self.spec.condition,
            "seed": self.spec.seed,
            "perturbation": self.spec.perturbation,
            "success": self.success,
            "time_to_success": None if math.isnan(self.time_to_success) else round(self.time_to_success, 2),
            "stage": self.stage,
            "rollbacks": self.rollbacks,
            "rollback_recovered": self.rollback_recovered,
            "perturbed": self.perturbed,
            "chunks": self.chunks,
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
            "latency_ms_median": round(float(np.median(self.latency_ms)), 1) if self.latency_ms else None,
            "final_mode": self.final_mode,
            "wall_s": round(self.wall_s, 1),
        }


class ClosedLoop:
    """Runs episodes of one checkpoint on one robot; the world and kinematics are built once."""

    def __init__(self, policy: WorldActionPolicy, robot: RobotConfig, sim: SimConfig | None = None):
        self.policy, self.robot = policy, robot
        urdf = generate_urdf(robot)
        self.world = SimWorld(robot, urdf, sim)
        self.kinematics = Kinematics(urdf)
        self.names = list(robot.joint_names)

    def close(self) -> None:
        self.world.close()

    def _supervisor(self, options: EvalOptions) -> Supervisor:
        rollback = RollbackConfig(enabled=options.rollback, delta=options.rollback_delta)
        # Inference pauses are simulated (the world waits), so no stream goes stale; the watchdogs
        # are the node's business and are tested there.
        config = SupervisorConfig.for_robot(
            self.robot,
            clamp=True,
            rollback=rollback,
            timeouts={"joint_states": 0.0, "observations": 0.0, "value": 0.0, "chunks": 0.0},
        )
        return Supervisor(
            config,
            lambda q, frames: self.kinematics.frame_poses(q, list(frames)),
            ActionConverter(self.robot, self.kinematics),
        )

    def run(self, spec: EpisodeSpec, options: EvalOptions, seed: int = 0) -> EpisodeResult:
        wall_start = time.perf_counter()
        world, names = self.world, self.names
        monitor = TaskMonitor(world, setup_world(world, spec))
        cfg = self.policy.cfg
        deploy = DeployConfig(
            action_steps=cfg.action_steps if options.ans else cfg.video_steps,
            video_steps=cfg.video_steps,
            video=options.video,
            depth=options.depth,
            expert=options.expert,
        )
        deployed = DeployedPolicy(self.policy, self.robot, ChunkScheduler(chunking_config(self.policy)), deploy)
        # the instruction the recorder stored with the demonstrations; observations are rendered
        # when an inference starts, so none is ever stale
        loop = PolicyLoop(deployed, get_task(spec.task).instruction, max_observation_age=math.inf, seed=seed)
        supervisor = self._supervisor(options)
        bridge = Bridge([SimBackend(world)], BridgeLimits.for_robot(self.robot, names), names, state_timeout=math.inf)
        bridge.configure(world.time)
        bridge.activate(world.time)
        supervisor.start_episode(world.time)
        control_dt, physics_dt = deployed.scheduler.config.dt, 1.0 / options.physics_rate
        pending: list[tuple[float, ChunkReady]] = []  # (sim time it reaches the supervisor, chunk)
        result = EpisodeResult(spec, False, math.nan, 0, 0, False, False)
        next_control = world.time

        def dispatch(events: list, now: float) -> None:
            """What supervisor_node does with the core's events, and the policy node with the
            supervisor's state and its resample requests."""
            for event in events:
                if isinstance(event, Command):
                    try:
                        bridge.set_trajectory(event.joint_names, now + event.offsets(), event.positions, now)
                    except CommandRejected as exc:
                        result.rejected += 1
                        result.last_rejection = f"bridge: {exc}"
                elif isinstance(event, Rejection):
                    result.rejected += 1
                    result.last_rejection = event.reason
                elif isinstance(event, RollbackFired):
                    result.rollbacks += 1
                elif isinstance(event, ResampleRequest):
                    reply = loop.resample(event.joint_names, event.positions.tolist())
                    dispatch(supervisor.resample_reply(now, reply.accepted, reply.chunk_id, reply.message), now)
            loop.supervisor_state(supervisor.mode.name, supervisor.last_rejected_chunk_id)

        while world.time < options.max_seconds:
            now = world.time
            if now + 1e-9 >= next_control:
                next_control += control_dt
                positions = world.joint_positions()
                dispatch(supervisor.update_joint_state(now, names, positions), now)
                loop.update_joints(names, list(positions))
                supervisor.update_observation(now)
                while pending and pending[0][0] <= now + 1e-9:
                    _, ready = pending.pop(0)
                    dispatch(supervisor.submit_chunk(now, deployed.command(ready)), now)
                    result.chunks += 1
                dispatch(supervisor.tick(now), now)
                if not pending and loop.due(now):
                    self._infer(loop, now, pending, result, options)
            bridge.step(world.time, physics_dt)
            world.step(physics_dt)
            status = monitor.update()
            if status.success:
                break
        status = monitor.status
        result.success, result.time_to_success = status.success, status.time_to_success
        result.stage, result.perturbed = status.stage, status.perturbed
        result.rollback_recovered = result.rollbacks > 0 and status.success
        result.final_mode = supervisor.mode.name
        result.wall_s = time.perf_counter() - wall_start
        return result

    def _infer(
        self,
        loop: PolicyLoop,
        now: float,
        pending: list[tuple[float, ChunkReady]],
        result: EpisodeResult,
        options: EvalOptions,
    ) -> None:
        frames = self.world.render_all()
        loop.observe(
            now,
            (
                {f.name: f.rgb for f in frames},
                {f.name: np.round(f.depth * 1000.0).astype(np.uint16) for f in frames},
                {},
            ),
        )
        job = loop.job(now)
        if job is None:
            return
        wall = time.perf_counter()

        def clock() -> float:  # sim time as the robot would see it when the chunk arrives
            return now + (time.perf_counter() - wall) * options.latency_scale

        def on_chunk(ready: ChunkReady) -> None:
            result.latency_ms.append((time.perf_counter() - wall) * 1e3)
            pending.append((clock(), ready))

        loop.infer(job, clock, on_chunk)
