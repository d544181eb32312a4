"""`wam-ros bench sim`: simulator and message-conversion costs, measured side by side."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def bench_sim(robot: str = "agilex", repeats: int = 30) -> dict:
    from wam_ros.config import load_robot_config
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.ros.conversions import image_msg, to_time
    from wam_ros.sim.world import SimWorld

    cfg = load_robot_config(robot)
    world = SimWorld(cfg, generate_urdf(cfg))
    try:
        frame = world.render("head")
        stamp = to_time(0.0)
        fast = _median_ms(lambda: image_msg(frame.rgb, "rgb8", stamp, "f"), repeats)
        naive = _median_ms(lambda: frame.rgb.ravel().tolist(), repeats)
        result = {
            "robot": robot,
            "image": f"{world.config.width}x{world.config.height}",
            "physics_step_10ms_ms": _median_ms(lambda: world.step(0.01), repeats),
            "render_3_cameras_rgbd_ms": _median_ms(world.render_all, repeats),
            "rgb_to_msg_fast_ms": fast,
            "rgb_to_msg_tolist_ms": naive,
            "tolist_over_fast": naive / fast,
        }
    finally:
        world.close()
    return result


def bench_supervisor(robot: str = "agilex", repeats: int = 200) -> dict:
    """Cost of the chunk checks, and of reacting to a low value, in the supervisor core."""
    from wam_ros.config import load_robot_config
    from wam_ros.control.limits import WorkspaceBox
    from wam_ros.control.supervisor import Chunk, Command, RollbackConfig, Supervisor, SupervisorConfig
    from wam_ros.geometry.kinematics import Kinematics
    from wam_ros.robots.urdf import generate_urdf

    cfg = load_robot_config(robot)
    kinematics = Kinematics(generate_urdf(cfg))
    box = WorkspaceBox(("left_tcp", "right_tcp"), (-2.0, -2.0, -1.0), (2.0, 2.0, 2.0))
    home = cfg.home_positions()

    def running(workspace: WorkspaceBox | None) -> tuple[Supervisor, np.ndarray]:
        # consecutive=1: the reaction is timed from the estimate that triggers
        config = SupervisorConfig.for_robot(cfg, workspace=workspace,
                                            rollback=RollbackConfig(cooldown=0.0, consecutive=1))
        sup = Supervisor(config, lambda q, frames: kinematics.frame_poses(q, list(frames)))
        q = np.array([home[n] for n in config.arm_joints])
        names = [*config.arm_joints, *config.gripper_joints]
        sup.update_joint_state(0.0, names, [*q, *config.gripper_max])
        sup.update_observation(0.0)
        sup.submit_chunk(0.0, Chunk(0, 0.0, list(config.arm_joints), np.tile(q, (15, 1)), 1 / 15))
        return sup, q

    result = {"robot": robot, "chunk": "15 steps x 12 joints, dt 1/15 s"}
    for label, workspace in (("check_chunk_ms", None), ("check_chunk_with_workspace_fk_ms", box)):
        sup, q = running(workspace)
        limits = [sup.config.checks.limits[n] for n in sup.config.arm_joints]
        inward = np.sign([(l.min_position + l.max_position) / 2 for l in limits] - q)  # stay inside the range
        chunk = Chunk(1, 0.0, list(sup.config.arm_joints), q + np.linspace(0.0, 0.1, 15)[:, None] * inward, 1 / 15)
        assert isinstance(sup.submit_chunk(0.0, chunk)[-1], Command), "benchmark chunk must pass the checks"
        result[label] = _median_ms(lambda: sup.submit_chunk(0.0, chunk), repeats)

    def low_value_to_rollback_command() -> None:
        sup, q = running(None)
        sup.update_value(0.1, 0.8, 1)
        sup.update_joint_state(0.2, [*sup.config.arm_joints, *sup.config.gripper_joints],
                               [*(q + 0.2), *sup.config.gripper_max])
        t0 = time.perf_counter()
        events = sup.update_value(0.2, 0.5, 2)
        samples.append((time.perf_counter() - t0) * 1e3)
        assert any(isinstance(e, Command) and e.source == "rollback" for e in events)

    samples: list[float] = []
    for _ in range(repeats):
        low_value_to_rollback_command()
    result["low_value_to_rollback_command_ms"] = float(np.median(samples))
    result["control_period_ms"] = 1e3 / 15
    result["rollback_reaction_over_control_period"] = result["low_value_to_rollback_command_ms"] / result["control_period_ms"]
    return result


def stream_chunks(bridge, clock, advance, duration: float = 4.0, driver_rate: float = 100.0,
                  chunk_rate: float = 15.0, amplitude: float = 0.15, period: float = 2.0) -> dict:
    """A 15 Hz stream of 15-step chunks (sinusoid on joint 1 of each arm) through a bridge.

    `clock()` is the bridge's time, `advance(dt)` lets that time pass (sleep, or step a simulator).
    Returns the command-to-motion latency of a step command and the tracking error of the stream.
    """
    from wam_ros.robots.bridge import BridgeError

    names = bridge.joint_names
    arm1 = [names.index(n) for n in names if n.endswith("_joint1")]
    dt = 1.0 / driver_rate
    # command-to-motion: a 0.05 rad step, until the measured position has moved 1 mrad
    start = bridge.measured.copy()
    goal = bridge.commanded.copy()
    goal[arm1] += 0.05
    t0 = clock()
    bridge.set_trajectory(names, np.array([t0]), goal[None, :], t0)
    while np.abs(bridge.measured[arm1] - start[arm1]).max() < 1e-3 and clock() - t0 < 2.0:
        bridge.step(clock(), dt)
        advance(dt)
    latency = clock() - t0
    base = goal.copy()
    for _ in range(int(1.0 / dt)):  # settle
        bridge.step(clock(), dt)
        advance(dt)

    def desired(t: float, t_start: float) -> np.ndarray:
        q = base.copy()
        q[arm1] += amplitude * np.sin(2 * np.pi * (t - t_start) / period)
        return q

    t_start, next_chunk, faults = clock(), clock(), []
    sampled_at, measured = [], []  # after the first second
    while clock() - t_start < duration:
        now = clock()
        try:
            if now >= next_chunk:
                times = now + np.arange(15) / chunk_rate
                bridge.set_trajectory(names, times, np.array([desired(t, t_start) for t in times]), now)
                next_chunk += 1.0 / chunk_rate
            bridge.step(now, dt)
        except BridgeError as exc:  # counted and recovered, as an operator would
            faults.append(str(exc))
            bridge.recover(clock())
            bridge.activate(clock())
        if now - t_start > 1.0:
            sampled_at.append(now)
            measured.append(bridge.measured[arm1])
        advance(dt)

    def errors(lag: float) -> np.ndarray:
        """Per sample, the worst joint's distance from where the stream was `lag` seconds earlier."""
        return np.array([np.abs(q - desired(t - lag, t_start)[arm1]).max() for t, q in zip(sampled_at, measured)])

    # a driver behind the stream (franky-sim slower than real time on a loaded machine) shows as a
    # lag: the error after the best lag says whether the arm follows the stream's shape
    lags = np.arange(0.0, 0.5 + 1e-9, 0.01)
    best = float(lags[int(np.argmin([np.median(errors(lag)) for lag in lags]))])
    raw = errors(0.0)
    return {"command_to_motion_latency_ms": latency * 1e3,
            "tracking_error_median_rad": float(np.median(raw)),
            "tracking_error_p95_rad": float(np.percentile(raw, 95)),
            "tracking_lag_ms": best * 1e3,
            "tracking_error_p95_after_lag_rad": float(np.percentile(errors(best), 95)),
            "chunks": int(duration * chunk_rate), "driver_faults": faults}


