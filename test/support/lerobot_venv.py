"""The LeRobot venv that `make lerobot` builds (lerobot 0.6.1 needs Python >= 3.12, beside our 3.11
venv): the interoperability tests run LeRobot's own code in it (test/support/lerobot_side.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LEROBOT_VENV = Path(os.environ.get("WAM_ROS_LEROBOT_VENV", ROOT / ".venv-lerobot"))
SIDE = Path(__file__).with_name("lerobot_side.py")


def lerobot_bin(name: str) -> Path:
    path = LEROBOT_VENV / "bin" / name
    if not path.exists():
        pytest.skip(f"no LeRobot venv at {LEROBOT_VENV} (`make lerobot` builds it; `make test` does)")
    return path


def run_lerobot(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A command of the LeRobot venv, offline (nothing may come from the Hub)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": "",
        "VIRTUAL_ENV": str(LEROBOT_VENV),
    }
    run = subprocess.run(
        [str(lerobot_bin(args[0])), *args[1:]], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert run.returncode == 0, f"{' '.join(args[:3])} failed:\n{run.stderr[-4000:]}"
    return run


def lerobot_side(command: str, *args: Path) -> dict:
    out = [a for a in args if a.suffix == ".json"]
    run_lerobot("python", str(SIDE), command, *map(str, args))
    return json.loads(out[0].read_text()) if out else {}


def save_expected(path: Path, cameras: list[str], names: list[str], fps: float, episodes: list[dict]) -> None:
    """EXPECTED.npz for lerobot_side.py from per-episode arrays (state, action, rgb (T, V, H, W, 3),
    depth (T, V, H, W), task)."""
    arrays = {
        "state": np.concatenate([e["state"] for e in episodes]).astype(np.float32),
        "action": np.concatenate([e["action"] for e in episodes]).astype(np.float32),
        "episode": np.concatenate([np.full(len(e["state"]), i) for i, e in enumerate(episodes)]),
        "task": np.concatenate([[e["task"]] * len(e["state"]) for e in episodes]),
        "names": np.asarray(names),
        "fps": np.asarray(fps),
    }
    for v, cam in enumerate(cameras):
        arrays[f"rgb_{cam}"] = np.concatenate([e["rgb"][:, v] for e in episodes])
        arrays[f"depth_{cam}"] = np.concatenate([e["depth"][:, v] for e in episodes])
    np.savez(path, **arrays)
