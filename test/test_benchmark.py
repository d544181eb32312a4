"""Benchmark tasks, the scripted expert, recording through the node graph, the in-process closed
loop and the report. The full `wam-ros benchmark` run is long; its pipeline runs here in a short
form (two demonstrations, a few training steps, one episode per variant)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from wam_ros.config import ConfigError, load_robot_config
from wam_ros.control.limits import CheckConfig, check_targets, robot_joint_limits
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.robots.urdf import generate_urdf
from wam_ros.sim.expert import plan_expert
from wam_ros.sim.tasks import TASKS, EpisodeSpec, TaskMonitor, sample_episode, setup_world
from wam_ros.sim.world import HIDDEN, SimWorld


@pytest.fixture(scope="module")
def agilex():
    robot = load_robot_config("agilex")
    urdf = generate_urdf(robot)
    world = SimWorld(robot, urdf)
    yield robot, world, Kinematics(urdf)
    world.close()


def run_expert(robot, world, kinematics, spec: EpisodeSpec, observe=None) -> TaskMonitor:
    """The expert's plan executed directly on the simulated servos; returns the task monitor."""
    setup = setup_world(world, spec)
    plan = plan_expert(robot, kinematics, setup, np.random.default_rng(spec.seed))
    monitor = TaskMonitor(world, setup)
    t = 0.0
    while t < plan.duration + 0.5:
        world.set_targets(robot.joint_names, plan.targets(t))
        world.step(0.01)
        t += 0.01
        status = monitor.update()
        if observe:
            observe(t, status)
    return monitor


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_completes_every_agilex_task_in_clean_scenes(agilex, task):
    robot, world, kinematics = agilex
    for seed in range(3):
        stages_seen = []
        monitor = run_expert(
            robot,
            world,
            kinematics,
            EpisodeSpec(task, "agilex", "clean", seed),
            lambda t, s: stages_seen.append(s.stage),
        )
        assert monitor.status.success, f"{task} seed {seed}: stopped after stage {monitor.status.stage_name!r}"
        assert monitor.status.stage == len(TASKS[task].stages)
        assert 0 < monitor.status.time_to_success < 20
        assert stages_seen == sorted(stages_seen)  # latched: a stage once completed stays completed


@pytest.mark.parametrize("robot_name", ["agilex", "franka", "tienkung"])
def test_the_experts_chunks_pass_the_supervisors_checks(robot_name):
    """Chunks as scripted_motion_node cuts them from the plan (15 steps at 15 Hz, from any moment)
    pass the supervisor's joint checks: a segment too fast for a limit was rejected, the arm stopped,
    and every later chunk then started too far from it (2 of 8 demonstrations failed that way)."""
    robot = load_robot_config(robot_name)
    kinematics = Kinematics(generate_urdf(robot))
    checks = CheckConfig(limits=robot_joint_limits(robot))
    dt, horizon = 1.0 / 15.0, 15
    for seed in range(6):
        plan = plan_expert(
            robot,
            kinematics,
            sample_episode(EpisodeSpec("pick_place", robot_name, "clean", seed), robot),
            np.random.default_rng(seed),
        )
        arm = [i for i, n in enumerate(plan.joint_names) if n in checks.limits]
        names = [plan.joint_names[i] for i in arm]
        for start in np.arange(0.0, plan.duration, 0.05):
            rows = np.array([plan.targets(start + k * dt) for k in range(horizon)])[:, arm]
            check_targets(rows, names, dt, rows[0], checks)  # raises ChunkRejected with the reason


def test_stage_markers_come_in_order_and_success_needs_the_release(agilex):
    robot, world, kinematics = agilex
    first_seen = {}

    def observe(t, status):
        first_seen.setdefault(status.stage, t)
        if status.stage < 2:
            assert not status.success

    run_expert(robot, world, kinematics, EpisodeSpec("pick_place", "agilex", "clean", 7), observe)
    assert 0 < first_seen[1] < first_seen[2]