def _bench_sim_bridge(duration: float) -> dict:
    from wam_ros.config import load_robot_config
    from wam_ros.robots.bridge import Bridge, BridgeLimits
    from wam_ros.robots.sim import SimBackend
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimConfig, SimWorld

    robot = load_robot_config("franka")
    world = SimWorld(robot, generate_urdf(robot), SimConfig())
    bridge = Bridge([SimBackend(world)], BridgeLimits.for_robot(robot, world.joint_names), world.joint_names,
                    state_timeout=float("inf"))
    bridge.configure(world.time)
    bridge.activate(world.time)
    return stream_chunks(bridge, lambda: world.time, world.step, duration)


FRANKY_BENCH = """
import json, sys, time
from wam_ros.bench import stream_chunks
from wam_ros.robots.franka_sim import franky_sim_bridge
with franky_sim_bridge(dynamics_factor=1.0) as bridge:
    result = stream_chunks(bridge, time.monotonic, time.sleep, float(sys.argv[1]))
print(json.dumps(result))
"""


def bench_bridge(robot: str = "franka", duration: float = 4.0) -> dict:
    """Franka FR3 pair: the bridge on franky-sim (franky-control over FCI, wall clock) next to the
    same bridge core on the MuJoCo simulator (sim time), for the same 15 Hz chunk stream."""
    import json
    import subprocess
    import sys

    if robot != "franka":
        raise ValueError("bench bridge compares franky-sim with the simulator: robot must be franka")
    result = {"robot": "franka", "stream": "15 Hz chunks of 15 steps, 0.15 rad sinusoid on joint 1, 100 Hz driver",
              "sim_bridge": _bench_sim_bridge(duration)}
    # franky puts its thread on SCHED_FIFO: its own process
    run = subprocess.run([sys.executable, "-c", FRANKY_BENCH, str(duration)], capture_output=True, text=True,
                         timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"franky-sim benchmark failed: {run.stderr[-2000:]}")
    result["franky_sim_bridge"] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


CAMERA_PUBLISHER = """
import sys, time
import numpy as np, rclpy
from sensor_msgs.msg import CameraInfo, Image
from wam_ros.memory import keep_freed_memory
from wam_ros.ros.conversions import camera_info_msg, image_msg, to_time
from wam_ros.ros.qos import CAMERA_INFO_QOS, IMAGE_QOS
keep_freed_memory()  # like our camera nodes (wam_ros.ros.node_main)
cam, duration, fps, w, h = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rclpy.init()
node = rclpy.create_node(f"{cam}_bench_camera")
pubs = [node.create_publisher(t, f"{cam}/{topic}", q) for t, topic, q in (
    (Image, "color/image_raw", IMAGE_QOS), (CameraInfo, "color/camera_info", CAMERA_INFO_QOS),
    (Image, "aligned_depth_to_color/image_raw", IMAGE_QOS), (CameraInfo, "aligned_depth_to_color/camera_info", CAMERA_INFO_QOS))]
rng = np.random.default_rng(abs(hash(cam)) % 1000)
color = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
depth = rng.integers(300, 3000, (h, w), dtype=np.uint16)
K = np.array([[600.0, 0, w / 2], [0, 600.0, h / 2], [0, 0, 1]])
frame_id = f"{cam}_color_optical_frame"
while any(p.get_subscription_count() == 0 for p in pubs):  # frames before discovery are lost
    time.sleep(0.01)
print("ready", flush=True)
t0 = float(sys.stdin.readline())  # the common first tick, once every camera is matched
k, sent = 0, 0
while True:
    tick = t0 + k / fps  # hardware-synced cameras: every camera exposes on the same tick
    if tick > t0 + duration:
        break
    delay = tick - time.time()
    if delay > 0:
        time.sleep(delay)
    stamp = to_time(tick + rng.uniform(-0.0005, 0.0005))
    info = camera_info_msg(K, w, h, stamp, frame_id)
    pubs[0].publish(image_msg(color, "rgb8", stamp, frame_id)); pubs[1].publish(info)
    pubs[2].publish(image_msg(depth, "16UC1", stamp, frame_id)); pubs[3].publish(info)
    k += 1; sent += 1
print(sent)
"""


