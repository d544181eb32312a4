"""`wam-ros benchmark`: record -> export -> train -> evaluate -> report, on a CPU machine.

1. Demonstrations: the scripted expert through the node graph, recorded by recorder_node
   (graph.record_demonstrations), in Clean (or with --demo-condition, Random) scenes, seeds from 0
   on; a seed the expert cannot plan is skipped.
2. Export to LeRobot v3 (wam_ros.data.export) and train the `bench` model with `wam-ros train`.
3. Evaluation of every variant on seeds disjoint from the demonstrations' (a variant with the same
   settings as an earlier one, the baseline row of an ablation group, shares its episodes), twice:
   in process (evaluate.ClosedLoop: the classes the nodes call, a simulated clock; the fast path
   for ablations) and through the node graph (graph.evaluate_episodes: `wam-ros bringup`'s nodes
   over Fast DDS, sim time, several episodes at a time where the cores allow). With --checkpoint,
   steps 1 and 2 are skipped and that checkpoint is evaluated.
4. results.json, report.md (the two evaluations side by side, with 95 % intervals) and PNG plots
   (report.py).

Each step reuses what an earlier run left in the output directory when it matches, so a run
that was interrupted goes on where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from wam_ros.benchmark.evaluate import ClosedLoop, EvalOptions
from wam_ros.config import ConfigError, check_choice, load_robot_config
from wam_ros.progress import Progress
from wam_ros.sim.tasks import CONDITIONS, EpisodeSpec, get_task
from wam_ros.sim.world import SimConfig

EVAL_SEED_OFFSET = 10_000  # evaluation scenes never repeat a demonstration's seed
SLIP_DEMO_SEED = 5_000  # slip demonstrations' seeds: below the evaluation scenes', apart from the clean ones


@dataclass(frozen=True)
class Variant:
    name: str
    condition: str = "clean"
    perturbation: str = "none"
    options: EvalOptions = EvalOptions()
    group: str = "main"


def variants(ablations: bool) -> list[Variant]:
    main = [Variant("clean"), Variant("random", condition="random")]
    if not ablations:
        return main
    return main + [
        Variant("drop, rollback on", perturbation="drop", group="rollback"),
        Variant("drop, rollback off", perturbation="drop", options=EvalOptions(rollback=False), group="rollback"),
        Variant("slip, rollback on", perturbation="slip", group="rollback"),
        Variant("slip, rollback off", perturbation="slip", options=EvalOptions(rollback=False), group="rollback"),
        Variant("nudge, rollback on", perturbation="nudge", group="rollback"),
        Variant("nudge, rollback off", perturbation="nudge", options=EvalOptions(rollback=False), group="rollback"),
        Variant("gated experts", group="experts"),
        Variant("predictive only", options=EvalOptions(expert="predictive"), group="experts"),
        Variant("reactive only", options=EvalOptions(expert="reactive"), group="experts"),
        Variant("ANS (T_a < T_O)", group="denoising"),
        Variant("synchronous (T_a = T_O)", options=EvalOptions(ans=False), group="denoising"),
        Variant("video + depth branch", options=EvalOptions(video=True, depth=True), group="depth"),
        Variant("video, depth branch off", options=EvalOptions(video=True, depth=False), group="depth"),
    ]


@dataclass(frozen=True)
class BenchmarkConfig:
    robot: str = "agilex"
    task: str = "pick_place"
    demos: int = 24
    demo_condition: str = "clean"  # random: demonstrations over Random's positions and appearance
    # demonstrations in which the object slips from the expert's grasp (seeds from SLIP_DEMO_SEED):
    # failed episodes, so their actions are not imitated, but they show the value what a lost
    # object looks like (all their Monte Carlo targets are 0), which a rollback needs to fire
    slip_demos: int = 0
    episodes: int = 10  # per variant, in process
    graph_episodes: int = 20  # per variant, through the node graph (0: in process only)
    graph_jobs: int = 0  # graph episodes at a time (0: as many as the cores allow)
    graph_groups: tuple[str, ...] = ()  # variant groups evaluated through the graph (empty: all)
    # the graph's simulated world at most this fast (sim seconds per wall second): 1 is what a robot
    # does; below 1 gives a machine that cannot render, simulate and infer in real time the time it lacks
    graph_real_time_factor: float = 1.0
    checkpoint: Path | None = None  # evaluate this checkpoint: no demonstrations, no training
    model: str = "bench"
    vae_steps: int = 2000
    video_steps: int = 400
    joint_steps: int = 4000
    ablations: bool = True
    max_seconds: float = 20.0
    sim_size: tuple[int, int] = (128, 160)  # camera height, width
    threads: int = 2
    latency_scale: float = 1.0  # sim seconds per wall second of inference (0: the world waits for the model)
    out: Path = Path("out/benchmark")

    def __post_init__(self) -> None:
        get_task(self.task).layout(self.robot)
        check_choice("demo_condition", self.demo_condition, CONDITIONS)
        if self.demos < 1 or self.episodes < 1 or self.graph_episodes < 0 or self.slip_demos < 0 or self.graph_jobs < 0:
            raise ConfigError("demos and episodes must be >= 1, graph_episodes, graph_jobs and slip_demos >= 0")
        unknown = set(self.graph_groups) - {v.group for v in variants(True)}
        if unknown:
            raise ConfigError(
                f"graph_groups: unknown {sorted(unknown)}; groups: {sorted({v.group for v in variants(True)})}"
            )
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ConfigError(f"checkpoint {self.checkpoint}: no such file")

    def jobs(self) -> int:
        """Graph episodes at a time: each runs the policy on `threads` cores beside the simulator's
        rendering and the other nodes (about one core more)."""
        return self.graph_jobs or max(1, (os.cpu_count() or 1) // (self.threads + 1))

    def graph_threads(self) -> int:
        """Torch threads of each graph episode's policy: its share of the cores less the one the
        simulator and the other nodes keep busy, at most `threads`. More threads than free cores
        thrash: OpenMP's threads spin at every barrier while one of them waits for a core (with 2
        threads on 2 cores beside the simulator, 1.2-1.3 s per chunk instead of ~0.15 s)."""
        return max(1, min(self.threads, (os.cpu_count() or 1) // self.jobs() - 1))


def _log(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def demonstrations(cfg: BenchmarkConfig, timings: dict) -> list[dict]:
    """Records until cfg.demos unperturbed and cfg.slip_demos slip episodes exist. demos.json is
    rewritten after every seed, so an interrupted run loses no row; seeds the expert cannot plan are
    listed and skipped."""
    from wam_ros.benchmark.graph import record_demonstrations
    from wam_ros.data.bag_frames import episode_paths

    episodes_dir = cfg.out / "demos"
    done = len(episode_paths([episodes_dir])) if episodes_dir.is_dir() else 0
    log_path = cfg.out / "demos.json"
    rows = json.loads(log_path.read_text()) if log_path.is_file() else []
    recorded = [row for row in rows if row.get("recorded", True)]
    if len(recorded) != done:
        raise ConfigError(
            f"{episodes_dir} holds {done} episodes but {log_path} lists {len(recorded)}: choose another --out"
        )
    conditions = {row.get("condition", "clean") for row in rows}
    if conditions - {cfg.demo_condition}:
        raise ConfigError(
            f"{episodes_dir} holds demonstrations in {sorted(conditions)} scenes, not "
            f"{cfg.demo_condition!r}: choose another --out"
        )

    needed = max(
        0, cfg.demos - sum(r.get("recorded", True) for r in rows if r.get("perturbation", "none") == "none")
    ) + max(0, cfg.slip_demos - sum(r.get("recorded", True) for r in rows if r.get("perturbation") == "slip"))
    progress = Progress("demonstrations", needed, "episode")
    recorded_now = 0

    def keep(row: dict) -> None:
        nonlocal recorded_now
        rows.append(row)
        log_path.write_text(json.dumps(rows, indent=1))
        recorded_now += bool(row.get("recorded", True))
        progress.update(
            min(recorded_now, needed), f"seed {row['seed']} {'recorded' if row.get('recorded', True) else 'skipped'}"
        )

    start, recorded_any = time.perf_counter(), False
    for perturbation, wanted, seed0 in (("none", cfg.demos, 0), ("slip", cfg.slip_demos, SLIP_DEMO_SEED)):
        kind = [row for row in rows if row.get("perturbation", "none") == perturbation]
        have = sum(row.get("recorded", True) for row in kind)
        if have < wanted:
            _log(
                f"recording {wanted - have} {'slip ' if perturbation == 'slip' else ''}demonstrations through "
                "the node graph"
            )
            recorded_any = True
        while have < wanted:
            first_seed = max((row["seed"] for row in kind), default=seed0 - 1) + 1
            new = record_demonstrations(
                cfg.robot,
                cfg.task,
                list(range(first_seed, first_seed + wanted - have)),
                episodes_dir,
                cfg.sim_size,
                cfg.demo_condition,
                perturbation,
                on_row=keep,
            )
            kind += new
            have += sum(row["recorded"] for row in new)
    if recorded_any:
        timings["record_s"] = round(time.perf_counter() - start, 1)
    return rows


def _trained_steps(checkpoint: Path) -> int:
    import torch

    if not checkpoint.is_file():
        return 0
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False).get("train", {}).get("step", 0))


def _run_logged(command: list[str], log_path: Path, echo_every: float = 30.0) -> None:
    """Runs `command` with its output appended to `log_path`, and its progress lines (those with an
    ETA) echoed to the console at most every `echo_every` seconds, and the last one at the end."""
    last_echo, pending = -float("inf"), ""
    with open(log_path, "a", buffering=1) as log:  # line-buffered: `tail -f train.log` follows it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.PIPE, text=True, bufsize=1)
        for line in process.stderr:
            log.write(line)
            if "ETA" in line:
                pending = line.strip()
                if time.monotonic() - last_echo >= echo_every:
                    _log(pending)
                    last_echo, pending = time.monotonic(), ""
        if process.wait():
            log.flush()
            raise subprocess.CalledProcessError(process.returncode, command)
    if pending:
        _log(pending)


def train_policy(cfg: BenchmarkConfig, timings: dict) -> Path:
    from wam_ros.data.export import ExportConfig
    from wam_ros.data.lerobot import export_lerobot

    dataset, checkpoint = cfg.out / "dataset", cfg.out / "policy.pt"
    if not (dataset / "meta" / "info.json").is_file():
        start = time.perf_counter()
        export_lerobot(
            sorted((cfg.out / "demos").iterdir()),
            dataset,
            ExportConfig(progress=False),
            robot=cfg.robot,
            overwrite=True,
        )
        timings["export_s"] = round(time.perf_counter() - start, 1)
    if _trained_steps(checkpoint) < cfg.vae_steps + cfg.video_steps + cfg.joint_steps:  # absent, or interrupted
        command = [
            sys.executable,
            "-m",
            "wam_ros.cli",
            "train",
            "--data",
            str(dataset),
            "--config",
            cfg.model,
            "--robot",
            cfg.robot,
            "--out",
            str(checkpoint),
            "--vae-steps",
            str(cfg.vae_steps),
            "--video-steps",
            str(cfg.video_steps),
            "--joint-steps",
            str(cfg.joint_steps),
            "--threads",
            str(cfg.threads),
            "--resume",
        ]
        _log(" ".join(command[2:]))
        start = time.perf_counter()
        _run_logged(command, cfg.out / "train.log")
        timings["train_s"] = round(time.perf_counter() - start, 1)
    return checkpoint


def release_policy(
    cfg: BenchmarkConfig, checkpoint: Path, out: Path, command: str, revision: str | None = None
) -> Path:
    """The trained policy as a release: policy.pt without the optimiser and sampler state (what
    deployment loads) and provenance.json beside it, which says how to make it again: the
    command, this config, the training seed, the digest of the exported dataset, the git revision
    and the losses. revision: the git revision the training ran at (default: this checkout's).
    Returns the release's policy.pt."""
    import torch

    from wam_ros.data.export import dataset_digest
    from wam_ros.model.policy import git_revision, load_policy

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    train = state.get("train", {})
    out.mkdir(parents=True, exist_ok=True)
    policy = load_policy(checkpoint)
    policy.save(out / "policy.pt", {"train": {"step": int(train.get("step", 0))}})
    provenance = {
        "command": command,
        "benchmark_config": {**asdict(cfg), "out": str(cfg.out)},
        "train_config": train.get("train_config", {}),
        "seed": train.get("train_config", {}).get("seed"),
        "dataset_sha256": dataset_digest(cfg.out / "dataset"),
        "git_revision": revision if revision is not None else git_revision(),
        "trained_steps": int(train.get("step", 0)),
        "losses": train.get("history", {}),  # per stage: the first and last logged means
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1, default=str))
    return out / "policy.pt"


