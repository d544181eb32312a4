"""`wam-ros bench split`: the two-machine deployment (split:=robot | split:=policy) measured on one
machine, side by side in one run: both sides on this host's loopback, then each side in its own
network namespace joined by a veth pair shaped to 1 Gbit/s and to 100 Mbit/s (wam_ros.netns).

Each side is a real `wam-ros bringup` process: the robot side runs the simulated AgileX on the
pick-and-place task, sync, supervisor and the observation encoder; the policy side runs the
checkpoint. A probe process on the robot side (wam_ros.perf.children.split_probe) measures there:
- observation-to-chunk latency: wall time from a synced set's arrival on the robot side to the
  arrival of the chunk conditioned on it (link both ways, decoding, inference);
- the link: MB/s of observation payload, and where namespaces are used the veth's bytes per second;
- starved control steps (the policy's /diagnostics) and supervisor holds with their reasons;
- with `pull`: the cable pulled for a while: time to HOLD, time to RUNNING after it is back, and
  the chunks the supervisor refused as older than its max_chunk_age (queued ones the link
  delivered late).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wam_ros.control.supervisor import MAX_CHUNK_AGE
from wam_ros.netns import HostPair, LinkShape, unavailable
from wam_ros.perf.children import READY, command
from wam_ros.ros.system import DDS_VARIABLES, dds_environment, isolated_domain_id

# camera size of the shipped demo policy's recordings (height, width)
SIM_SIZE = (128, 160)


@dataclass(frozen=True)
class SplitRun:
    """One configuration: `shape` None runs both sides on this host's loopback."""

    label: str
    shape: LinkShape | None
    seconds: float = 20.0  # measured after the first chunk
    pull_after: float = 0.0  # s into the measurement to pull the cable (0: never)
    pull_seconds: float = 2.0
    recover_seconds: float = 10.0  # measured after the cable is back


def _params_file(directory: Path) -> Path:
    """Node parameters of both sides: the demo's camera size; one torch thread for the policy (two
    processes share the cores); the supervisor tracks a CPU-trained policy's chunks (clamp)."""
    path = directory / "split_params.yaml"
    path.write_text(
        json.dumps(
            {
                "sim": {"ros__parameters": {"width": SIM_SIZE[1], "height": SIM_SIZE[0]}},
                "supervisor": {"ros__parameters": {"clamp": True}},
                "policy": {"ros__parameters": {"threads": 1}},
            }
        )
    )
    return path


