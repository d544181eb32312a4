"""The benchmark through the ROS graph: demonstrations recorded by the recorder node from the
scripted expert's command stream, and closed-loop episodes of a checkpoint, each on the system of
`wam-ros bringup` (the same node descriptions as the launch file) over Fast DDS.

Every episode is a fresh system (the simulator starts each scene from its seed); an
`EpisodeWatcher` node follows sim time, task/state and supervisor/state, and ends a recorded
episode through the recorder's ~/stop_episode service with the task's outcome.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock as ClockMsg
from std_srvs.srv import SetBool

from wam_ros.benchmark.evaluate import EvalOptions
from wam_ros.config import load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.msg import ActionChunk, SupervisorState, TaskState
from wam_ros.progress import Progress
from wam_ros.robots.urdf import generate_urdf
from wam_ros.ros.bringup import apply_environment, create_nodes
from wam_ros.ros.conversions import from_time
from wam_ros.ros.node_main import make_executor
from wam_ros.ros.probe import call_service
from wam_ros.ros.qos import CLOCK_QOS, COMMAND_QOS, LATCHED_QOS
from wam_ros.ros.system import SystemOptions, describe_system, isolated_domain_id, with_parameters
from wam_ros.sim.expert import PlanningError, plan_expert
from wam_ros.sim.tasks import EpisodeSpec, sample_episode

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class EpisodeWatcher(Node):
    """Follows an episode: sim time (and how fast it ran against the wall clock), the task's and
    the supervisor's state, and every chunk's inference latency (observation to actions final, in
    ROS time, as policy_node stamps it)."""

    def __init__(self):
        super().__init__("benchmark_watcher", parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.sim_time = 0.0
        # (sim time, wall time) of the first and of the latest /clock
        self.first_clock: tuple[float, float] | None = None
        self.last_clock: tuple[float, float] | None = None
        self.latencies: list[float] = []
        self.task: TaskState | None = None
        self.supervisor: SupervisorState | None = None
        self.create_subscription(ClockMsg, "/clock", self._on_clock, CLOCK_QOS)
        self.create_subscription(
            ActionChunk, "policy/chunk", lambda m: self.latencies.append(float(m.inference_latency)), COMMAND_QOS
        )
        self.create_subscription(TaskState, "task/state", lambda m: setattr(self, "task", m), LATCHED_QOS)
        self.create_subscription(
            SupervisorState, "supervisor/state", lambda m: setattr(self, "supervisor", m), LATCHED_QOS
        )
        self.stop_client = self.create_client(SetBool, "recorder/stop_episode")

    def _on_clock(self, msg: ClockMsg) -> None:
        self.sim_time = from_time(msg.clock)
        self.last_clock = (self.sim_time, time.monotonic())
        if self.first_clock is None:
            self.first_clock = self.last_clock

    def real_time_factor(self) -> float | None:
        """Sim seconds per wall second between the first and the latest /clock: below 1 when the
        machine cannot keep up with the simulation (rendering, physics, inference on its cores)."""
        if self.first_clock is None or self.last_clock[1] <= self.first_clock[1]:
            return None
        return (self.last_clock[0] - self.first_clock[0]) / (self.last_clock[1] - self.first_clock[1])


def run_system(
    specs,
    until: Callable[[Node], bool],
    wall_timeout: float,
    finish: Callable[[Node, object], None] | None = None,
    watcher: Node | None = None,
) -> Node:
    """Bring the nodes up with a watcher (an EpisodeWatcher unless given; it must have sim_time),
    spin until until(watcher) is true, run finish(watcher, executor) while the system still runs,
    then tear everything down (the watcher too)."""
    nodes, _ = create_nodes(specs)
    watcher = watcher or EpisodeWatcher()
    executor = make_executor()
    for node in (*nodes, watcher):
        executor.add_node(node)
    deadline = time.monotonic() + wall_timeout
    try:
        while not until(watcher):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"episode did not finish within {wall_timeout:.0f} s (sim time {watcher.sim_time:.1f} s)"
                )
            executor.spin_once(timeout_sec=0.05)
        if finish is not None:
            finish(watcher, executor)
        return watcher
    finally:
        executor.shutdown()
        for node in (*nodes, watcher):
            node.destroy_node()


def record_demonstrations(
    robot: str,
    task: str,
    seeds: list[int],
    episodes_dir: Path,
    sim_size: tuple[int, int],
    condition: str = "clean",
    perturbation: str = "none",
    wall_timeout: float = 300.0,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One recorded episode per seed: scripted expert -> policy/chunk -> supervisor -> simulated
    arms, recorded by recorder_node; ended with the task's outcome. With a perturbation the expert's
    plan runs unchanged through it (a slip: the episode fails). A scene the expert cannot plan
    (Random moves objects out of reach now and then) is skipped, with a row that says so
    (recorded: false). Returns per-seed rows; on_row gets each as soon as it is known."""
    config = load_robot_config(robot)
    kinematics = Kinematics(generate_urdf(config))
    apply_environment()
    rows = []

    def emit(row: dict, message: str) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)
        print(f"[benchmark] {message}", flush=True)

    rclpy.init(args=["wam-ros-benchmark"])
    try:
        for seed in seeds:
            spec = EpisodeSpec(task, robot, condition, seed, perturbation)
            try:
                plan = plan_expert(config, kinematics, sample_episode(spec, config), np.random.default_rng(seed))
            except PlanningError as exc:
                message = f"skipped, the expert cannot plan this scene: {exc}"
                emit(
                    {
                        "seed": seed,
                        "condition": condition,
                        "perturbation": perturbation,
                        "recorded": False,
                        "success": False,
                        "stage": 0,
                        "message": message,
                    },
                    f"demo seed {seed}: {message}",
                )
                continue
            specs = describe_system(
                SystemOptions(
                    robot=robot,
                    task=task,
                    condition=condition,
                    seed=seed,
                    perturbation=perturbation,
                    teleop="scripted",
                    record=True,
                    episodes_dir=str(episodes_dir),
                )
            )
            specs = with_parameters(specs, "sim_node", {"width": sim_size[1], "height": sim_size[0]})
            specs = with_parameters(specs, "recorder_node", {"autostart_episode": True})
            outcome = {}

            def stop(watcher: EpisodeWatcher, executor) -> None:
                success = bool(watcher.task and watcher.task.success)
                reply = call_service(executor, watcher.stop_client, SetBool.Request(data=success), timeout=30.0)
                if not reply.success:
                    raise RuntimeError(f"recorder refused to stop the episode: {reply.message}")
                outcome.update(
                    success=success, stage=int(watcher.task.stage) if watcher.task else 0, message=reply.message
                )

            # the expert's plan, then a second for the scene to settle
            run_system(specs, lambda w: w.sim_time >= plan.duration + 1.0, wall_timeout, stop)
            emit(
                {
                    "seed": seed,
                    "condition": condition,
                    "perturbation": perturbation,
                    "recorded": True,
                    "plan_s": round(plan.duration, 2),
                    **outcome,
                },
                f"demo {seed}: {'success' if outcome['success'] else 'failure'} "
                f"(stage {outcome['stage']}, {plan.duration:.1f} s)",
            )
    finally:
        rclpy.try_shutdown()
    return rows


