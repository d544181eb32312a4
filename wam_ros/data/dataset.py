"""Episodes for training: the in-memory format and its on-disk forms (numpy only).

In memory, one `Episode` holds every frame at the control rate:
    rgb    (T, V, H, W, 3) uint8      V views in `cameras` order
    depth  (T, V, H, W)    uint16 mm  optional (0 = no measurement)
    state  (T, S)          float      proprioception, `state_names` order
    action (T, A)          float      the action executed at frame t, `action_names` order
    task   str                        language instruction
    success bool, stage_frames        outcome and stage-completion frames (value targets)

On disk, a dataset directory holds `meta.json` ({cameras, state_names, action_names,
action_space, fps}) and one entry per episode, in either layout (a directory may mix them):
    episode_NNNNNN.npz   the arrays above plus `task`, `success` and `stage_frames`
                         (`save_dataset(..., layout="npz")`, compressed: the smallest)
    episode_NNNNNN/      rgb.npy, depth.npy (optional), state.npy, action.npy and episode.json
                         ({task, success, stage_frames}) (`layout="npy"`, uncompressed: frames can
                         be memory-mapped, so a training sample reads only its own frames)
`load_native(directory, lazy=True)` keeps the rgb and depth of npy-layout episodes on disk as
`LazyFrames`, read per sample (an .npz member can only be decompressed whole, so .npz episodes
are always read into memory; `save_dataset(out, *load_native(src), layout="npy")` converts).
Trainers read any dataset through wam_ros.data.formats.load_dataset, which also reads the
LeRobot v3 and ALOHA HDF5 datasets that `wam-ros export` writes; this module knows none of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

LAYOUTS = ("npz", "npy")
HEAVY = ("rgb", "depth")  # the per-frame image arrays, the only ones kept on disk when lazy


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the file and the field."""


@dataclass
class DatasetMeta:
    cameras: list[str]
    state_names: list[str]
    action_names: list[str]
    action_space: str
    fps: float


class LazyFrames:
    """The frames of one .npy file, read on access: `frames[indices]` reads only those frames
    (through a memory map). Pickles as its path, so DataLoader workers open their own map instead
    of copying frames."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self.shape, self.dtype = _npy_header(f)
        self._map: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._map is None:
            self._map = np.load(self.path, mmap_mode="r")
        return np.asarray(self._map[index])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise DatasetError(f"{getattr(f, 'name', f)}: .npy format version {version} is not supported")
    shape, fortran, dtype = readers[version](f)
    if fortran:
        raise DatasetError(f"{getattr(f, 'name', f)}: Fortran-ordered arrays are not supported")
    return tuple(shape), dtype


Frames = Union[np.ndarray, LazyFrames]


@dataclass
class Episode:
    rgb: Frames
    state: np.ndarray
    action: np.ndarray
    task: str
    success: bool = True
    depth: Frames | None = None
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


def save_dataset(directory: Path, meta: DatasetMeta, episodes: list[Episode], layout: str = "npz") -> None:
    """Writes meta.json and one episode_NNNNNN entry per episode in `layout` (see the module doc)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").write_text(json.dumps(meta.__dict__, indent=2))
    for i, ep in enumerate(episodes):
        ep.check(meta, f"episode {i}")
        arrays = {"rgb": ep.rgb, "state": ep.state, "action": ep.action}
        if ep.depth is not None:
            arrays["depth"] = ep.depth
        arrays = {name: a[:] if isinstance(a, LazyFrames) else a for name, a in arrays.items()}
        if layout == "npz":
            np.savez_compressed(
                directory / f"episode_{i:06d}.npz",
                **arrays,
                task=np.array(ep.task),
                success=np.array(ep.success),
                stage_frames=np.array(ep.stage_frames, dtype=np.int64),
            )
            continue
        folder = directory / f"episode_{i:06d}"
        folder.mkdir(exist_ok=True)
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array))
        info = {"task": ep.task, "success": bool(ep.success), "stage_frames": [int(f) for f in ep.stage_frames]}
        (folder / "episode.json").write_text(json.dumps(info))


def _load_npz(path: Path) -> Episode:
    with np.load(path) as data:
        return Episode(
            rgb=data["rgb"],
            state=data["state"],
            action=data["action"],
            task=str(data["task"]),
            success=bool(data["success"]),
            depth=data["depth"] if "depth" in data else None,
            stage_frames=data["stage_frames"].tolist(),
        )


def _load_npy_folder(folder: Path, lazy: bool) -> Episode:
    try:
        info = json.loads((folder / "episode.json").read_text())
        heavy = {
            name: (LazyFrames(folder / f"{name}.npy") if lazy else np.load(folder / f"{name}.npy"))
            if (folder / f"{name}.npy").is_file()
            else None
            for name in HEAVY
        }
        return Episode(
            rgb=heavy["rgb"],
            state=np.load(folder / "state.npy"),
            action=np.load(folder / "action.npy"),
            task=str(info["task"]),
            success=bool(info["success"]),
            depth=heavy["depth"],
            stage_frames=[int(f) for f in info["stage_frames"]],
        )
    except (OSError, KeyError, ValueError) as exc:  # missing files, bad JSON, truncated arrays
        raise DatasetError(f"{folder}: {exc}") from exc


def load_native(directory: Path, lazy: bool = False) -> tuple[DatasetMeta, list[Episode]]:
    """A dataset in this module's own layouts (meta.json, episode_NNNNNN.npz or episode_NNNNNN/);
    with lazy, the rgb and depth of npy-layout episodes stay on disk as LazyFrames."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(
            f"{directory}: no meta.json, and not a LeRobot v3 or ALOHA HDF5 dataset either "
            "(see wam_ros/data/dataset.py for the layout)"
        )
    try:
        meta = DatasetMeta(**json.loads(meta_path.read_text()))
    except (TypeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: {exc}") from exc
    entries = sorted(
        p
        for p in directory.glob("episode_*")
        if (p.suffix == ".npz" and p.is_file()) or (p.is_dir() and (p / "episode.json").is_file())
    )
    if not entries:
        raise DatasetError(f"{directory}: no episode_*.npz files or episode_*/ folders")
    episodes = []
    for path in entries:
        ep = _load_npz(path) if path.suffix == ".npz" else _load_npy_folder(path, lazy)
        ep.check(meta, str(path))
        episodes.append(ep)
    return meta, episodes


def statistics(values: np.ndarray) -> dict[str, list[float]]:
    """q01, q99, mean, std, min, max per column of (N, D) values (LeRobot's stats.json fields)."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "q01": np.quantile(v, 0.01, axis=0).tolist(),
        "q99": np.quantile(v, 0.99, axis=0).tolist(),
        "mean": v.mean(axis=0).tolist(),
        "std": v.std(axis=0).tolist(),
        "min": v.min(axis=0).tolist(),
        "max": v.max(axis=0).tolist(),
    }