@pytest.mark.parametrize("kind, landing", [("drop", (0.03, 0.05)), ("slip", (0.0, 0.015))])
def test_drop_and_slip_take_the_cube_out_of_the_hand_and_the_expert_retries_only_a_slip(agilex, kind, landing):
    robot, world, kinematics = agilex
    spec = EpisodeSpec("pick_place", "agilex", "clean", 3, kind)
    start = np.array(sample_episode(spec, robot).positions["red_cube"])
    seen, gripper = [], robot.joint_names.index("left_gripper")
    monitor = run_expert(
        robot,
        world,
        kinematics,
        spec,
        lambda t, s: seen.append(
            (t, s.stage, s.perturbed, world.object_position("red_cube"), world.joint_positions()[gripper])
        ),
    )
    grasped_at = next(t for t, stage, *_ in seen if stage >= 1)
    dropped_at, landed = next((t, cube) for t, _, perturbed, cube, _ in seen if perturbed)
    # the fingers close on nothing at the drive's rated speed, never as fast as a faulty reading (the
    # bridges refuse those: a teleported cube had snapped the simulated fingers shut at 0.44 m/s)
    times, opening = np.array([r[0] for r in seen]), np.array([r[4] for r in seen])
    assert np.max(np.abs(np.diff(opening)) / np.diff(times)) <= 1.1 * robot.arm.gripper.velocity
    after = (times >= dropped_at) & (times <= dropped_at + 0.5)
    assert opening[after].min() < 0.5 * opening[after][0]  # ... and do close past where the cube held them
    assert dropped_at == pytest.approx(grasped_at + monitor.perturb_delay, abs=0.02)
    assert landing[0] - 0.005 <= np.linalg.norm(landed[:2] - start) <= landing[1] + 0.005  # from where it lay
    cube = world.object_position("red_cube")
    if kind == "drop":  # displaced where the expert's plan does not look: it fails
        assert cube[2] < world.table_top() + 0.03 and not monitor.status.success  # on the table, not in the bin
    else:  # fallen straight down: the expert opens, grasps it again where it lies and places it
        assert monitor.status.success
        assert (
            np.count_nonzero(np.diff((opening < 0.9 * robot.arm.gripper.stroke).astype(int)) == 1) == 2
        )  # closed twice


def test_nudge_perturbation_slides_the_cube_as_the_gripper_approaches(agilex):
    robot, world, kinematics = agilex
    spec = EpisodeSpec("pick_place", "agilex", "clean", 4, "nudge")
    start = np.array(sample_episode(spec, robot).positions["red_cube"])
    moved = []

    def observe(t, status):
        if status.perturbed and not moved:
            gap = np.linalg.norm(world.tcp_position("left") - world.object_position("red_cube"))
            moved.append((status.stage, np.linalg.norm(world.object_position("red_cube")[:2] - start), gap))

    run_expert(robot, world, kinematics, spec, observe)
    ((stage, distance, gap),) = moved
    assert stage == 0  # before the grasp
    assert 0.03 - 1e-3 <= distance <= 0.05 + 1e-3
    assert gap > 0.02  # out of the closing gripper's way