@dataclass(frozen=True)
class GraphEpisode:
    """One closed-loop episode through the graph: a variant's scene and settings."""

    variant: str
    spec: EpisodeSpec
    options: EvalOptions
    seed: int  # the policy's noise seed (policy_node `seed`), as in process


@dataclass(frozen=True)
class GraphSettings:
    checkpoint: Path
    robot: str
    sim_size: tuple[int, int]  # camera height, width
    threads: int  # torch threads of policy_node
    synchronous_steps: int  # T_a when a variant turns ANS off: the checkpoint's T_O
    real_time_factor: float = 1.0  # the simulator's pace (sim_node real_time_factor; 1: real time, as on a robot)
    wall_timeout: float = 600.0


def episode_system(settings: GraphSettings, episode: GraphEpisode) -> list:
    """The node descriptions of one episode: `wam-ros bringup`'s, with the variant's settings as the
    nodes' parameters (what a user would pass as launch arguments)."""
    spec, options = episode.spec, episode.options
    nodes = describe_system(
        SystemOptions(
            robot=settings.robot,
            checkpoint=str(settings.checkpoint),
            task=spec.task,
            condition=spec.condition,
            seed=spec.seed,
            perturbation=spec.perturbation,
        )
    )
    nodes = with_parameters(
        nodes,
        "sim_node",
        {"width": settings.sim_size[1], "height": settings.sim_size[0], "real_time_factor": settings.real_time_factor},
    )
    nodes = with_parameters(
        nodes,
        "supervisor_node",
        {"clamp": True, "rollback.enabled": options.rollback, "rollback.delta": options.rollback_delta},
    )
    return with_parameters(
        nodes,
        "policy_node",
        {
            "expert": options.expert,
            "action_steps": 0 if options.ans else settings.synchronous_steps,
            "predict_video": options.video,
            "depth": options.depth,
            "seed": episode.seed,
            "threads": settings.threads,
        },
    )