def scheduled_episodes(cfg: BenchmarkConfig, chosen: list[Variant], count: int) -> tuple[list, dict[str, str]]:
    """The episodes to run, `count` per variant, on seeds disjoint from the demonstrations' (policy
    noise seed k for the k-th); a variant with the same settings as an earlier one (an ablation
    group's baseline) shares that one's episodes. Returns (episodes as (variant, spec, options, seed),
    {variant: the variant whose episodes it shares})."""
    episodes, shares, evaluated = [], {}, {}
    for variant in chosen:
        settings = (variant.condition, variant.perturbation, variant.options)
        shares[variant.name] = evaluated.setdefault(settings, variant.name)
        if shares[variant.name] != variant.name:
            continue
        options = EvalOptions(
            **{**asdict(variant.options), "max_seconds": cfg.max_seconds, "latency_scale": cfg.latency_scale}
        )
        episodes += [
            (
                variant.name,
                EpisodeSpec(cfg.task, cfg.robot, variant.condition, EVAL_SEED_OFFSET + k, variant.perturbation),
                options,
                k,
            )
            for k in range(count)
        ]
    return episodes, shares


def _by_variant(rows: list[dict], shares: dict[str, str]) -> dict[str, list[dict]]:
    ordered = sorted(rows, key=lambda r: r["seed"])
    return {name: [r for r in ordered if r["variant"] == owner] for name, owner in shares.items()}