def test_random_condition_changes_the_scene_and_clean_keeps_the_demo_range(agilex):
    robot, world, _ = agilex
    task = TASKS["pick_place"]
    nominal = task.layout("agilex").positions["red_cube"]
    clean = [sample_episode(EpisodeSpec("pick_place", "agilex", "clean", s), robot) for s in range(20)]
    rand = [sample_episode(EpisodeSpec("pick_place", "agilex", "random", s), robot) for s in range(20)]
    assert all(max(abs(a - b) for a, b in zip(c.positions["red_cube"], nominal)) <= task.clean_spread for c in clean)
    assert any(max(abs(a - b) for a, b in zip(r.positions["red_cube"], nominal)) > task.clean_spread for r in rand)
    assert sample_episode(EpisodeSpec("pick_place", "agilex", "random", 5), robot) == rand[5]  # deterministic
    assert all(1 <= len(r.appearance.distractors) <= 3 for r in rand)
    for r in rand:  # clutter stays clear of the task objects
        for d in r.appearance.distractors:
            assert all(math.dist(d.xyz[:2], xy) > 0.09 for xy in r.positions.values())
    setup_world(world, EpisodeSpec("pick_place", "agilex", "clean", 5))
    clean_head = world.render("head").rgb
    setup = setup_world(world, EpisodeSpec("pick_place", "agilex", "random", 5))
    random_head = world.render("head").rgb
    assert np.abs(clean_head.astype(int) - random_head.astype(int)).mean() > 5
    slot = world.model.body("distractor_0").mocapid[0]
    assert np.allclose(world.data.mocap_pos[slot][:2], setup.appearance.distractors[0].xyz[:2])
    setup_world(world, EpisodeSpec("pick_place", "agilex", "clean", 5))
    assert np.allclose(world.data.mocap_pos[slot], HIDDEN)  # Clean: the clutter is gone again


def test_bad_episodes_are_refused_by_name():
    with pytest.raises(ConfigError, match="task"):
        EpisodeSpec("juggle", "agilex")
    with pytest.raises(ConfigError, match="not available on robot 'tienkung'"):
        EpisodeSpec("handover", "tienkung")
    with pytest.raises(ConfigError, match="condition"):
        EpisodeSpec("stack", "agilex", condition="dusty")
    with pytest.raises(ConfigError, match="perturbation"):
        EpisodeSpec("stack", "agilex", perturbation="shake")
    from wam_ros.benchmark.run import BenchmarkConfig

    with pytest.raises(ConfigError, match="demo_condition"):
        BenchmarkConfig(demo_condition="dusk")


def test_system_description_passes_the_episode_to_the_simulator_and_the_expert():
    from wam_ros.ros.system import SystemOptions, describe_system

    opts = SystemOptions.from_arguments(
        {
            "task": "stack",
            "seed": "12",
            "condition": "random",
            "teleop": "scripted",
            "record": "true",
            "perturbation": "drop",
        }
    )
    specs = {s.executable: s for s in describe_system(opts)}
    assert specs["sim_node"].parameters["seed"] == 12
    for name in ("task", "seed", "condition", "perturbation"):
        assert specs["sim_node"].parameters[name] == specs["scripted_motion_node"].parameters[name]
    assert specs["sim_node"].parameters["perturbation"] == "drop"
    assert specs["recorder_node"].parameters["instruction"] == TASKS["stack"].instruction
    with pytest.raises(ConfigError, match="seed"):
        SystemOptions.from_arguments({"task": "stack", "seed": "many"})
    with pytest.raises(ConfigError, match="not available on robot 'franka'"):
        SystemOptions.from_arguments({"task": "handover", "robot": "franka"})
    with pytest.raises(ConfigError, match="sim:=true"):
        SystemOptions.from_arguments({"task": "stack", "sim": "false", "cameras": "realsense"})