def _process_usage(pid: int) -> dict[str, float]:
    """User and system CPU seconds and minor page faults of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {"user_s": int(fields[11]) / tick, "system_s": int(fields[12]) / tick, "minor_faults": int(fields[7])}


def bench_sync(duration: float = 10.0, fps: float = 30.0, width: int = 640, height: int = 480) -> dict:
    """Three camera publisher processes (color rgb8 + depth 16UC1 at `fps`), sync_node in its own
    process, and this process receiving the sets: complete-set ratio and latencies, with glibc's
    malloc defaults and then with the nodes' malloc tuning (wam_ros.memory), in one run. This order
    is fixed: the tuning cannot be undone in this (receiving) process."""
    from wam_ros.config import CAMERA_NAMES

    result = {"cameras": len(CAMERA_NAMES), "image": f"{width}x{height} rgb8 + 16UC1", "fps": fps,
              "ratio_counts": "complete sets received / frames each camera sent (all sent after discovery)",
              "goal": "complete_set_ratio >= 0.999, added p95 <= 3 ms, end-to-end p95 <= 15 ms"}
    result["glibc_malloc_defaults"] = _sync_run(duration, fps, width, height, malloc_tuning=False)
    result["wam_ros_malloc_tuning"] = _sync_run(duration, fps, width, height, malloc_tuning=True)
    return result


def _sync_run(duration: float, fps: float, width: int, height: int, malloc_tuning: bool) -> dict:
    import subprocess
    import sys

    from diagnostic_msgs.msg import DiagnosticArray

    from wam_ros.config import CAMERA_NAMES
    from wam_ros.msg import MultiViewRGBD
    from wam_ros.ros.conversions import from_time
    from wam_ros.ros.qos import DIAGNOSTICS_QOS, EVERY_SET_QOS

    from wam_ros.memory import DISABLE_VARIABLE, keep_freed_memory
    from wam_ros.ros.bringup import apply_environment
    from wam_ros.ros.probe import ProbeNode
    from wam_ros.ros.system import isolated_domain_id

    apply_environment()  # this process talks DDS too: the same transports as the nodes
    if malloc_tuning:
        keep_freed_memory()  # and receives like a node (wam_ros.ros.node_main)
    domain = isolated_domain_id(os.getpid() + malloc_tuning)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), DISABLE_VARIABLE: "1" if malloc_tuning else "0"}
    sync = subprocess.Popen([str(Path(sys.executable).parent / "sync_node"), "--ros-args", "-p", f"expected_fps:={fps}",
                             "-p", "max_interval:=0.005"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = ProbeNode("bench_sync_receiver", domain)
    node = probe.node
    received: list[tuple[float, float, bool]] = []  # (receive time, set stamp, degraded)
    diagnostics: dict[str, str] = {}
    node.create_subscription(MultiViewRGBD, "observations",
                             lambda m: received.append((time.time(), from_time(m.header.stamp), m.degraded)), EVERY_SET_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.update(
        {v.key: v.value for s in m.status if "camera sync" in s.name for v in s.values}), DIAGNOSTICS_QOS)
    cameras = []
    try:
        probe.spin_until(lambda: node.count_publishers("observations") > 0, 30.0)
        cameras = [subprocess.Popen([sys.executable, "-c", CAMERA_PUBLISHER, cam, str(duration), str(fps),
                                     str(width), str(height)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True) for cam in CAMERA_NAMES]
        for camera in cameras:  # each is matched with sync_node's subscriptions
            if camera.stdout.readline().strip() != "ready":
                raise RuntimeError("a bench camera process failed to start")
        t0 = time.time() + 0.5  # every camera exposes on the same ticks from here
        for camera in cameras:
            camera.stdin.write(f"{t0}\n")
            camera.stdin.flush()
        probe.spin_for(t0 + duration + 2.0 - time.time())
        sent = [int(p.communicate(timeout=30)[0].strip() or 0) for p in cameras]
        sync_usage = _process_usage(sync.pid)
    finally:
        for p in cameras:
            if p.poll() is None:
                p.kill()
        sync.terminate()
        sync.wait(timeout=20)
        probe.close()
    latency = np.array([r - s for r, s, _ in received]) * 1e3 if received else np.array([np.nan])
    complete = sum(not degraded for _, _, degraded in received)
    expected = min(sent)  # the cameras started once matched: every tick should give a set
    return {"frames_per_camera": sent, "sets_published_by_sync_node": int(diagnostics.get("sets", "-1")),
            "sets_received": len(received), "complete_sets_received": complete,
            "sync_node_per_set": {"user_ms": 1e3 * sync_usage["user_s"] / max(len(received), 1),
                                  "system_ms": 1e3 * sync_usage["system_s"] / max(len(received), 1),
                                  "minor_page_faults": sync_usage["minor_faults"] / max(len(received), 1)},
            "complete_set_ratio": complete / max(expected, 1),
            "end_to_end_latency_ms": {"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95))},
            "sync_added_latency_ms": {"p50": float(diagnostics.get("added_latency_p50_ms", "nan")),
                                      "p95": float(diagnostics.get("added_latency_p95_ms", "nan"))},
            "camera_stamp_to_sync_publish_ms": {"p50": float(diagnostics.get("age_at_publish_p50_ms", "nan")),
                                                "p95": float(diagnostics.get("age_at_publish_p95_ms", "nan"))}}


IMAGE_PUBLISHER = """
import sys, time
import numpy as np, rclpy
from sensor_msgs.msg import Image
from wam_ros.ros.conversions import image_msg, to_time
from wam_ros.ros.qos import IMAGE_QOS
count, width, height = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rclpy.init()
node = rclpy.create_node("bench_image_publisher")
pub = node.create_publisher(Image, "bench_image", IMAGE_QOS)
image = np.zeros((height, width, 3), np.uint8)
while pub.get_subscription_count() == 0:
    time.sleep(0.05)
time.sleep(0.5)
for _ in range(count):
    pub.publish(image_msg(image, "rgb8", to_time(time.time()), "f"))
    time.sleep(1 / 30)