class EpisodeLog:
    """The rows of finished episodes in a JSON file, rewritten after each one, so that a run that
    was interrupted goes on where it stopped: rows whose `settings` (checkpoint, episode length,
    latency charge) match the run's are kept."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        old = json.loads(path.read_text()) if path.is_file() else []
        self.rows = [r for r in old if all(r.get(k) == v for k, v in settings.items())]

    def todo(self, episodes: list) -> list:
        done = {(r["variant"], r["seed"]) for r in self.rows}
        return [e for e in episodes if (e[0], e[1].seed) not in done]

    def keep(self, row: dict) -> None:
        self.rows.append({**row, **self.settings})
        self.path.write_text(json.dumps(self.rows, indent=1))


def evaluate_in_process(checkpoint: Path, cfg: BenchmarkConfig, chosen: list[Variant]) -> dict[str, list[dict]]:
    """Every variant in process; in_process.json is rewritten after every episode."""
    import torch

    from wam_ros.model.policy import load_policy

    episodes, shares = scheduled_episodes(cfg, chosen, cfg.episodes)
    log = EpisodeLog(
        cfg.out / "in_process.json",
        {"checkpoint": str(checkpoint), "max_seconds": cfg.max_seconds, "latency_scale": cfg.latency_scale},
    )
    todo = log.todo(episodes)
    if todo:
        torch.set_num_threads(cfg.threads)
        policy = load_policy(checkpoint)
        loop = ClosedLoop(
            policy, load_robot_config(cfg.robot), SimConfig(width=cfg.sim_size[1], height=cfg.sim_size[0])
        )
        progress = Progress("evaluate in process", len(episodes), "episode")
        try:
            for variant, spec, options, seed in todo:
                log.keep({"variant": variant, **loop.run(spec, options, seed=seed).row()})
                wins = sum(r["success"] for r in log.rows if r["variant"] == variant)
                progress.update(len(log.rows), f"{variant}: {wins} successes")
        finally:
            loop.close()
    return _by_variant(log.rows, shares)


def evaluate_graph(checkpoint: Path, cfg: BenchmarkConfig, chosen: list[Variant]) -> dict[str, list[dict]]:
    """Every variant through the node graph (wam-ros bringup per episode, sim time), cfg.jobs() at a
    time; graph.json is rewritten after every episode."""
    from wam_ros.benchmark.graph import GraphEpisode, GraphSettings, evaluate_episodes
    from wam_ros.model.policy import load_policy

    chosen = [v for v in chosen if not cfg.graph_groups or v.group in cfg.graph_groups]
    episodes, shares = scheduled_episodes(cfg, chosen, cfg.graph_episodes)
    log = EpisodeLog(
        cfg.out / "graph.json",
        {
            "checkpoint": str(checkpoint),
            "max_seconds": cfg.max_seconds,
            "graph_real_time_factor": cfg.graph_real_time_factor,
        },
    )
    todo = log.todo(episodes)
    _log(
        f"{len(todo)} episodes through the node graph ({len(episodes) - len(todo)} kept from an earlier run), "
        f"{cfg.jobs()} at a time"
    )
    if todo:
        settings = GraphSettings(
            checkpoint,
            cfg.robot,
            cfg.sim_size,
            cfg.graph_threads(),
            synchronous_steps=load_policy(checkpoint).cfg.video_steps,
            real_time_factor=cfg.graph_real_time_factor,
        )
        evaluate_episodes(settings, [GraphEpisode(*e) for e in todo], cfg.jobs(), log.keep)
    return _by_variant(log.rows, shares)


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    from wam_ros.benchmark.report import write_report

    cfg.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    command = " ".join(["wam-ros", *sys.argv[1:]])
    if cfg.checkpoint is None:
        demos = demonstrations(cfg, timings)
        checkpoint = train_policy(cfg, timings)
        release_policy(cfg, checkpoint, cfg.out / "release", command)
    else:
        demos, checkpoint = [], Path(cfg.checkpoint)
    chosen = variants(cfg.ablations)
    start = time.perf_counter()
    in_process = evaluate_in_process(checkpoint, cfg, chosen)
    timings["evaluate_in_process_s"] = round(time.perf_counter() - start, 1)
    graph: dict[str, list[dict]] = {}
    if cfg.graph_episodes:
        start = time.perf_counter()
        graph = evaluate_graph(checkpoint, cfg, chosen)
        timings["evaluate_graph_s"] = round(time.perf_counter() - start, 1)
    train_log = cfg.out / "train.log"
    results = {
        "config": {**asdict(cfg), "out": str(cfg.out), "checkpoint": str(checkpoint)},
        "command": command,
        "demonstrations": demos,
        "timings_s": timings,
        "trained_steps": _trained_steps(checkpoint),
        "variants": [
            {
                "name": v.name,
                "group": v.group,
                "condition": v.condition,
                "perturbation": v.perturbation,
                "options": asdict(v.options),
            }
            for v in chosen
        ],
        "in_process": in_process,
        "graph": graph,
        "train_log_tail": train_log.read_text().splitlines()[-3:] if train_log.is_file() else [],
    }
    (cfg.out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, cfg.out)
    return results