def _bringup(arguments: list[str], prefix: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    exe = str(Path(sys.executable).parent / "wam-ros")
    return subprocess.Popen(
        [*prefix, exe, "bringup", *arguments],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _link_counters(pair: HostPair | None) -> tuple[dict, dict] | None:
    """(bytes sent, (packets sent, dropped)) per side of the link so far; None on one host."""
    return (pair.bytes_sent(), pair.packet_counts()) if pair else None


def run_split(run: SplitRun, checkpoint: Path, workdir: Path, seed: int = 0, startup_timeout: float = 180.0) -> dict:
    """Bring both sides up for `run`, measure with the probe, tear down. Returns the row."""
    domain = isolated_domain_id(os.getpid() + zlib.crc32(run.label.encode()) % 97)
    # the package's Fast DDS profile on both sides, as a user has it
    base = {
        **{k: v for k, v in os.environ.items() if k not in DDS_VARIABLES},
        **dds_environment({}),
        "ROS_DOMAIN_ID": str(domain),
        "PYTHONUNBUFFERED": "1",
    }
    params = _params_file(workdir)
    robot_args = ["robot:=agilex", "split:=robot", "task:=pick_place", f"seed:={seed}", f"params_file:={params}"]
    policy_args = ["robot:=agilex", "split:=policy", f"checkpoint:={checkpoint}", f"params_file:={params}"]
    with contextlib.ExitStack() as stack:
        pair = stack.enter_context(HostPair()) if run.shape is not None else None
        link = pair.shape(run.shape).label if pair else "one host (loopback)"
        env = {
            side: {
                **base,
                **(
                    {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_STATIC_PEERS": pair.peer(side)}
                    if pair
                    else {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
                ),
            }
            for side in ("robot", "policy")
        }
        prefix = {side: pair.prefix_command(side) if pair else [] for side in ("robot", "policy")}
        for side, arguments in (("robot", robot_args), ("policy", policy_args)):
            stack.callback(_stop, _bringup(arguments, prefix[side], env[side], workdir / f"{run.label}_{side}.log"))
        total = run.seconds + (run.pull_seconds + run.recover_seconds if run.pull_after else 0.0)
        probes = {
            side: subprocess.Popen(
                [
                    *prefix[side],
                    *command("split_probe", side, "--startup-timeout", startup_timeout, "--seconds", total),
                ],
                env=env[side],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for side in ("robot", "policy")
        }
        for side, probe in probes.items():
            stack.callback(_stop, probe)
            if probe.stdout.readline().strip() != READY:  # chunks conditioned on sets are seen there
                _, err = probe.communicate(timeout=30)
                logs = {p.name: p.read_text()[-1500:] for p in sorted(workdir.glob(f"{run.label}_*.log"))}
                raise RuntimeError(
                    f"{run.label}: the {side} side saw no chunk within {startup_timeout:.0f} s "
                    f"(probe: {err.strip()[-500:]}); logs: {logs}"
                )
        start = time.time()
        counters_before = _link_counters(pair)
        pulled = None
        if run.pull_after:
            time.sleep(run.pull_after)
            counters_steady, steady_seconds = _link_counters(pair), time.time() - start
            down = time.time()
            pair.set_link(False)
            time.sleep(run.pull_seconds)
            pair.set_link(True)
            pulled = (down, time.time())
        events = {}
        for side, probe in probes.items():
            out, err = probe.communicate(timeout=total + 60)
            if probe.returncode:
                raise RuntimeError(f"{run.label}: the {side} side's probe failed: {err.strip()[-1500:]}")
            events[side] = json.loads(out)
        if not run.pull_after:
            counters_steady, steady_seconds = _link_counters(pair), time.time() - start
    row = summarize(events["robot"], start, start + steady_seconds, pulled)
    row["transit_ms"] = transit(events["robot"], events["policy"], start, start + steady_seconds)
    row.update(
        label=run.label,
        link=link,
        requested_link=run.shape.label if run.shape else link,
        notes=pair.notes if pair else [],
    )
    if pair is not None:
        (bytes_before, packets_before), (bytes_steady, packets_steady) = counters_before, counters_steady
        row["link_mb_per_s"] = {
            side: round((bytes_steady[side] - bytes_before[side]) / steady_seconds / 1e6, 3)
            for side in ("robot", "policy")
        }
        packets = {
            side: [after - before for after, before in zip(packets_steady[side], packets_before[side])]
            for side in ("robot", "policy")
        }
        row["link_packets_dropped"] = {
            side: {"sent": sent, "dropped": dropped, "share": round(dropped / max(sent + dropped, 1), 4)}
            for side, (sent, dropped) in packets.items()
        }
    return row


def summarize(events: dict, start: float, steady_end: float, pulled: tuple[float, float] | None) -> dict:
    """The row of one run from the probe's events (wall times) and the measurement window."""
    latencies = [(t, lat) for t, lat in events["latencies"] if start <= t < steady_end]
    ms = np.array([lat for _, lat in latencies]) * 1e3
    payload = [(t, n) for t, n in events["payloads"] if start <= t < steady_end]
    seconds = steady_end - start
    transitions = [(t, state, reason) for t, state, reason in events["transitions"] if t >= start]
    steady_holds = [reason for t, state, reason in transitions if state == "HOLD" and t < steady_end]
    row = {
        "seconds": round(seconds, 1),
        "chunks": len(latencies),
        "observation_to_chunk_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
        }
        if len(ms)
        else None,
        "observation_payload": {
            "sets_per_s": round(len(payload) / seconds, 2),
            "kb_per_set": round(float(np.mean([n for _, n in payload])) / 1e3, 1) if payload else None,
            "mb_per_s": round(sum(n for _, n in payload) / seconds / 1e6, 3),
            # what the whole synced sets would have needed at the same rate
            "raw_sets_kb_per_set": round(events.get("raw_set_bytes", 0) / 1e3, 1),
            "raw_sets_mb_per_s": round(events.get("raw_set_bytes", 0) * len(payload) / seconds / 1e6, 3),
        },
        "starved_steps": _starved_in(events["starved"], start, steady_end),
        "supervisor_holds": len(steady_holds),
        "hold_reasons": steady_holds[:5],
        **_stale_chunks(events),
    }
    if pulled is not None:
        down, up = pulled
        hold = next((t for t, state, _ in transitions if state == "HOLD" and t >= down), None)
        running = next((t for t, state, _ in transitions if state == "RUNNING" and t >= up), None)
        row["cable_pulled"] = {
            "seconds": round(up - down, 2),
            "to_hold_s": None if hold is None else round(hold - down, 3),
            "hold_reason": next((r for t, s, r in transitions if s == "HOLD" and t >= down), None),
            "running_again_after_s": None if running is None else round(running - up, 3),
        }
    return row


def transit(robot: dict, policy: dict, start: float, end: float) -> dict:
    """Time on the link (ms, p50 / p95): a set from its arrival on the robot side to its arrival on the
    policy side, a chunk the other way (both sides share this machine's clock)."""

    def between(source: list, target: list) -> dict | None:
        sent = dict((key, t) for key, t in source)
        ms = [(t - sent[key]) * 1e3 for key, t in target if key in sent and start <= sent[key] < end]
        return (
            {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2), "n": len(ms)}
            if ms
            else None
        )

    return {
        "set_robot_to_policy": between(robot["set_arrivals"], policy["set_arrivals"]),
        "chunk_policy_to_robot": between(policy["chunk_arrivals"], robot["chunk_arrivals"]),
    }


def _stale_chunks(events: dict) -> dict:
    """Chunks that reached the probe older than max_chunk_age (each reader has its own datagrams: the
    supervisor's copy may have come on time), and the supervisor's refusals of stale chunks."""
    return {
        "chunks_late_at_probe": sum(1 for _, _, age in events["chunk_ages"] if age > MAX_CHUNK_AGE),
        "stale_refusals": sum(1 for _, reason in events["refusals"] if reason.startswith("stale")),
    }


def _starved_in(samples: list, start: float, end: float) -> int | None:
    """Starved steps the policy counted within [start, end) (its counter is cumulative)."""
    inside = [n for t, n in samples if start <= t < end]
    before = [n for t, n in samples if t < start]
    if not inside:
        return None
    return int(inside[-1] - (before[-1] if before else inside[0]))


def bench_split(duration: float = 20.0, checkpoint: str = "") -> dict:
    """One host vs two namespaces at 1 Gbit/s and at 100 Mbit/s (the 1 Gbit/s run also pulls the
    cable for 2 s), side by side in one run."""
    from wam_ros.demo import shipped_policy

    reason = unavailable()
    result: dict = {
        "target": "split",
        "robot": "agilex",
        "task": "pick_place",
        "camera_size": f"{SIM_SIZE[1]}x{SIM_SIZE[0]} x 3 views",
        "goal": "0 starved steps at 1 Gbit/s; latency p95 at most 15 ms above one host",
        "note": "observation_to_chunk_ms is dominated by CPU inference (hundreds of ms, varying by tens "
        "of ms between runs); transit_ms is the time on the link itself, set and chunk",
    }
    if reason:
        return {**result, "skipped": True, "reason": reason}
    path = Path(checkpoint) if checkpoint else shipped_policy("agilex")
    result["checkpoint"] = str(path)
    runs = [
        SplitRun("one_host", None, duration),
        SplitRun("netns_1gbit", LinkShape(1000.0, delay_ms=0.5), duration, pull_after=duration),
        SplitRun("netns_100mbit", LinkShape(100.0, loss_percent=1.0), duration),
    ]
    with tempfile.TemporaryDirectory(prefix="wam_bench_split_") as tmp:
        rows = {run.label: run_split(run, path, Path(tmp)) for run in runs}
    result["runs"] = rows
    for label in ("netns_1gbit", "netns_100mbit"):
        added = {}
        base, other = rows["one_host"]["observation_to_chunk_ms"], rows[label]["observation_to_chunk_ms"]
        if base and other:
            added["observation_to_chunk_p95_ms"] = round(other["p95"] - base["p95"], 1)
        legs = [
            (rows["one_host"]["transit_ms"][leg], rows[label]["transit_ms"][leg])
            for leg in ("set_robot_to_policy", "chunk_policy_to_robot")
        ]
        if all(a and b for a, b in legs):
            added["link_round_trip_p95_ms"] = round(sum(b["p95"] - a["p95"] for a, b in legs), 2)
        result[f"{label}_added_over_one_host"] = added
    return result