@pytest.fixture(scope="module")
def short_benchmark(tmp_path_factory):
    """Two demonstrations and one with a slip recorded through the node graph, a few training steps,
    every variant once in process and the main variants once through the graph."""
    from support.ros import SPARE_DOMAIN_IDS
    from wam_ros.benchmark.run import BenchmarkConfig, run_benchmark

    # latency not charged to the clock: on a loaded CI machine the synchronous and video variants
    # would otherwise spend the whole short episode inside their first inference
    # the bench model with 2 of 4 denoising passes for actions (the pipeline is under test, not the
    # model: 5 of 25 passes of a Wan VAE-decoded video per chunk took 17 minutes on a loaded 2-core box)
    out = tmp_path_factory.mktemp("benchmark")
    (out / "short.yaml").write_text("base: bench\naction_steps: 2\nvideo_steps: 4\n")
    cfg = BenchmarkConfig(
        demos=2,
        slip_demos=1,
        episodes=1,
        graph_episodes=1,
        graph_groups=("main",),
        graph_jobs=2,  # two worker processes, each on a DDS domain of its own
        vae_steps=2,
        video_steps=4,
        joint_steps=4,
        max_seconds=4.0,
        latency_scale=0.0,
        model=str(out / "short.yaml"),
        out=out,
    )
    console = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stderr(console):
        env.setenv("ROS_DOMAIN_ID", str(SPARE_DOMAIN_IDS[1]))  # not the session bring-up's clock
        results = run_benchmark(cfg)
    (out / "console.log").write_text(console.getvalue())
    return cfg, results


@pytest.mark.slow
@pytest.mark.ros
def test_the_benchmark_shows_progress_with_eta_for_each_long_step(short_benchmark):
    """Recording, training (echoed from its process, not only in train.log) and evaluation."""
    cfg, _ = short_benchmark
    console = (cfg.out / "console.log").read_text()
    for start in (
        "demonstrations 3/3 |",
        "[benchmark] train 10/10 | [joint]",
        "evaluate in process 13/13 |",
        "graph episodes 2/2 |",
    ):
        line = next((line for line in console.splitlines() if start in line), None)
        assert line is not None and "ETA" in line and "elapsed" in line, (start, console[-3000:])


@pytest.mark.slow
@pytest.mark.ros
def test_benchmark_pipeline_short_form(short_benchmark):
    from wam_ros.benchmark.run import run_benchmark, variants
    from wam_ros.data.bag_frames import episode_paths, index_episode

    cfg, results = short_benchmark
    bags = episode_paths([cfg.out / "demos"])
    assert len(bags) == 3
    rows = results["demonstrations"]
    assert [(r["perturbation"], r["seed"]) for r in rows] == [("none", 0), ("none", 1), ("slip", 5000)]
    # the expert grasps a slipped cube again (its recovery is measured in process, above): a longer plan
    assert rows[2]["plan_s"] > max(rows[0]["plan_s"], rows[1]["plan_s"]) + 1.0
    # the expert's success rate is measured in process (test_expert_completes_every_agilex_task...);
    # through the graph on a loaded 2-core box a held supervisor may fail one demonstration (a fresh
    # clone's run beside a training job recorded one at stage 0), and it is recorded as a failure
    outcomes = []
    for bag, row in zip(bags, results["demonstrations"]):
        record = json.loads((bag / "episode.json").read_text())
        assert record["task"] == TASKS["pick_place"].instruction and record["outcome"] in ("success", "failure")
        assert row["success"] == (record["outcome"] == "success")
        outcomes.append(record["outcome"])
        if record["outcome"] == "success":
            index = index_episode(bag, 15.0)
            assert len(index.stage_frames) == 2 and 0 < index.stage_frames[0] < index.stage_frames[1] < len(index)
    assert "success" in outcomes
    # the dataset keeps any failure: its value targets are 0 (what a lost object is worth), its
    # actions are not imitated (model.train: imitate = success)
    table = pq.read_table(cfg.out / "dataset" / "data" / "chunk-000" / "file-000.parquet")
    episode, value = (np.array(table.column(c).to_pylist()) for c in ("episode_index", "value_target"))
    for e, outcome in enumerate(outcomes):
        assert (value[episode == e] == 0).all() == (outcome == "failure") and (episode == e).any()
    names = [v.name for v in variants(True)]
    assert list(results["in_process"]) == names
    # an ablation group's baseline has the Clean settings: its episodes are Clean's, not a rerun
    for baseline in ("gated experts", "ANS (T_a < T_O)"):
        assert results["in_process"][baseline] == results["in_process"]["clean"]
        assert [r["variant"] for r in results["in_process"][baseline]] == ["clean"]
    for name in names:
        (row,) = results["in_process"][name]
        assert row["chunks"] > 0 and row["latency_ms_median"] > 0, (name, row)
    # through the graph: the main group only (graph_groups), on the in-process rows' seeds
    assert list(results["graph"]) == ["clean", "random"]
    for name in ("clean", "random"):
        (row,) = results["graph"][name]
        assert row["sim_s"] >= 4.0 and row["chunks"] > 0, row
        assert row["seed"] == results["in_process"][name][0]["seed"] and row["condition"] == name
    report = (cfg.out / "report.md").read_text()
    assert "| clean | main |" in report and "synchronous" in report
    assert "## In process and through the node graph" in report
    assert re.search(r"\| random \| [01]/1 \| \d+%–\d+% \| [01]/1 \| \d+%–\d+% \|", report), report
    for plot in ("success.png", "latency.png"):
        assert (cfg.out / plot).stat().st_size > 5000
    # a second run reuses the recordings and the checkpoint
    again = run_benchmark(cfg)
    assert "record_s" not in again["timings_s"] and "train_s" not in again["timings_s"]
    assert again["graph"] == results["graph"]  # the graph episodes of this checkpoint are kept too
    assert {d["condition"] for d in again["demonstrations"]} == {"clean"}
    with pytest.raises(ConfigError, match=r"holds demonstrations in \['clean'\] scenes, not 'random'"):
        run_benchmark(dataclasses.replace(cfg, demo_condition="random"))  # never mixed into one dataset


