"""Episodes for training: the in-memory format and its on-disk form (numpy only).

In memory, one `Episode` holds every frame at the control rate:
    rgb    (T, V, H, W, 3) uint8      V views in `cameras` order
    depth  (T, V, H, W)    uint16 mm  optional (0 = no measurement)
    state  (T, S)          float      proprioception, `state_names` order
    action (T, A)          float      the action executed at frame t, `action_names` order
    task   str                        language instruction
    success bool, stage_frames        outcome and stage-completion frames (value targets)

On disk, a dataset directory holds `meta.json` ({cameras, state_names, action_names,
action_space, fps}) and one `episode_NNNNNN.npz` per episode with the arrays above plus
`task`, `success` and `stage_frames`. The Recording issue's LeRobot v3 export is read by the
same loader: `load_dataset` also reads the LeRobot v3 and ALOHA HDF5 datasets that
`wam-ros export` writes (wam_ros.data.export).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the file and the field."""


@dataclass
class DatasetMeta:
    cameras: list[str]
    state_names: list[str]
    action_names: list[str]
    action_space: str
    fps: float


@dataclass
class Episode:
    rgb: np.ndarray
    state: np.ndarray
    action: np.ndarray
    task: str
    success: bool = True
    depth: np.ndarray | None = None
    stage_frames: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.state)

    def check(self, meta: DatasetMeta, where: str = "episode") -> None:
        t = len(self.state)
        problems = []
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 5 or self.rgb.shape[-1] != 3:
            problems.append(f"rgb must be (T, V, H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        elif self.rgb.shape[:2] != (t, len(meta.cameras)):
            problems.append(f"rgb has {self.rgb.shape[:2]} (frames, views), expected ({t}, {len(meta.cameras)})")
        if self.depth is not None and self.depth.shape != self.rgb.shape[:4]:
            problems.append(f"depth shape {self.depth.shape} does not match rgb {self.rgb.shape[:4]}")
        if self.state.shape != (t, len(meta.state_names)):
            problems.append(f"state shape {self.state.shape}, expected ({t}, {len(meta.state_names)})")
        if self.action.shape != (t, len(meta.action_names)):
            problems.append(f"action shape {self.action.shape}, expected ({t}, {len(meta.action_names)})")
        for name in ("state", "action"):
            if not np.isfinite(getattr(self, name)).all():
                problems.append(f"{name} contains NaN or inf")
        if problems:
            raise DatasetError(f"{where}: " + "; ".join(problems))


def save_dataset(directory: Path, meta: DatasetMeta, episodes: list[Episode]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").write_text(json.dumps(meta.__dict__, indent=2))
    for i, ep in enumerate(episodes):
        ep.check(meta, f"episode {i}")
        arrays = {"rgb": ep.rgb, "state": ep.state, "action": ep.action, "task": np.array(ep.task),
                  "success": np.array(ep.success), "stage_frames": np.array(ep.stage_frames, dtype=np.int64)}
        if ep.depth is not None:
            arrays["depth"] = ep.depth
        np.savez_compressed(directory / f"episode_{i:06d}.npz", **arrays)


def load_dataset(directory: Path) -> tuple[DatasetMeta, list[Episode]]:
    directory = Path(directory)
    from wam_ros.data import export  # the exporters build on this module's types

    if export.is_lerobot(directory) or export.is_hdf5(directory):
        meta, episodes = (export.load_lerobot if export.is_lerobot(directory) else export.load_hdf5)(directory)
        for i, ep in enumerate(episodes):
            ep.check(meta, f"{directory} episode {i}")
        return meta, episodes
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(f"{directory}: no meta.json (see wam_ros/model/episodes.py for the layout)")
    try:
        meta = DatasetMeta(**json.loads(meta_path.read_text()))
    except (TypeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: {exc}") from exc
    files = sorted(directory.glob("episode_*.npz"))
    if not files:
        raise DatasetError(f"{directory}: no episode_*.npz files")
    episodes = []
    for path in files:
        with np.load(path) as data:
            ep = Episode(rgb=data["rgb"], state=data["state"], action=data["action"], task=str(data["task"]),
                         success=bool(data["success"]), depth=data["depth"] if "depth" in data else None,
                         stage_frames=data["stage_frames"].tolist())
        ep.check(meta, str(path))
        episodes.append(ep)
    return meta, episodes
