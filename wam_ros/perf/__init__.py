"""`wam-ros bench TARGET`: speed benchmarks, one module per target, each printing a JSON dict.

(`wam_ros.benchmark` is another thing: the task-success benchmark of `wam-ros benchmark`.)

The registry names each target's function by module, not by import: the CLI reads the target names
on every start, and the child processes (`wam_ros.perf.children`) import this package too, so
nothing here imports a benchmark (numpy, torch, rclpy) before one is run.
"""

from __future__ import annotations

import importlib
from typing import Callable

# target name (as `wam-ros bench` takes it) -> "module:function"
TARGETS: dict[str, str] = {
    "sim": "wam_ros.perf.sim:bench_sim",
    "supervisor": "wam_ros.perf.supervisor:bench_supervisor",
    "bridge": "wam_ros.perf.bridge:bench_bridge",
    "sync": "wam_ros.perf.sync:bench_sync",
    "dds": "wam_ros.perf.dds:bench_dds",
    "policy-model": "wam_ros.perf.policy_model:bench_policy_model",
    "train-model": "wam_ros.perf.train_model:bench_train_model",
    "policy": "wam_ros.perf.policy:bench_policy",
    "lift": "wam_ros.perf.lift:bench_lift",
    "reprojection": "wam_ros.perf.reprojection:bench_reprojection",
    "record": "wam_ros.perf.record:bench_record",
    "split": "wam_ros.perf.split:bench_split",
}


def target(name: str) -> Callable[..., dict]:
    """The benchmark function of target `name` (its module imported now)."""
    module, function = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), function)
