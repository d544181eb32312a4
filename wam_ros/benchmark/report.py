"""The benchmark report: report.md with the tables, success.png and latency.png (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate: honest error bars for 10-episode samples."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    wins = sum(r["success"] for r in rows)
    times = [r["time_to_success"] for r in rows if r["success"] and r.get("time_to_success") is not None]
    latencies = [r["latency_ms_median"] for r in rows if r.get("latency_ms_median") is not None]
    fired = [r for r in rows if r["rollbacks"] > 0]
    lo, hi = wilson_interval(wins, n)
    return {
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n if n else 0.0,
        "ci95": (lo, hi),
        "time_to_success_median": float(np.median(times)) if times else None,
        "latency_ms_median": float(np.median(latencies)) if latencies else None,
        "rollbacks": sum(r["rollbacks"] for r in rows),
        "episodes_with_rollback": len(fired),
        "rollbacks_recovered": sum(r["rollback_recovered"] for r in rows),
        "perturbed": sum(r["perturbed"] for r in rows),
    }


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _plots(names: list[str], stats: dict[str, dict], graph: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.4))
    y = np.arange(len(names))[::-1].astype(float)
    series = [("in process", stats, "#4c72b0")] + ([("node graph", graph, "#55a868")] if graph else [])
    height = 0.8 / len(series)
    for k, (label, table, color) in enumerate(series):
        rates = np.array([table[n]["success_rate"] for n in names]) * 100
        ci = np.array([table[n]["ci95"] for n in names]) * 100
        ax.barh(
            y + 0.4 - height * (k + 0.5),
            rates,
            height,
            xerr=[rates - ci[:, 0], ci[:, 1] - rates],
            color=color,
            capsize=3,
            label=label,
        )
    ax.set_yticks(y, names)
    ax.set_xlim(0, 100)
    ax.set_xlabel("success rate (%), 95 % Wilson interval")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=110)
    plt.close(fig)
    timed = [n for n in names if stats[n]["latency_ms_median"] is not None]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(timed) + 1.2))
    y = np.arange(len(timed))[::-1]
    ax.barh(y, [stats[n]["latency_ms_median"] for n in timed], color="#dd8452")
    ax.set_yticks(y, timed)
    ax.set_xlabel("median action latency (ms): observation -> actions final, this CPU")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


def _training_lines(cfg: dict, results: dict, demos: list[dict]) -> list[str]:
    """What the run recorded and trained (a run that evaluates a given checkpoint has neither)."""
    recorded = [d for d in demos if d.get("recorded", True)]
    return [
        f"- Demonstrations: {len(recorded)} scripted-expert episodes in {cfg.get('demo_condition', 'clean')} scenes, "
        f"recorded through the node graph ({sum(d['success'] for d in recorded)} successful, "
        f"{sum(d.get('perturbation', 'none') == 'slip' for d in recorded)} with a slip; failures are kept, "
        "labelled, for the value head; the actions are learnt from the successful ones)"
        + (
            f"; {len(demos) - len(recorded)} scene(s) the expert could not plan were skipped."
            if len(demos) > len(recorded)
            else "."
        ),
        f"- Model: `{cfg['model']}`, {results['trained_steps']} training steps in all ({cfg.get('vae_steps', 0)} "
        f"of them VAE-only, {cfg['video_steps']} video-only) on {cfg['threads']} CPU threads.",
    ]


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    cfg = results["config"]
    variants = results["variants"]
    stats = {v["name"]: summarize(results["in_process"][v["name"]]) for v in variants}
    graph_rows = results.get("graph") or {}
    graph = {v["name"]: summarize(graph_rows[v["name"]]) for v in variants if graph_rows.get(v["name"])}
    names = [v["name"] for v in variants]
    _plots(names, stats, graph if len(graph) == len(names) else {}, out)
    demos = results["demonstrations"]
    timings = results["timings_s"]
    lines = [
        f"# wam_ros benchmark: {cfg['task']} on {cfg['robot']}",
        "",
        f"Command: `{results['command']}`",
        "",
        *(
            _training_lines(cfg, results, demos)
            if demos
            else [
                f"- Checkpoint evaluated: `{cfg['checkpoint']}`, {results['trained_steps']} training steps "
                "(no demonstrations recorded and no training in this run)."
            ]
        ),
        f"- Evaluation: every variant {cfg['episodes']} times in process (the classes the nodes call, "
        "simulated time, inference latency charged to the clock)"
        + (
            f" and {cfg['graph_episodes']} times through the node graph (`wam-ros bringup` per episode, "
            "Fast DDS, sim time)"
            if graph
            else ""
        )
        + f", seeds disjoint from the demonstrations'; an episode fails after {cfg['max_seconds']:g} s.",
        "- Timings (s): " + ", ".join(f"{k.replace('_s', '')} {v:g}" for k, v in timings.items()),
        "",
        "![success](success.png)",
        "",
        "| variant | group | success | 95 % CI | median time to success (s) | median action latency (ms) "
        "| rollbacks (episodes) | recovered after rollback |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        s = stats[v["name"]]
        lines.append(
            f"| {v['name']} | {v['group']} | {s['successes']}/{s['episodes']} ({s['success_rate']:.0%}) "
            f"| {s['ci95'][0]:.0%}–{s['ci95'][1]:.0%} | {_fmt(s['time_to_success_median'])} "
            f"| {_fmt(s['latency_ms_median'], 0)} | {s['rollbacks']} ({s['episodes_with_rollback']}) "
            f"| {s['rollbacks_recovered']} |"
        )
    lines += ["", "![latency](latency.png)", ""]
    if graph:
        lines += _graph_section(variants, stats, graph, graph_rows, cfg.get("graph_real_time_factor", 1.0))
    lines += [
        "## Reading it",
        "",
        "- Clean scenes sample object positions inside the demonstrations' range; Random scenes change "
        "lighting, table texture, object colours and clutter, and move objects beyond that range.",
        "- drop: the cube falls out of the hand 0.3 s after the grasp and lands 3-5 cm away; slip: it "
        "falls straight down at that moment, back within the retry's reach; nudge: it slides 3-5 cm as the "
        "gripper closes in. Rollback returns the arm to the checkpoint of the peak predicted progress "
        "(to the best one before the grasp when the cube held at the peak has been lost) and resamples. "
        "A dropped or nudged cube ends up beyond the demonstrations' range (+-1.5 cm): retrying "
        "succeeds there only where the policy follows the displaced cube.",
        "- Variants with the same settings (an ablation group's baseline and Clean) share their episodes.",
        "- Latency is the wall time from an observation to final actions on this CPU; the simulator "
        "charges it to the clock, so slower inference executes staler chunks.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


# What the node graph does that the in-process loop does not: the reasons a row may differ
GRAPH_DIFFERENCES = (
    "inference shares the cores with the simulator, which renders three RGB-D cameras at 15 Hz all the time "
    "(on the CPU here; on a robot the cameras are hardware), the sync node and the others, in real time; in "
    "process the cameras are rendered only when an inference starts, nothing else runs while the model thinks, "
    "and its latency is charged to the clock",
    "latency: in process the wall time from the observation to final actions; in the graph the ROS (sim) time "
    "from the observation's stamp to final actions as policy_node stamps each chunk, which includes the wait "
    "for the next inference tick; a real-time factor below 1 means the simulator ran slower than the wall clock",
    "the policy acts on the sync node's newest set (up to a camera period old); in process the scene is "
    "rendered when the inference starts",
    "the supervisor's stream watchdogs run (joint states, observations, value, chunks); in process they are off, "
    "since the simulated world waits for the model",
    "the supervisor's state and its resample requests reach the policy over DDS, a few ms later",
)


def _graph_section(
    variants: list[dict],
    stats: dict[str, dict],
    graph: dict[str, dict],
    graph_rows: dict[str, list[dict]],
    pace: float = 1.0,
) -> list[str]:
    lines = [
        "## In process and through the node graph",
        "",
        "The same variants, scenes and policy noise seeds; the node graph is what runs on the robot "
        "(cameras -> sync -> policy -> supervisor -> simulated arms over Fast DDS, sim time"
        + (
            f"; the simulated world ran at most {pace:g}x real time, `--graph-real-time-factor`)."
            if pace != 1.0
            else ", real time)."
        ),
        "",
        "| variant | in process | 95 % CI | node graph | 95 % CI | rollbacks (in process / graph) "
        "| median latency ms (in process / graph) | graph real-time factor | agree |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    differ = []
    for v in variants:
        name = v["name"]
        if name not in graph:
            continue
        a, b = stats[name], graph[name]
        agree = intervals_overlap(a["ci95"], b["ci95"])
        if not agree:
            differ.append(name)
        rtf = [r["real_time_factor"] for r in graph_rows[name] if r.get("real_time_factor") is not None]
        lines.append(
            f"| {name} | {a['successes']}/{a['episodes']} | {a['ci95'][0]:.0%}–{a['ci95'][1]:.0%} "
            f"| {b['successes']}/{b['episodes']} | {b['ci95'][0]:.0%}–{b['ci95'][1]:.0%} "
            f"| {a['rollbacks']} / {b['rollbacks']} "
            f"| {_fmt(a['latency_ms_median'], 0)} / {_fmt(b['latency_ms_median'], 0)} "
            f"| {_fmt(float(np.median(rtf)) if rtf else None, 2)} | {'yes' if agree else '**no**'} |"
        )
    lines.append("")
    if differ:
        lines += [f"**The intervals do not overlap for: {', '.join(differ)}.** What differs between the two:", ""]
    else:
        lines += ["Every row's two 95 % intervals overlap. What still differs between the two:", ""]
    lines += [f"- {reason}" for reason in GRAPH_DIFFERENCES] + [""]
    return lines