"""


def bench_dds(count: int = 150, width: int = 640, height: int = 480) -> dict:
    """One rgb8 image from one Python process to another at 30 Hz (stamp at publish to receipt),
    with Fast DDS's builtin transports and with the package's profile (config/fastdds.xml)."""
    import subprocess
    import sys

    from sensor_msgs.msg import Image

    from wam_ros.ros.conversions import from_time
    from wam_ros.ros.probe import ProbeNode
    from wam_ros.ros.qos import IMAGE_QOS
    from wam_ros.ros.system import DDS_VARIABLES, dds_environment, isolated_domain_id

    result = {"image": f"{width}x{height} rgb8", "rate_hz": 30, "messages": count}
    variants = {"DEFAULT": {}, "LARGE_DATA": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
                "wam_ros_profile": dds_environment({})}
    saved = {name: os.environ.pop(name) for name in DDS_VARIABLES if name in os.environ}
    try:
        for k, (variant, variables) in enumerate(variants.items()):
            for name in DDS_VARIABLES:
                os.environ.pop(name, None)
            os.environ.update(variables)  # read when the context starts
            domain = isolated_domain_id(os.getpid() + k)
            publisher = subprocess.Popen([sys.executable, "-c", IMAGE_PUBLISHER, str(count), str(width), str(height)],
                                         env={**os.environ, "ROS_DOMAIN_ID": str(domain)})
            probe = ProbeNode("bench_image_receiver", domain)
            latencies: list[float] = []
            probe.node.create_subscription(Image, "bench_image",
                                           lambda m: latencies.append(time.time() - from_time(m.header.stamp)), IMAGE_QOS)
            try:
                probe.spin_until(lambda: publisher.poll() is not None, 60.0)
                probe.spin_for(0.2)
            finally:
                if publisher.poll() is None:
                    publisher.kill()
                probe.close()
            ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
            result[variant] = {"received": len(latencies), "p50_ms": float(np.percentile(ms, 50)),
                               "p95_ms": float(np.percentile(ms, 95))}
    finally:
        for name in DDS_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(saved)
    return result


# Action latencies the papers report (issue 20), printed beside ours: X-WAM's on an RTX 3090, and
# FastWAM's (the issue names no GPU for it).
ACTION_LATENCY_ANCHORS_MS = {"x_wam_rtx3090": 1033.0, "fastwam": 190.0}
MODEL_DTYPES = ("fp32", "bf16")
# Above this many parameters one denoising pass takes minutes on a few CPU cores (xwam: 8.9 B).
CPU_PARAMETER_LIMIT = 100_000_000


def _device_absent(device: str) -> str | None:
    """Why `device` cannot run here, or None when it can."""
    import torch

    kind = torch.device(device)
    if kind.type == "cpu":
        return None
    if kind.type != "cuda":
        return f"device {device!r}: only cpu and cuda are benchmarked"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)"
    if kind.index is not None and kind.index >= torch.cuda.device_count():
        return f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def _synchronize(device: str) -> None:
    """Waits for the device's queued kernels, so a host timer measures them."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mib(device: str) -> dict[str, float]:
    """The device's peak allocation since the last reset (cuda), or this process's peak resident set
    (cpu: the whole process, imports included)."""
    import resource

    import torch

    if torch.device(device).type == "cuda":
        return {"cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    return {"process_rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _random_policy(cfg, device: str, dtype: str):
    """A WorldActionPolicy of `cfg` with random weights, built on `device` directly in `dtype` (an
    fp32 build first would need twice the memory: 36 GB for xwam), with a one-task table and a
    normaliser of random states."""
    import torch

    from wam_ros.model.normalization import Normalizer
    from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy
    from wam_ros.model.wam import WorldActionModel

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    default = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = WorldActionModel(cfg)
    finally:
        torch.set_default_dtype(default)
    model.to(torch_dtype)
    model.text_encoder.register(["benchmark"])
    states = np.random.default_rng(0).normal(size=(100, cfg.state_dim))
    names = [f"joint_{i}" for i in range(cfg.state_dim)]
    meta = CheckpointMeta(list(cfg.cameras), list(cfg.image_size), names, names, cfg.action_space, 15.0)
    return WorldActionPolicy(model, Normalizer.from_data(states, states, cfg.action_space, []), meta)


def bench_policy_model(config: str = "small", device: str = "cpu", dtype: str = "fp32", repeats: int = 10,
                       force: bool = False, action_steps: int = 0, video_steps: int = 0) -> dict:
    """One model of `config` with random weights on `device` in `dtype`, measured interleaved after a
    warm-up: action latency with ANS (actions final after T_a of T_O passes) against synchronous
    sampling (final only after all T_O), video latency (all passes, depth and VAE decode), the time
    of one pass with and without the action-value expert, and peak memory; medians over `repeats`,
    beside the papers' anchors. action_steps / video_steps: T_a / T_O (0: the config's). bf16 runs
    the bf16 weights under autocast (the observation and the noise stay fp32). The gate threshold is
    0 so that every run takes the predictive expert (the reactive one waits for the whole video).

    Without the device: what was skipped and why. On cpu, a config above CPU_PARAMETER_LIMIT
    parameters is refused unless `force`."""
    import torch

    from wam_ros.config import ConfigError
    from wam_ros.model.config import load_model_config

    if dtype not in MODEL_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {', '.join(MODEL_DTYPES)}")
    result: dict = {"target": "policy-model", "config": config, "device": device, "dtype": dtype,
                    "anchors_action_latency_ms": ACTION_LATENCY_ANCHORS_MS}
    absent = _device_absent(device)
    if absent:
        return {**result, "skipped": True, "reason": absent,
                "not_measured": ["action latency ANS vs synchronous", "video latency", "pass time", "peak memory"]}
    from wam_ros.model.policy import Observation
    from wam_ros.model.wam import WorldActionModel

    cfg = load_model_config(config, gate_threshold=0.0)
    with torch.device("meta"):
        parameters = WorldActionModel(cfg).parameter_counts()
    if torch.device(device).type == "cpu" and parameters["total"] > CPU_PARAMETER_LIMIT and not force:
        raise ConfigError(f"{config} has {parameters['total'] / 1e9:.2f} B parameters: one denoising pass takes "
                          f"minutes on {torch.get_num_threads()} CPU threads. Use --device cuda, a small config "
                          "(demo, small), or --force")
    t_a, t_o = action_steps or cfg.action_steps, video_steps or cfg.video_steps
    if not 1 <= t_a < t_o:
        raise ConfigError(f"need 1 <= action_steps ({t_a}) < video_steps ({t_o}) to compare ANS with synchronous")
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    policy = _random_policy(cfg, device, dtype)
    weights_mib = _peak_memory_mib(device)
    rng = np.random.default_rng(1)
    h, w = cfg.image_size
    obs = Observation(images={c: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for c in cfg.cameras},
                      depths={c: rng.integers(300, 2000, (h, w), dtype=np.uint16) for c in cfg.cameras},
                      state=rng.normal(size=cfg.state_dim), instruction="benchmark")
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    samples: dict[str, list[float]] = {name: [] for name in ("ans", "synchronous", "video_total", "video_decode",
                                                             "encode", "joint_pass", "video_only_pass")}

    def timed_passes(seed: int) -> None:
        """Each pass of one chunk on its own: the first T_a run both experts, the rest the video expert."""
        with torch.no_grad():
            session = policy.session(obs, t_a, t_o, seed)
            while not session.video_final:
                name = "video_only_pass" if session.actions_final else "joint_pass"
                start = time.perf_counter()
                session.step()
                _synchronize(device)
                samples[name].append((time.perf_counter() - start) * 1e3)

    with autocast:
        policy.predict(obs, action_steps=t_a, video_steps=t_o, seed=0)  # warm-up (allocations, kernels)
        for i in range(repeats):
            ans = policy.predict(obs, video=False, action_steps=t_a, video_steps=t_o, seed=i).timings
            sync = policy.predict(obs, video=False, action_steps=t_o, video_steps=t_o, seed=i).timings
            full = policy.predict(obs, action_steps=t_a, video_steps=t_o, seed=i).timings
            timed_passes(i)
            samples["ans"].append(ans["actions_ms"])
            samples["synchronous"].append(sync["actions_ms"])
            samples["video_total"].append(full["total_ms"])
            samples["video_decode"].append(full["decode_ms"])
            samples["encode"].append(full["encode_ms"])
    p50 = {name: round(float(np.median(values)), 2) for name, values in samples.items()}
    return {**result, "sampler": cfg.sampler, "torch_threads": torch.get_num_threads(), "repeats": repeats,
            "steps": {"action_steps_Ta": t_a, "video_steps_TO": t_o},
            "parameters": parameters,
            "action_latency_ms_p50": {"ans": p50["ans"], "synchronous": p50["synchronous"]},
            "synchronous_over_ans": round(p50["synchronous"] / p50["ans"], 2),
            "video_latency_ms_p50": {"all_passes_depth_and_decode": p50["video_total"],
                                     "of_which_vae_decode": p50["video_decode"], "of_which_encode": p50["encode"]},
            "pass_ms_p50": {"video_and_action_experts": p50["joint_pass"], "video_expert_only": p50["video_only_pass"]},
            "memory": {"after_building_the_model": weights_mib, "peak": _peak_memory_mib(device)},
            "ans_over_anchor": {name: round(p50["ans"] / ms, 3) for name, ms in ACTION_LATENCY_ANCHORS_MS.items()}}


TRAIN_MICRO_BATCHES = (1, 8)


def _fsdp_step_run(cfg, device: str, micro_batch: int, repeats: int) -> dict:
    """Training steps of the joint stage (every expert runs) as `wam-ros train --precision bf16
    --checkpointing --strategy fsdp` makes them (train.py's building blocks), on zero batches:
    the median step time, samples/s over all processes and this process's peak allocation."""
    import torch

    from wam_ros.model.distributed import checkpoint_activations, init_distributed, wrap
    from wam_ros.model.memory_plan import TASK, example_batch, training_regions
    from wam_ros.model.train import accumulate_gradients, build_model

    topology = init_distributed()
    torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: an fp32 xwam is 36 GB
        model = build_model(cfg)
    model.text_encoder.register([TASK])  # example_batch's instruction
    groups = training_regions(model, cfg)
    checkpoint_activations(groups)
    trained = wrap(model, "fsdp", topology, device, "bf16", groups)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = example_batch(cfg, micro_batch, "cpu")
    batch["rgb"] = ((batch["rgb"] + 1) * 127.5).to(torch.uint8).movedim(-3, -1)  # the DataLoader's uint8 frames
    noise = torch.Generator().manual_seed(topology.rank)
    model.train()
    seconds = []
    for step in range(repeats + 1):  # the first step warms up (allocator, kernels, FSDP's buffers)
        start = time.perf_counter()
        accumulate_gradients(trained, [batch], "joint", noise, "bf16", device)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(device)
        if step:
            seconds.append(time.perf_counter() - start)
    step_s = float(np.median(seconds))
    return {"processes": topology.world, "sharded": topology.world > 1, "step_s_p50": round(step_s, 3),
            "samples_per_s": round(micro_batch * topology.world / step_s, 3), **_peak_memory_mib(device)}


def bench_train_model(config: str = "xwam", device: str = "cuda", repeats: int = 3, gpus: int = 8) -> dict:
    """Training throughput and peak memory per GPU with bf16 autocast + activation checkpointing +
    FSDP at micro-batch 1 and 8 (joint stage, median of `repeats` steps after one warm-up), next to
    the memory plan (memory_plan.py, as `wam-ros train --dry-run` prints it) for the same setting.
    Run under `torchrun --nproc-per-node N` to shard over N GPUs (one process: FSDP has nothing to
    shard). Without a GPU: the memory plan for `gpus` GPUs only. A micro-batch that runs out of GPU
    memory is reported as such."""
    import torch

    from wam_ros.model.config import load_model_config
    from wam_ros.model.distributed import init_distributed
    from wam_ros.model.memory_plan import memory_plan

    cfg = load_model_config(config)
    absent = _device_absent(device) or (None if torch.device(device).type == "cuda" else
                                        "training throughput is measured on GPUs only")
    if not absent and torch.device(device).index is None:
        device = f"cuda:{init_distributed().local_rank}"  # one GPU per torchrun process
    planned_gpus = gpus if absent else init_distributed().world
    result: dict = {"target": "train-model", "config": config, "device": device,
                    "setting": "bf16 autocast + activation checkpointing + FSDP, joint stage", "gpus": planned_gpus}
    for micro_batch in TRAIN_MICRO_BATCHES:
        plan = memory_plan(cfg, planned_gpus, micro_batch, "fsdp", "bf16", checkpointing=True)
        result.setdefault("parameters", plan["parameters"])
        entry: dict = {"planned_gib_per_gpu": plan["selected"]["per_gpu_gib"],
                       "planned_parts_gib": plan["per_gpu_gib"]["fsdp"]["bf16"]}
        if not absent:
            try:
                entry["measured"] = _fsdp_step_run(cfg, device, micro_batch, repeats)
                entry["measured_over_planned"] = round(entry["measured"]["cuda_max_allocated_mib"] / 1024
                                                       / entry["planned_gib_per_gpu"], 3)
            except torch.cuda.OutOfMemoryError as exc:
                entry["measured"] = {"out_of_memory": str(exc).splitlines()[0]}
            torch.cuda.empty_cache()
        result[f"micro_batch_{micro_batch}"] = entry
    if absent:
        result.update(skipped=True, reason=absent, not_measured=["step time", "samples/s", "peak memory per GPU"],
                      note="the per-GPU figures are memory_plan's estimate (wam-ros train --dry-run)")
    return result


def bench_lift(repeats: int = 15, views: int = 3, frames: int = 8, height: int = 256, width: int = 320) -> dict:
    """Predicted depth + colour (views x frames x height x width, 10 % without depth) lifted into the
    base frame and packed as a PointCloud2, against numpy copying the same bytes (the images in, and
    the cloud's payload out), interleaved in one run. The process tunes malloc like the nodes, and
    lifts into the same buffer each time, as the policy node does."""
    import torch

    from wam_ros.geometry.lifting import lift
    from wam_ros.memory import keep_freed_memory
    from wam_ros.ros.conversions import pointcloud_msg, to_time

    keep_freed_memory()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 2.0, (views, frames, height, width)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = 0.0
    rgb = rng.integers(0, 255, (views, frames, height, width, 3), dtype=np.uint8)
    K = np.tile(np.array([[300.0, 0.0, (width - 1) / 2], [0.0, 300.0, (height - 1) / 2], [0.0, 0.0, 1.0]]),
                (views, 1, 1))
    poses = np.tile(np.eye(4), (frames, views, 1, 1))
    poses[..., :3, 3] = rng.normal(0.0, 0.5, (frames, views, 3))
    cloud = lift(depth, rgb, K, poses)
    payload = np.frombuffer(cloud.buffer, np.uint8)
    timings: dict[str, list[float]] = {"lift_and_pack": [], "copy_images": [], "copy_cloud_payload": []}
    # copying the cloud: its bytes (a plain memory copy; numpy copies structured dtypes field by field)
    for _ in range(repeats):
        for name, run in (("lift_and_pack", lambda: pointcloud_msg(lift(depth, rgb, K, poses, out=cloud), to_time(0.0),
                                                                   "base")),
                          ("copy_images", lambda: (depth.copy(), rgb.copy())),
                          ("copy_cloud_payload", lambda: payload.copy())):
            start = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - start) * 1e3)
    median = {name: float(np.median(values)) for name, values in timings.items()}
    return {"input": f"{views} views x {frames} frames x {width}x{height} float32 depth + rgb8",
            "points": len(cloud), "points_with_depth": int(np.isfinite(cloud.data["z"]).sum()),
            "image_bytes_mb": round((depth.nbytes + rgb.nbytes) / 1e6, 1),
            "cloud_bytes_mb": round(payload.nbytes / 1e6, 1), "median_ms": {k: round(v, 2) for k, v in median.items()},
            "ratio_to_copying_the_images": round(median["lift_and_pack"] / median["copy_images"], 2),
            "ratio_to_copying_the_cloud": round(median["lift_and_pack"] / median["copy_cloud_payload"], 2),
            "torch_threads": torch.get_num_threads(),
            "goal": "lift_and_pack <= 4x the numpy copy of the same bytes"}


