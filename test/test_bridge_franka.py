"""The bridge driving two FR3s that franky-sim serves on loopback, through franky-control."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wam_ros.config import load_robot_config


def test_franka_bridge_streams_two_arms_through_franky():
    pytest.importorskip("franky")
    probe = Path(__file__).parent / "support" / "franky_bridge_probe.py"
    result = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    names = load_robot_config("franka").joint_names
    assert len(set(report["hosts"])) == 2  # one FCI host per arm
    arm = [i for i, n in enumerate(names) if not n.endswith("gripper")]
    # franky-sim's default pose, read through FCI
    np.testing.assert_allclose(np.array(report["start"])[arm][:7], [0, 0, 0, -1.57, 0, 1.57, 0.785], atol=0.01)
    np.testing.assert_allclose(np.array(report["final"])[arm], np.array(report["goal"])[arm], atol=0.02)
    assert report["final"][names.index("left_gripper")] == pytest.approx(0.01, abs=0.003)
    assert "non-finite target" in report["rejected"]
    assert report["mode"] == "active" and 0 <= report["latency"] < 0.1
    assert len(report["faults"]) <= 1, report["faults"]  # franky-sim under load, at most a transient one


def test_bridge_benchmark_runs_franky_sim_and_the_simulator_side_by_side():
    pytest.importorskip("franky")
    from wam_ros.perf.bridge import bench_bridge

    result = bench_bridge(duration=1.5)
    for key in ("sim_bridge", "franky_sim_bridge"):
        assert 0 < result[key]["command_to_motion_latency_ms"] < 500
        assert 0 <= result[key]["tracking_lag_ms"] <= 500
        # the stream's amplitude is 0.15 rad: a bridge that follows its shape stays well inside 2x
        # that once its lag is taken out. The raw error is not bounded here: franky-sim on a loaded
        # 2-core machine runs behind the wall clock (lags of 400-500 ms and raw p95 0.25-0.35 rad
        # were measured beside a training job; 82 ms and 0.074 rad idle). Tracking precision
        # itself is tested above.
        assert 0 < result[key]["tracking_error_p95_after_lag_rad"] < 0.3
        assert result[key]["tracking_error_p95_after_lag_rad"] <= result[key]["tracking_error_p95_rad"]
    assert result["sim_bridge"]["tracking_error_p95_after_lag_rad"] < 0.02  # sim time: no machine load
