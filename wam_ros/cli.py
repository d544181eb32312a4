"""`wam-ros`: bringup, demo, bench, train, render-prediction, calibration-check, urdf."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from wam_ros.config import ROBOTS, ConfigError
from wam_ros.perf import TARGETS as PERF_TARGETS
from wam_ros.sim.tasks import TASKS


def _system_arguments(tokens: list[str]) -> dict[str, str]:
    """Accept launch-style `name:=value` and `--name value` / `--name=value` alike."""
    values, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if ":=" in token:
            name, value = token.split(":=", 1)
        elif token.startswith("--"):
            name, _, value = token[2:].partition("=")
            if not _:
                if i + 1 >= len(tokens):
                    raise ConfigError(f"{token}: missing value")
                i += 1
                value = tokens[i]
        else:
            raise ConfigError(f"unexpected argument {token!r}; use name:=value")
        values[name.replace("-", "_")] = value
        i += 1
    return values


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among `names` given on the command line (argparse default None: not given)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def cmd_bringup(tokens: list[str]) -> int:
    from wam_ros.ros.bringup import apply_environment, create_nodes
    from wam_ros.ros.system import SystemOptions, describe_system

    if "--ros-args" in tokens:
        tokens = tokens[: tokens.index("--ros-args")]
    opts = SystemOptions.from_arguments(_system_arguments(tokens))
    specs = describe_system(opts)
    apply_environment()
    import rclpy

    from wam_ros.ros.node_main import init_without_signal_handlers, report_startup_failures, spin_until_interrupted

    # launch-style name:=value arguments are ours, not ROS remaps: hand rclpy only --ros-args
    ros_args = sys.argv[sys.argv.index("--ros-args") :] if "--ros-args" in sys.argv else []
    init_without_signal_handlers(["wam-ros", *ros_args])
    nodes = []
    try:
        nodes, skipped = create_nodes(specs)
        for spec in skipped:
            print(f"[bringup] {spec.package}/{spec.executable} runs only under ros2 launch; skipped", file=sys.stderr)
        if report_startup_failures(nodes, "bringup"):
            print(
                "[bringup] a node cannot reach its hardware: stopping (on_hardware_failure:=stay keeps the "
                "system up, NOT OPERATIONAL)",
                file=sys.stderr,
            )
            return 3
        print(f"[bringup] running {', '.join(n.get_fully_qualified_name() for n in nodes)}", file=sys.stderr)
        spin_until_interrupted(nodes)
    except KeyboardInterrupt:  # during node construction
        pass
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def cmd_episode(args) -> int:
    """The recorder's ~/start_episode and ~/stop_episode services, without the ros2 CLI."""
    import rclpy
    from std_srvs.srv import SetBool, Trigger

    from wam_ros.ros.bringup import apply_environment

    apply_environment()
    prefix = "/" + "/".join(p for p in (args.namespace.strip("/"), "recorder") if p)
    rclpy.init(args=None)
    node = rclpy.create_node("wam_ros_episode")
    try:
        if args.action == "start":
            client, request = node.create_client(Trigger, f"{prefix}/start_episode"), Trigger.Request()
        else:
            client = node.create_client(SetBool, f"{prefix}/stop_episode")
            request = SetBool.Request(data=args.outcome == "success")
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(
                f"no recorder at {prefix} (ROS_DOMAIN_ID {os.environ.get('ROS_DOMAIN_ID', '0')}): bring the system up "
                "with record:=true, or give its --namespace",
                file=sys.stderr,
            )
            return 1
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            print(f"{prefix}: no answer within {args.timeout} s", file=sys.stderr)
            return 1
        reply = future.result()
        print(reply.message, file=sys.stdout if reply.success else sys.stderr)
        return 0 if reply.success else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def cmd_doctor(tokens: list[str]) -> int:
    from wam_ros.doctor import FAIL, format_table, run_checks
    from wam_ros.ros.system import SystemOptions

    checks = run_checks(SystemOptions.from_arguments(_system_arguments(tokens)))
    print(format_table(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def cmd_calibrate(args) -> int:
    from wam_ros.calibration import CharucoSpec, recorded_views, simulated_views, solve_mounts, write_camera_mounts
    from wam_ros.config import load_robot_config, robot_config_path

    try:
        columns, rows = (int(v) for v in args.board_squares.lower().split("x"))
        spec = CharucoSpec((columns, rows), args.square, args.marker, args.dictionary)
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"--board-squares/--square/--marker/--dictionary: {exc}") from None
    robot = load_robot_config(args.robot)
    if args.bag is not None:
        try:
            views = recorded_views(args.bag, spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    else:
        views = simulated_views(robot, spec, tuple(args.board_xyz), seed=args.seed)
    missing = [cam for cam, pairs in views.wrist.items() if len(pairs) < 3] + ([] if views.head else ["head"])
    if missing:
        raise ConfigError(
            f"the board was not seen often enough by {missing}: move it (--board-xyz) or use a bigger one"
        )
    mounts = solve_mounts(robot, views)
    for mount in mounts.values():
        mount.pop("T_parent_optical")
    result = {
        "robot": args.robot,
        "source": str(args.bag) if args.bag else "simulator",
        "board": {
            "squares": list(spec.squares),
            "square_m": spec.square,
            "marker_m": spec.marker,
            "dictionary": spec.dictionary,
        },
        "cameras": mounts,
    }
    if args.write:
        result["backup"] = str(write_camera_mounts(robot_config_path(args.robot), mounts))
        result["written"] = str(robot_config_path(args.robot))
    print(json.dumps(result, indent=2))
    return 0


def cmd_calibration_check(args) -> int:
    import numpy as np

    from wam_ros.calibration import calibration_check
    from wam_ros.config import load_yaml

    image = K = joints = None
    if args.image is not None:
        from PIL import Image

        if args.camera_info is None:
            raise ConfigError("--camera-info: needed with --image (the head camera's k)")
        image = np.asarray(Image.open(args.image).convert("RGB"))
        k = (load_yaml(args.camera_info) or {}).get("k")
        if not isinstance(k, list) or len(k) != 9:
            raise ConfigError(f"{args.camera_info}: expected k: [9 numbers]")
        K = np.array(k, dtype=float).reshape(3, 3)
    if args.joints is not None:
        joints = {str(n): float(v) for n, v in (load_yaml(args.joints) or {}).items()}
    print(json.dumps(calibration_check(args.robot, args.out, image, K, joints), indent=2))
    return 0


def cmd_demo(args) -> int:
    from wam_ros.demo import DEMO_EPISODES, demo_training, episode_outcome, parse_episodes, run_demo, train_demo_policy

    checkpoint = args.checkpoint
    if args.train:
        overrides = _given(args, "demos", "slip_demos", "vae_steps", "video_steps", "joint_steps")
        checkpoint = train_demo_policy(demo_training(args.robot, args.out, **overrides))
    episodes = parse_episodes(args.episodes) if args.episodes else DEMO_EPISODES
    summary = run_demo(
        args.robot,
        args.out,
        source=args.source,
        duration=args.duration,
        checkpoint=checkpoint,
        episodes=episodes,
        max_seconds=args.max_seconds,
        **({"real_time_factor": args.real_time_factor} if args.real_time_factor else {}),
    )
    print(json.dumps(summary, indent=2))
    if args.source == "scripted":
        print(f"wrote {args.out / 'summary.json'}, {args.out / 'contact_sheet.png'}, {args.out / 'scripted.mp4'}")
        return 0
    print(f"summary: {args.out / 'summary.json'}")
    for row in summary["episodes"]:
        print(f"{row['name']} ({row['perturbation']}, seed {row['seed']}): {episode_outcome(row)}")
        for kind, path in row["files"].items():
            print(f"  {kind}: {path}")
    return 0


def cmd_train(args) -> int:
    import torch

    from wam_ros.config import load_robot_config
    from wam_ros.data.dataset import DatasetError
    from wam_ros.data.formats import load_dataset
    from wam_ros.model.model_config import load_model_config
    from wam_ros.model.train import TrainConfig, WindowDataset, train

    if args.threads:
        torch.set_num_threads(args.threads)
    fields = (
        "vae_stage_steps",
        "video_stage_steps",
        "joint_stage_steps",
        "batch_size",
        "grad_accum",
        "lr",
        "warmup_steps",
        "decay",
        "decay_fraction",
        "min_lr",
        "weight_decay",
        "precision",
        "strategy",
        "workers",
        "seed",
        "checkpoint_every",
        "stop_after",
    )
    try:
        train_cfg = TrainConfig(
            **{f: getattr(args, f) for f in fields if getattr(args, f) is not None},
            checkpointing=args.checkpointing,
            init_from=str(args.init_from or ""),
        ).validate()
        model_cfg = load_model_config(args.config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.dry_run:
        from wam_ros.model.memory_plan import memory_plan

        print(
            json.dumps(
                memory_plan(
                    model_cfg,
                    args.gpus,
                    train_cfg.batch_size,
                    train_cfg.strategy,
                    train_cfg.precision,
                    train_cfg.checkpointing,
                ),
                indent=2,
            )
        )
        return 0
    if args.data is None or args.out is None:
        raise ConfigError("--data and --out are required (except with --dry-run)")
    if args.out.exists() and not (args.resume or args.overwrite):
        raise ConfigError(
            f"--out {args.out} exists: continue its training with --resume, or replace it with --overwrite"
        )
    if args.init_from is not None and not args.init_from.is_dir():
        raise ConfigError(f"--init-from {args.init_from}: no such directory (a local diffusers Wan)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per torchrun process
    try:
        # frames stay on disk and are read per window (by --workers processes)
        meta, episodes = load_dataset(args.data, lazy=True)
        robot = load_robot_config(args.robot) if args.robot else None
        dataset = WindowDataset(episodes, meta, model_cfg, robot)
        summary = train(dataset, train_cfg, args.out, resume=args.resume, device=device)
    except (DatasetError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    if summary["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def cmd_data(args) -> int:
    from wam_ros.data.bag import BagError
    from wam_ros.data.dataset import DatasetError
    from wam_ros.data.images import ImageError

    try:
        if args.command == "export":
            from wam_ros.data.bag_frames import episode_paths
            from wam_ros.data.export import ExportConfig
            from wam_ros.data.formats import exporter

            cfg = ExportConfig(
                fps=args.fps,
                gamma=args.gamma,
                gate_window=args.gate_window,
                video_codec=args.video_codec,
                include_failures=not args.successes_only,
            )
            result = exporter(args.format)(episode_paths(args.bags), args.out, cfg, overwrite=args.overwrite)
        elif args.dataset_command == "info":
            from wam_ros.data.summary import dataset_info

            result = dataset_info(args.path, args.fps)
        elif args.dataset_command == "preview":
            from wam_ros.data.summary import preview

            result = preview(args.path, args.out, args.episode, args.frames)
        else:
            from wam_ros.data.bag import recover
            from wam_ros.data.bag_frames import episode_paths

            result = {str(p): recover(p).get("outcome") for p in episode_paths(args.bags)}
    except (BagError, DatasetError, ImageError, ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from exc
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from wam_ros import __version__
    from wam_ros.ros.system import launch_arguments_help

    parser = argparse.ArgumentParser(prog="wam-ros", description="World Action Models on dual-arm robots")
    parser.add_argument("--version", action="version", version=f"wam-ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "bringup",
        help="run the system in one process (arguments as in dual_arm.launch.py)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=launch_arguments_help(),
    )
    p.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        help="name:=value, e.g. robot:=franka motion:=scripted; ROS arguments after --ros-args",
    )
    p = sub.add_parser(
        "doctor",
        help="check this PC for the robot: cameras and their serials, CAN or FCI, "
        "real-time kernel, DDS, disk, torch; OK/WARN/FAIL with the fix (exit 1 on a FAIL)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=launch_arguments_help(),
    )
    p.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        help="the bring-up arguments of the setup to check, "
        "e.g. robot:=agilex sim:=false cameras:=realsense params_file:=my_robot.yaml",
    )
    p = sub.add_parser(
        "episode",
        help="start or stop a recorded episode (the recorder's services, without the "
        "ros2 CLI): `wam-ros episode start`, `wam-ros episode stop --success`",
    )
    p.add_argument("action", choices=["start", "stop"])
    outcome = p.add_mutually_exclusive_group()
    outcome.add_argument(
        "--success", dest="outcome", action="store_const", const="success", help="stop: the episode succeeded"
    )
    outcome.add_argument(
        "--failure", dest="outcome", action="store_const", const="failure", help="stop: the episode failed"
    )
    p.add_argument("--namespace", default="", help="the system's namespace (bring-up's namespace:=)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the recorder")
    p = sub.add_parser(
        "demo",
        help="the simulated AgileX picks and places with a WAM under the supervisor: a "
        "clean episode and a slip it recovers from by rollback (or a scripted motion); writes "
        "summary.json, MP4s, contact sheets and the predicted 4D clouds",
    )
    p.add_argument("--robot", default="agilex", choices=ROBOTS)
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--source", default="policy", choices=["policy", "scripted"], help="what commands the arms")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="policy: checkpoint (default: the shipped models/<robot>_pick_place/policy.pt)",
    )
    p.add_argument(
        "--episodes",
        default=None,
        metavar="NAME:SEED[:PERTURBATION],...",
        help="policy: the episodes (default clean:10000,slip:10001:slip)",
    )
    p.add_argument("--max-seconds", type=float, default=20.0, help="policy: simulated seconds before an episode ends")
    p.add_argument(
        "--real-time-factor",
        type=float,
        default=None,
        help="policy: sim seconds per wall second (default 0.25: the policy's CPU inference then takes "
        "about as long in sim time as on a GPU)",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="policy: record demonstrations and train the policy here "
        "with the shipped one's benchmark settings (about an hour on 2 cores) instead of loading it",
    )
    p.add_argument("--demos", type=int, default=None, help="--train: demonstrations (default: the shipped policy's)")
    p.add_argument(
        "--slip-demos", type=int, default=None, help="--train: slip demonstrations (default: the shipped policy's)"
    )
    p.add_argument("--vae-steps", type=int, default=None, help="--train: stage 0 steps (default: the shipped policy's)")
    p.add_argument(
        "--video-steps", type=int, default=None, help="--train: stage 1 steps (default: the shipped policy's)"
    )
    p.add_argument(
        "--joint-steps", type=int, default=None, help="--train: stage 2 steps (default: the shipped policy's)"
    )
    p.add_argument("--duration", type=float, default=20.0, help="scripted: simulated seconds")
    p.add_argument(
        "--domain-id",
        type=int,
        default=None,
        help="ROS domain of the simulated robot (default: a "
        "private one chosen per run, localhost only, printed at the start)",
    )
    p = sub.add_parser("bench", help="benchmarks, printed as JSON")
    p.add_argument("target", choices=list(PERF_TARGETS))
    p.add_argument("--robot", default=None, choices=ROBOTS, help="default: agilex (bridge: franka, the only choice)")
    p.add_argument("--repeats", type=int, default=None, help="samples per measurement (default per benchmark)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="policy: seconds per chunking mode (default 60); split: seconds measured per link (default 20)",
    )
    p.add_argument("--checkpoint", default=None, help="policy, split: checkpoint (default: the demo policy)")
    p.add_argument(
        "--config",
        default=None,
        help="policy-model (default small), train-model (default xwam): "
        "model preset or YAML file, built with random weights",
    )
    p.add_argument(
        "--device",
        default=None,
        help="policy-model (default cpu), train-model (default cuda); "
        "a device this machine lacks is reported as skipped",
    )
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="policy-model: weights (default fp32)")
    p.add_argument(
        "--force",
        action="store_true",
        default=None,
        help="policy-model: run a paper-size config on the CPU anyway (minutes per pass)",
    )
    p.add_argument("--gpus", type=int, default=None, help="train-model without a GPU: GPUs to plan for (default 8)")
    p = sub.add_parser(
        "train",
        help="train a World Action Model on recorded episodes (an optional VAE stage, "
        "then video and joint stages); under torchrun: DDP or FSDP",
    )
    p.add_argument(
        "--data",
        type=Path,
        help="dataset directory: wam-ros export output (LeRobot v3 or ALOHA HDF5) or meta.json + "
        "episode_* (.npz files or .npy folders: frames streamed from disk)",
    )
    p.add_argument("--config", default="small", help="model preset (small, paper, ...) or a YAML file")
    p.add_argument("--robot", default=None, choices=ROBOTS, help="the robot (needed for ee_delta action spaces)")
    p.add_argument(
        "--out",
        type=Path,
        help="checkpoint file (written every --checkpoint-every steps; FSDP: sharded in OUT.sharded/, OUT at the end)",
    )
    p.add_argument("--init-from", type=Path, help="local pretrained Wan directory (diffusers layout)")
    # defaults: wam_ros/model/train.py:TrainConfig (not imported here: torch loads slowly)
    p.add_argument(
        "--vae-steps",
        type=int,
        dest="vae_stage_steps",
        help="stage 0 (a trainable VAE alone, whole batches) steps (default 0)",
    )
    p.add_argument("--video-steps", type=int, dest="video_stage_steps", help="stage 1 (video-only) steps")
    p.add_argument("--joint-steps", type=int, dest="joint_stage_steps", help="stage 2 (joint) steps")
    p.add_argument("--batch-size", type=int, help="micro-batch per process")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, help="linear warmup at the start of each stage")
    p.add_argument("--decay", choices=["linear", "cosine", "none"], help="decay at the end of each stage")
    p.add_argument("--decay-fraction", type=float, help="share of each stage that decays (1: all after warmup)")
    p.add_argument("--min-lr", type=float, help="learning rate at the end of the decay")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: autocast (fp32 weights and optimizer)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing per MoT layer")
    p.add_argument("--strategy", choices=["ddp", "fsdp"], help="under torchrun: replicate or shard per layer")
    p.add_argument("--workers", type=int, help="DataLoader worker processes reading the episodes")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument(
        "--stop-after",
        type=int,
        help="end after this many steps with the full run's schedule "
        "(to check that a run reproduces from the same inputs)",
    )
    p.add_argument("--resume", action="store_true", help="continue from --out (FSDP: OUT.sharded/) if it exists")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out exists (it is replaced)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the parameter counts and the memory plan "
        "(JSON; the model is built on the meta device, nothing is allocated) and exit",
    )
    p.add_argument("--gpus", type=int, default=1, help="--dry-run: GPUs to plan for")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p = sub.add_parser("export", help="recorded episode bags -> a training dataset (LeRobot v3 or ALOHA HDF5)")
    p.add_argument("bags", nargs="+", type=Path, help="episode bag directories, or directories of them")
    p.add_argument("--format", required=True, choices=["lerobot", "hdf5"])
    p.add_argument("--out", type=Path, required=True, help="dataset directory")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate to resample to (from the message stamps)")
    p.add_argument(
        "--video-codec",
        default="h264",
        choices=["h264", "av1", "lossless"],
        help="lerobot colour videos (depth: LeRobot's depth map, millimetres up to 4.095 m)",
    )
    p.add_argument("--gamma", type=float, default=0.99, help="discount of the Monte Carlo value targets")
    p.add_argument("--gate-window", type=int, default=20, help="gate labels: frames around a gripper event")
    p.add_argument("--successes-only", action="store_true", help="leave out failed and partial episodes")
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("dataset", help="inspect and repair datasets and recordings")
    dataset = p.add_subparsers(dest="dataset_command", required=True)
    q = dataset.add_parser("info", help="episodes, lengths, cameras, fps, success rate (JSON)")
    q.add_argument("path", type=Path)
    q.add_argument("--fps", type=float, default=15.0, help="recordings: frame rate to count frames at")
    q = dataset.add_parser("preview", help="PNG of one episode: camera frames and joint plots")
    q.add_argument("path", type=Path)
    q.add_argument("--episode", type=int, default=0)
    q.add_argument("--frames", type=int, default=5)
    q.add_argument("--out", type=Path, default=Path("out/episode_preview.png"))
    q = dataset.add_parser("recover", help="rebuild the bag of a recording that was killed (marked partial)")
    q.add_argument("bags", nargs="+", type=Path)
    p = sub.add_parser("calibration-check", help="project the wrist frames into the head camera image (PNG)")
    p.add_argument("--robot", default="agilex", choices=ROBOTS)
    p.add_argument("--image", type=Path, default=None, help="a head camera image (default: the simulator renders one)")
    p.add_argument(
        "--camera-info",
        type=Path,
        default=None,
        help="YAML with k: [9 values] of the head camera (needed with --image)",
    )
    p.add_argument("--joints", type=Path, default=None, help="YAML {joint: position} at the time of the image")
    p.add_argument("--out", type=Path, default=Path("out/calibration_check.png"))
    p = sub.add_parser(
        "calibrate",
        help="the cameras' mounts from a ChArUco board: wrist hand-eye (every "
        "OpenCV method, with residuals) and the head's extrinsics, from a recorded episode (--bag) "
        "or in the simulator (--sim); JSON; --write puts them into config/robots/<robot>.yaml "
        "(a backup kept)",
    )
    p.add_argument("--robot", default="agilex", choices=ROBOTS)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--bag",
        type=Path,
        help="a recorded episode: the board fixed on the table, each arm moved "
        "under teleop to poses where its wrist camera sees it (pause at each: still frames are used)",
    )
    source.add_argument("--sim", action="store_true", help="the same procedure in the simulator")
    p.add_argument("--board-squares", default="7x5", help="columns x rows of squares")
    p.add_argument("--square", type=float, default=0.05, help="square side (m)")
    p.add_argument("--marker", type=float, default=0.037, help="ArUco marker side (m)")
    p.add_argument("--dictionary", default="DICT_5X5_100", help="OpenCV ArUco dictionary")
    p.add_argument(
        "--board-xyz",
        type=float,
        nargs=3,
        default=[0.1, -0.12, 0.002],
        help="where the board lies on the table (m, base frame; its corner)",
    )
    p.add_argument("--seed", type=int, default=0, help="the random arm poses")
    p.add_argument("--write", action="store_true", help="write the mounts into the robot's config (backup kept)")
    p = sub.add_parser("render-prediction", help="PNG of a checkpoint's predicted 4D point cloud (sim observation)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--robot", choices=ROBOTS, help="must match the checkpoint's joints (default: the robot they fit)")
    p.add_argument("--instruction", default="", help="task instruction (default: the checkpoint's only task)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/prediction_4d.png"))
    p = sub.add_parser(
        "eval-world-model",
        help="predicted future frames, depth and 4D clouds vs 'nothing moves' "
        "on held-out episodes, per horizon step (JSON and a PNG strip)",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="dataset directory (as for train)")
    p.add_argument("--episodes", type=int, nargs="+", default=[], help="held-out episode indices (default: all)")
    p.add_argument("--robot", default="agilex", choices=ROBOTS, help="kinematics for the camera poses")
    p.add_argument("--stride", type=int, default=0, help="frames between observations (0: the chunk length)")
    p.add_argument("--max-samples", type=int, default=0, help="observations in all (0: every stride)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--expert",
        default="gated",
        choices=["gated", "predictive", "reactive"],
        help="whose actions the predicted future follows (gated: the gate's pick, as deployed)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/eval_world_model"),
        help="directory for world_model_eval.json and world_model_strip.png",
    )
    p = sub.add_parser(
        "benchmark",
        help="closed-loop benchmark on a simulated task: record scripted demonstrations "
        "through the node graph, train, evaluate (with ablations), write report.md",
    )
    p.add_argument("--robot", default="agilex", choices=ROBOTS)
    p.add_argument("--task", default="pick_place", choices=sorted(TASKS))
    p.add_argument("--demos", type=int, default=24, help="demonstrations to record")
    p.add_argument(
        "--demo-condition",
        default="clean",
        choices=["clean", "random"],
        help="scenes of the demonstrations (random: Random's positions and appearance)",
    )
    p.add_argument(
        "--slip-demos",
        type=int,
        default=0,
        help="demonstrations more in which the object slips from the grasp (failed: they teach the "
        "value a lost object, not the actions)",
    )
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per variant (in process)")
    p.add_argument(
        "--graph-episodes",
        type=int,
        default=20,
        help="episodes per variant through the node graph (wam-ros bringup per episode; 0: none)",
    )
    p.add_argument(
        "--graph-jobs",
        type=int,
        default=0,
        help="graph episodes at a time, each on its own DDS domain (0: as many as the cores allow)",
    )
    p.add_argument(
        "--graph-real-time-factor",
        type=float,
        default=1.0,
        help="the graph's simulated world at most this many sim seconds per wall second (1: real time, as on a "
        "robot; below 1 for a machine that cannot render, simulate and infer in real time)",
    )
    p.add_argument(
        "--graph-groups",
        default="",
        help="comma-separated variant groups to evaluate through the "
        "graph (main, rollback, experts, denoising, depth; empty: all)",
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="evaluate this checkpoint: no demonstrations, no training"
    )
    p.add_argument("--vae-steps", type=int, default=2000, help="training steps of stage 0 (the VAE alone)")
    p.add_argument("--video-steps", type=int, default=400, help="training steps of stage 1")
    p.add_argument("--joint-steps", type=int, default=4000, help="training steps of stage 2")
    p.add_argument("--model", default="bench", help="model preset or YAML file")
    p.add_argument("--no-ablations", action="store_true", help="evaluate Clean and Random only")
    p.add_argument("--max-seconds", type=float, default=20.0, help="simulated seconds before an episode fails")
    p.add_argument("--out", type=Path, default=Path("out/benchmark"))
    p.add_argument(
        "--domain-id",
        type=int,
        default=None,
        help="ROS domain of the simulated robot (default: a "
        "private one chosen per run, localhost only, printed at the start)",
    )
    p = sub.add_parser(
        "text-features",
        help="umT5 features of instructions from a local encoder, into the file "
        "that text_encoder=precomputed reads (and umt5 caches in)",
    )
    p.add_argument("instructions", nargs="+")
    p.add_argument(
        "--encoder",
        type=Path,
        required=True,
        help="local directory: UMT5EncoderModel + tokenizer, or a Wan diffusers directory",
    )
    p.add_argument("--out", type=Path, required=True, help="feature file (instructions already in it are kept)")
    p.add_argument("--tokens", type=int, default=512, help="text_tokens of the model config (Wan: 512)")
    p.add_argument("--device", default="cpu", help="where the encoder runs (cpu, cuda, cuda:N)")
    p = sub.add_parser("urdf", help="regenerate urdf/*.urdf from config/robots/*.yaml")
    p.add_argument("--check", action="store_true", help="only report URDFs that differ from their YAML")
    p.add_argument("--out", type=Path, default=None, help="directory (default: the package's urdf/)")
    args = parser.parse_args(argv)

    try:
        if args.command == "bringup":
            return cmd_bringup(args.arguments)
        if args.command == "doctor":
            return cmd_doctor(args.arguments)
        if args.command == "episode":
            if args.action == "stop" and args.outcome is None:
                parser.error("episode stop: say --success or --failure")
            return cmd_episode(args)
        if args.command in ("demo", "benchmark"):
            from wam_ros.ros.system import use_private_graph

            domain = use_private_graph(args.domain_id)
            print(
                f"[{args.command}] the simulated robot runs on ROS domain {domain}, localhost only (to watch it: "
                f"ROS_DOMAIN_ID={domain} ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST rviz2)",
                file=sys.stderr,
                flush=True,
            )
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "bench":
            import inspect

            from wam_ros.perf import target

            run = target(args.target)
            options = _given(
                args, "robot", "repeats", "duration", "checkpoint", "config", "device", "dtype", "force", "gpus"
            )
            unsupported = set(options) - set(inspect.signature(run).parameters)
            if unsupported:
                raise ConfigError(f"bench {args.target} takes no --{', --'.join(sorted(unsupported))}")
            print(json.dumps(run(**options), indent=2))
            return 0
        if args.command == "benchmark":
            from wam_ros.benchmark.run import BenchmarkConfig, run_benchmark

            config = BenchmarkConfig(
                robot=args.robot,
                task=args.task,
                demos=args.demos,
                demo_condition=args.demo_condition,
                slip_demos=args.slip_demos,
                episodes=args.episodes,
                graph_episodes=args.graph_episodes,
                graph_jobs=args.graph_jobs,
                graph_groups=tuple(g for g in args.graph_groups.split(",") if g),
                graph_real_time_factor=args.graph_real_time_factor,
                checkpoint=args.checkpoint,
                model=args.model,
                vae_steps=args.vae_steps,
                video_steps=args.video_steps,
                joint_steps=args.joint_steps,
                ablations=not args.no_ablations,
                max_seconds=args.max_seconds,
                out=args.out,
            )
            run_benchmark(config)
            print(f"wrote {args.out / 'report.md'}, {args.out / 'results.json'}")
            return 0
        if args.command == "calibration-check":
            return cmd_calibration_check(args)
        if args.command == "calibrate":
            return cmd_calibrate(args)
        if args.command in ("export", "dataset"):
            return cmd_data(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "eval-world-model":
            import torch

            from wam_ros.data.dataset import DatasetError
            from wam_ros.model.policy import CheckpointMismatch
            from wam_ros.model.world_eval import EvalConfig, evaluate_world_model

            if args.threads:
                torch.set_num_threads(args.threads)
            config = EvalConfig(
                episodes=tuple(args.episodes),
                stride=args.stride,
                max_samples=args.max_samples,
                robot=args.robot,
                seed=args.seed,
                expert=args.expert,
            )
            try:
                report = evaluate_world_model(args.checkpoint, args.data, args.out, config)
            except (FileNotFoundError, CheckpointMismatch, DatasetError, ValueError) as exc:
                raise ConfigError(str(exc)) from exc
            print(json.dumps(report, indent=2))
            return 0
        if args.command == "render-prediction":
            from wam_ros.model.policy import CheckpointMismatch
            from wam_ros.render_prediction import render_prediction

            try:
                summary = render_prediction(args.checkpoint, args.out, args.robot, args.seed, args.instruction)
            except (FileNotFoundError, CheckpointMismatch, ValueError) as exc:
                raise ConfigError(str(exc)) from exc
            print(json.dumps(summary, indent=2))
            return 0
        if args.command == "text-features":
            from wam_ros.model.text import UMT5TextEncoder, umt5_width

            try:
                encoder = UMT5TextEncoder(str(args.encoder), args.tokens, umt5_width(args.encoder), str(args.out))
                encoder.to(args.device).register(args.instructions)
            except (FileNotFoundError, ValueError) as exc:
                raise ConfigError(str(exc)) from exc
            print(
                json.dumps(
                    {
                        "out": str(args.out),
                        "instructions": sorted(encoder.cache),
                        "tokens": args.tokens,
                        "dim": encoder.dim,
                    },
                    indent=2,
                )
            )
            return 0
        if args.command == "urdf":
            from wam_ros.paths import share_dir
            from wam_ros.robots.urdf import write_urdfs

            stale = write_urdfs(args.out or share_dir() / "urdf", check=args.check)
            for path in stale:
                print(f"{'stale' if args.check else 'wrote'}: {path}")
            return 1 if (args.check and stale) else 0
    except ConfigError as exc:
        print(f"wam-ros {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