def bench_reprojection(robot: str = "agilex", repeats: int = 5) -> dict:
    """The predicted future carried by the kinematics (KinematicReprojection.render: the observed
    RGB-D views at 8 future joint configurations) at model image sizes, side by side with lifting
    the same frames to a cloud (what the policy node does with them next). MuJoCo renders the views
    at the robot's home pose; the left arm moves 0.02 rad per frame on two joints."""
    from wam_ros.config import CAMERA_NAMES, load_robot_config
    from wam_ros.geometry.kinematics import Kinematics
    from wam_ros.geometry.lifting import lift, scale_intrinsics
    from wam_ros.geometry.reprojection import KinematicReprojection
    from wam_ros.model.policy import resize_images
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimWorld

    cfg = load_robot_config(robot)
    urdf = generate_urdf(cfg)
    kinematics = Kinematics(urdf)
    world = SimWorld(cfg, urdf)
    try:
        home = cfg.home_positions()
        frames = [world.render(c) for c in CAMERA_NAMES]
    finally:
        world.close()
    reprojection = KinematicReprojection(kinematics, urdf, [f.frame_id for f in frames])
    moving = cfg.arm_joint_names("left")[:2]
    futures = [{**home, **{n: home[n] + 0.02 * k for n in moving}} for k in range(1, 9)]
    results = {}
    for size in ((32, 32), (48, 64), (128, 160)):
        rgb = np.stack([resize_images(f.rgb[None], size, "area")[0] for f in frames])
        depth = np.stack([resize_images(f.depth[None], size, "nearest")[0] for f in frames])
        K = np.stack([scale_intrinsics(f.K, f.rgb.shape[:2], size) for f in frames])
        carried_rgb, carried_depth = reprojection.render(rgb, depth, K, home, futures)
        poses = np.stack([[kinematics.frame_pose(q, f.frame_id) for f in frames] for q in futures])
        render = _median_ms(lambda: reprojection.render(rgb, depth, K, home, futures), repeats)
        lifting = _median_ms(lambda: lift(carried_depth, carried_rgb, K, poses), repeats)
        results[f"{size[1]}x{size[0]}"] = {"reprojection_ms": round(render, 1), "lift_ms": round(lifting, 2),
                                           "ratio_to_lift": round(render / lifting, 1)}
    return {"robot": robot, "views": len(frames), "future_frames": len(futures), "median": results,
            "note": "numpy on one core; per predicted chunk in the policy node, after its actions are out"}