@pytest.mark.ros
def test_a_scene_the_expert_cannot_plan_is_skipped_with_its_reason(tmp_path):
    from wam_ros.benchmark.graph import record_demonstrations

    seen = []
    # Random seed 20 puts the bin where the Piper has no top-down approach (found by planning seeds 0..59)
    rows = record_demonstrations(
        "agilex", "pick_place", [20], tmp_path / "demos", (128, 160), "random", on_row=seen.append
    )
    assert rows == seen and len(rows) == 1
    assert rows[0]["recorded"] is False and rows[0]["seed"] == 20 and rows[0]["condition"] == "random"
    assert "skipped, the expert cannot plan this scene: left arm: no top-down approach" in rows[0]["message"]
    assert not (tmp_path / "demos").exists()  # nothing was brought up or recorded


@pytest.mark.slow
@pytest.mark.ros
def test_closed_loop_is_reproducible_without_latency(short_benchmark):
    """With the inference latency not charged to the clock, an episode is a pure function of its
    seeds: the loop holds no hidden state between episodes."""
    import torch

    from wam_ros.benchmark.evaluate import ClosedLoop, EvalOptions
    from wam_ros.model.policy import load_policy

    cfg, _ = short_benchmark
    torch.set_num_threads(2)
    loop = ClosedLoop(load_policy(cfg.out / "policy.pt"), load_robot_config("agilex"))
    try:
        spec = EpisodeSpec("pick_place", "agilex", "clean", 10_001)
        options = EvalOptions(latency_scale=0.0, max_seconds=2.0)
        first = loop.run(spec, options, seed=3)
        q_first = loop.world.joint_positions()
        second = loop.run(spec, options, seed=3)
        assert np.allclose(loop.world.joint_positions(), q_first)
        assert first.chunks == second.chunks > 0
    finally:
        loop.close()


def test_graph_workers_get_domains_of_their_own():
    from wam_ros.benchmark.graph import worker_domains
    from wam_ros.ros.system import SAFE_DOMAIN_IDS

    assert worker_domains(7, 1, 12345) == [7]  # one worker: the benchmark's own private domain
    for seed in range(200):
        domains = worker_domains(7, 4, seed)
        assert domains[0] == 7 and len(set(domains)) == 4 and all(d in SAFE_DOMAIN_IDS for d in domains)
