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
    return {"episodes": n, "successes": wins, "success_rate": wins / n if n else 0.0, "ci95": (lo, hi),
            "time_to_success_median": float(np.median(times)) if times else None,
            "latency_ms_median": float(np.median(latencies)) if latencies else None,
            "rollbacks": sum(r["rollbacks"] for r in rows), "episodes_with_rollback": len(fired),
            "rollbacks_recovered": sum(r["rollback_recovered"] for r in rows),
            "perturbed": sum(r["perturbed"] for r in rows)}


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _plots(names: list[str], stats: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = np.array([stats[n]["success_rate"] for n in names]) * 100
    ci = np.array([stats[n]["ci95"] for n in names]) * 100
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))[::-1]
    ax.barh(y, rates, xerr=[rates - ci[:, 0], ci[:, 1] - rates], color="#4c72b0", capsize=3)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 100)
    ax.set_xlabel("success rate (%), 95 % Wilson interval")
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


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    cfg = results["config"]
    variants = results["variants"]
    stats = {v["name"]: summarize(results["in_process"][v["name"]]) for v in variants}
    names = [v["name"] for v in variants]
    _plots(names, stats, out)
    demos = results["demonstrations"]
    recorded = [d for d in demos if d.get("recorded", True)]
    timings = results["timings_s"]
    lines = [
        f"# wam_ros benchmark: {cfg['task']} on {cfg['robot']}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"- Demonstrations: {len(recorded)} scripted-expert episodes in {cfg.get('demo_condition', 'clean')} scenes, "
        f"recorded through the node graph ({sum(d['success'] for d in recorded)} successful, "
        f"{sum(d.get('perturbation', 'none') == 'slip' for d in recorded)} with a slip; failures are kept, "
        "labelled, for the value head; the actions are learnt from the successful ones)"
        + (f"; {len(demos) - len(recorded)} scene(s) the expert could not plan were skipped."
           if len(demos) > len(recorded) else "."),
        f"- Model: `{cfg['model']}`, {results['trained_steps']} training steps in all ({cfg.get('vae_steps', 0)} "
        f"of them VAE-only, {cfg['video_steps']} video-only) on {cfg['threads']} CPU threads.",
        f"- Evaluation: {cfg['episodes']} episodes per variant in process (the nodes' core code, simulated "
        f"time, inference latency charged to the clock), seeds disjoint from the demonstrations'; "
        f"an episode fails after {cfg['max_seconds']:g} s.",
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
        lines.append(f"| {v['name']} | {v['group']} | {s['successes']}/{s['episodes']} ({s['success_rate']:.0%}) "
                     f"| {s['ci95'][0]:.0%}–{s['ci95'][1]:.0%} | {_fmt(s['time_to_success_median'])} "
                     f"| {_fmt(s['latency_ms_median'], 0)} | {s['rollbacks']} ({s['episodes_with_rollback']}) "
                     f"| {s['rollbacks_recovered']} |")
    lines += ["", "![latency](latency.png)", ""]
    graph = results.get("graph") or []
    if graph:
        wins = sum(r["success"] for r in graph)
        lines += ["## Through the node graph", "",
                  f"{wins}/{len(graph)} Clean episodes succeeded with cameras -> sync -> policy -> supervisor -> "
                  "simulated arms over Fast DDS (sim time).", "",
                  "| seed | success | time to success (s) | stage | rollbacks | supervisor | wall (s) |",
                  "|---|---|---|---|---|---|---|"]
        for r in graph:
            lines.append(f"| {r['seed']} | {r['success']} | {_fmt(r['time_to_success'])} | {r['stage']} "
                         f"| {r['rollbacks']} | {r['final_mode']} | {r['wall_s']} |")
        lines.append("")
    lines += ["## Reading it", "",
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
              "charges it to the clock, so slower inference executes staler chunks.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