def _sim_observation(deployed, world, names: list[str], instruction: str):
    """The policy's observation of the simulated robot now: its three cameras and joint positions."""
    frames = world.render_all()
    return deployed.observation({f.name: f.rgb for f in frames}, {f.name: f.depth for f in frames},
                                dict(zip(names, world.joint_positions())), instruction)


def _closed_loop(deployed, world, names: list[str], instruction: str, duration: float) -> dict:
    """The simulated robot executing a policy's chunks at the control rate in real time while the
    policy samples on a worker thread, as policy_node does: starvation and boundary jumps."""
    import threading

    scheduler = deployed.scheduler
    dt = scheduler.config.dt
    handovers, latencies, errors = [], [], []
    busy = threading.Event()
    start = time.monotonic()
    clock = lambda: time.monotonic() - start  # noqa: E731

    def infer(obs, stamp: float, chunk_id: int) -> None:
        try:
            deployed.infer(obs, stamp, clock, lambda ready: (handovers.append(ready.handover),
                                                             latencies.append(clock() - stamp)), chunk_id)
        except Exception as exc:  # noqa: BLE001 — reported in the result
            errors.append(repr(exc))
        finally:
            busy.clear()

    starved = ticks = 0
    chunk_id = 0
    for k in range(int(duration / dt)):
        now = clock()
        if now < k * dt:
            time.sleep(k * dt - now)
            now = clock()
        executing = scheduler.executing
        if executing is not None:
            ticks += 1
            starved += now > executing.end + 1e-9  # nothing left to execute: the arm holds
            # no supervisor here: targets only kept inside the joint ranges
            world.set_targets(names, np.clip(executing.at(now), world.lower, world.upper))
        world.step(dt)
        if not busy.is_set() and scheduler.inference_due(now):
            obs = _sim_observation(deployed, world, names, instruction)
            chunk_id += 1
            busy.set()
            threading.Thread(target=infer, args=(obs, now, chunk_id), daemon=True).start()
    while busy.is_set():
        time.sleep(0.01)
    jumps = np.array([h.jump for h in handovers[1:]]) if len(handovers) > 1 else np.array([np.nan])
    lat = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {"chunks": len(handovers), "control_ticks": ticks, "starved_ticks": int(starved),
            "boundary_jump_rad": {"median": round(float(np.median(jumps)), 4), "max": round(float(np.max(jumps)), 4)},
            "observation_to_chunk_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                                        "p95": round(float(np.percentile(lat, 95)), 1),
                                        "max": round(float(np.max(lat)), 1)},
            "delay_steps": scheduler.delay_steps, "errors": errors[:3]}