def run_graph_episode(settings: GraphSettings, episode: GraphEpisode) -> dict:
    """One episode on a fresh system; success from task/state, rollbacks and chunks from
    supervisor/state. Needs rclpy initialised."""
    spec, wall = episode.spec, time.monotonic()
    max_seconds = episode.options.max_seconds
    watcher = run_system(
        episode_system(settings, episode),
        lambda w: (w.task is not None and w.task.success) or w.sim_time >= max_seconds,
        settings.wall_timeout,
    )
    task, sup, rtf = watcher.task, watcher.supervisor, watcher.real_time_factor()
    success = bool(task and task.success)
    rollbacks = int(sup.rollbacks) if sup else 0
    return {
        "variant": episode.variant,
        "task": spec.task,
        "condition": spec.condition,
        "seed": spec.seed,
        "perturbation": spec.perturbation,
        "success": success,
        "time_to_success": round(task.time_to_success, 2) if success else None,
        "stage": int(task.stage) if task else 0,
        "rollbacks": rollbacks,
        "rollback_recovered": success and rollbacks > 0,
        "perturbed": bool(task and task.perturbed),
        "chunks": int(sup.chunks_forwarded + sup.chunks_rejected) if sup else 0,
        "rejected": int(sup.chunks_rejected) if sup else 0,
        "last_rejection": sup.last_rejection if sup else "",
        "latency_ms_median": round(float(np.median(watcher.latencies)) * 1e3, 1) if watcher.latencies else None,
        "real_time_factor": None if rtf is None else round(rtf, 2),
        "final_mode": sup.state_name if sup else "",
        "sim_s": round(watcher.sim_time, 2),
        "wall_s": round(time.monotonic() - wall, 1),
    }


def worker_domains(own: int, jobs: int, seed: int) -> list[int]:
    """DDS domains for `jobs` workers: the first is this process's own (`wam-ros benchmark` runs
    on a private one), the others private ones chosen from `seed`, none twice and none `own`."""
    domains, k = [own], 0
    while len(domains) < jobs:
        candidate = isolated_domain_id(seed + k)
        k += 1
        if candidate not in domains:
            domains.append(candidate)
    return domains


def _worker_start(domain_ids) -> None:
    """A worker process: a DDS domain of its own (two simulations on one domain corrupt each
    other's episodes), the package's DDS profile, one rclpy context for its episodes. It ends with
    the benchmark: the kernel sends it SIGTERM when its parent dies, and SIGTERM keeps its default
    action (rclpy's handler would only shut the context down, and the worker went on to its next
    episode beside the next run)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.environ["ROS_DOMAIN_ID"] = str(domain_ids.get())
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    apply_environment()
    rclpy.init(args=["wam-ros-benchmark"], signal_handler_options=SignalHandlerOptions.NO)


def evaluate_episodes(
    settings: GraphSettings, episodes: list[GraphEpisode], jobs: int = 1, on_row: Callable[[dict], None] | None = None
) -> list[dict]:
    """Closed-loop episodes through the node graph (cameras -> sync -> policy -> supervisor ->
    simulated arms over Fast DDS, sim time), `jobs` at a time, each worker process on its own
    DDS domain. Rows in the order of `episodes`; on_row hears each as it finishes."""
    jobs = max(1, min(jobs, len(episodes)))
    context = multiprocessing.get_context("spawn")  # no torch or rclpy state inherited from this process
    domain_ids = context.Queue()  # handed to each worker as it starts
    for domain in worker_domains(int(os.environ.get("ROS_DOMAIN_ID", "0")), jobs, os.getpid()):
        domain_ids.put(domain)
    progress = Progress("graph episodes", len(episodes), "episode")
    rows: list[dict | None] = [None] * len(episodes)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_start, initargs=(domain_ids,)) as pool:
        futures = {pool.submit(run_graph_episode, settings, episode): k for k, episode in enumerate(episodes)}
        for done, future in enumerate(as_completed(futures), 1):
            row = future.result()
            rows[futures[future]] = row
            if on_row is not None:
                on_row(row)
            progress.update(done, f"{row['variant']}, seed {row['seed']}: {'success' if row['success'] else 'failure'}")
    return rows