def bench_policy(duration: float = 60.0, repeats: int = 10, checkpoint: str = "") -> dict:
    """The shipped demo policy (models/agilex_pick_place, what `make demo` runs) on the simulated AgileX at its 15 Hz
    control rate, in real time: RTC vs naive switching vs blending (chunk boundary jumps, starvation)
    for `duration` s each, and observation-to-first-action latency with ANS vs synchronous sampling
    (interleaved repeats). Inference includes the video and depth, as in policy_node."""
    import torch

    from wam_ros.config import load_robot_config
    from wam_ros.control.chunking import MODES, ChunkScheduler, default_execution_horizon
    from wam_ros.demo import shipped_policy
    from wam_ros.memory import keep_freed_memory
    from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config, resolve_instruction
    from wam_ros.model.policy import load_policy
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimWorld

    keep_freed_memory()
    torch.set_num_threads(2)
    path = Path(checkpoint) if checkpoint else shipped_policy("agilex")
    policy = load_policy(path)
    robot = load_robot_config("agilex")
    names = list(robot.joint_names)
    instruction = resolve_instruction(policy, "")
    horizon = policy.cfg.num_actions
    result: dict = {"checkpoint": str(path), "actions_per_chunk": horizon, "control_rate_hz": policy.meta.fps,
                    "execution_horizon_steps": default_execution_horizon(horizon), "torch_threads": torch.get_num_threads(),
                    "seconds_per_mode": duration}
    home = None  # the observation at home, for the latency comparison below
    for mode in MODES:
        world = SimWorld(robot, generate_urdf(robot))
        try:
            world.reset()
            scheduler = ChunkScheduler(chunking_config(policy, mode))
            deployed = DeployedPolicy(policy, robot, scheduler, DeployConfig(video=True, depth=True))
            home = home or _sim_observation(deployed, world, names, instruction)
            result[mode] = _closed_loop(deployed, world, names, instruction, duration)
        finally:
            world.close()
    for stat in ("median", "max"):
        naive, rtc = result["naive"]["boundary_jump_rad"][stat], result["rtc"]["boundary_jump_rad"][stat]
        result[f"naive_over_rtc_{stat}_jump"] = round(naive / rtc, 2) if rtc > 0 else None
    # observation to first action: ANS (T_a of T_O passes) vs synchronous (all T_O for the actions)
    cfg = policy.cfg
    variants = {"ans": cfg.action_steps, "synchronous": cfg.video_steps}
    first_action: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, steps in variants.items():
            first_action[name].append(policy.predict(home, video=False, action_steps=steps, seed=i).timings["actions_ms"])
    medians = {name: round(float(np.median(v)), 2) for name, v in first_action.items()}
    result["observation_to_first_action_ms_p50"] = {f"ans_Ta{cfg.action_steps}_TO{cfg.video_steps}": medians["ans"],
                                                    f"synchronous_{cfg.video_steps}": medians["synchronous"]}
    result["ans_speedup"] = round(medians["synchronous"] / medians["ans"], 2)
    result["goal"] = ("zero starvation whenever inference latency <= execution horizon; max boundary jump "
                      ">= 5x smaller with rtc than naive")
    return result


JOINT_STATE_PUBLISHER = """
import sys, time
import numpy as np, rclpy
from sensor_msgs.msg import JointState
from wam_ros.config import load_robot_config
from wam_ros.ros.conversions import to_time
from wam_ros.ros.qos import JOINT_STATE_QOS
duration, rate = float(sys.argv[1]), float(sys.argv[2])
names = load_robot_config("agilex").joint_names
rclpy.init()
node = rclpy.create_node("bench_joint_states")
pub = node.create_publisher(JointState, "joint_states", JOINT_STATE_QOS)
while pub.get_subscription_count() == 0:
    time.sleep(0.01)
print("ready", flush=True)
t0 = float(sys.stdin.readline())
k = 0
while t0 + k / rate <= t0 + duration:
    delay = t0 + k / rate - time.time()
    if delay > 0:
        time.sleep(delay)
    msg = JointState(name=names, position=np.sin(np.arange(len(names)) + k / rate).tolist())
    msg.header.stamp = to_time(time.time())
    pub.publish(msg)
    k += 1
print(k)
"""


def bench_record(duration: float = 60.0, fps: float = 30.0, width: int = 640, height: int = 480,
                 joint_rate: float = 200.0) -> dict:
    """recorder_node (source raw) recording three camera processes (rgb8 + 16UC1 + camera_info,
    `fps`) and a 200 Hz joint state process: messages sent vs written to the bag, recorder CPU
    and MB/s, without compression and with JPEG/PNG compression, in one run."""
    import tempfile

    result = {"cameras": 3, "image": f"{width}x{height} rgb8 + 16UC1 + 2 camera_info", "fps": fps,
              "joint_state_rate": joint_rate, "seconds": duration, "goal": "dropped == 0"}
    with tempfile.TemporaryDirectory(prefix="wam_bench_record_", dir=os.environ.get("WAM_BENCH_DIR")) as tmp:
        for compression in ("none", "jpeg"):
            result[f"compression_{compression}"] = _record_run(Path(tmp) / compression, compression, duration, fps,
                                                               width, height, joint_rate)
    return result


def _record_run(directory: Path, compression: str, duration: float, fps: float, width: int, height: int,
                joint_rate: float) -> dict:
    import json
    import shutil
    import signal
    import subprocess
    import sys

    from wam_ros.config import CAMERA_NAMES
    from wam_ros.ros.bringup import apply_environment
    from wam_ros.ros.system import isolated_domain_id

    apply_environment()
    domain = isolated_domain_id(os.getpid() + len(compression))
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    recorder = subprocess.Popen([str(Path(sys.executable).parent / "recorder_node"), "--ros-args",
                                 "-p", "source:=raw", "-p", f"compression:={compression}", "-p", f"directory:={directory}",
                                 "-p", "autostart_episode:=true", "-p", "min_free_mb:=2048.0", "-p", "queue_mb:=2048.0"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    publishers = []
    try:
        publishers = [subprocess.Popen([sys.executable, "-c", CAMERA_PUBLISHER, cam, str(duration), str(fps),
                                        str(width), str(height)], env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True) for cam in CAMERA_NAMES]
        publishers.append(subprocess.Popen([sys.executable, "-c", JOINT_STATE_PUBLISHER, str(duration), str(joint_rate)],
                                           env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in publishers:  # each is matched with the recorder's subscriptions
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a bench publisher failed to start")
        time.sleep(1.0)  # the episode starts once the recorder's clock runs (at once: wall clock)
        before = _process_usage(recorder.pid)
        t0 = time.time() + 0.5
        for p in publishers:
            p.stdin.write(f"{t0}\n")
            p.stdin.flush()
        sent = [int(p.communicate(timeout=duration + 60)[0].strip() or 0) for p in publishers]
        time.sleep(2.0)  # the last messages reach the recorder
        after = _process_usage(recorder.pid)
        recorder.send_signal(signal.SIGINT)  # Ctrl-C: the episode is closed (marked partial), counts written
        recorder.wait(timeout=120)
    finally:
        for p in [*publishers, recorder]:
            if p.poll() is None:
                p.kill()
    (episode_dir,) = [p for p in directory.iterdir() if p.is_dir()]
    episode = json.loads((episode_dir / "episode.json").read_text())
    written = {"image": 0, "camera_info": 0, "joint_states": 0, "other": 0}
    for topic, counts in episode["messages"].items():
        kind = next((k for k in ("image", "camera_info", "joint_states") if k in topic), "other")
        written[kind] += counts["written"]
    images_sent = 2 * sum(sent[:3])  # color + depth per camera frame, each with its camera_info
    bag_bytes = sum(f.stat().st_size for f in episode_dir.iterdir())
    cpu = (after["user_s"] - before["user_s"]) + (after["system_s"] - before["system_s"])
    shutil.rmtree(episode_dir)
    return {"images_sent": images_sent, "images_written": written["image"],
            "camera_infos_sent": images_sent, "camera_infos_written": written["camera_info"],
            "joint_states_sent": sent[3], "joint_states_written": written["joint_states"],
            "dropped": 2 * images_sent + sent[3] - written["image"] - written["camera_info"] - written["joint_states"],
            "recorder_dropped_in_queue": sum(c["dropped"] for c in episode["messages"].values()),
            "recorder_cpu_percent_of_one_core": round(100 * cpu / duration, 1),
            "bag_mb": round(bag_bytes / 2**20, 1), "mb_per_s_written": round(bag_bytes / 2**20 / duration, 1)}


def bench_split(duration: float = 20.0, checkpoint: str = "") -> dict:
    """The two-machine deployment on one host vs two network namespaces (wam_ros.split_bench)."""
    from wam_ros.split_bench import bench_split as run

    return run(duration, checkpoint)
