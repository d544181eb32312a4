"""Episode bags → training datasets (ROS-free): LeRobot v3 and ALOHA / Cobot Magic HDF5.

Both formats carry, per frame, the Monte Carlo value target and the gate label with the Model
issue's definitions (wam_ros.data.targets: progress_targets of the success reward, gamma 0.99;
interaction labels +-20 frames around a gripper open<->close event of either arm), so a dataset
exported here and one built in memory train identically. Both load back as
wam_ros.data.dataset.Episode lists (`load_dataset` dispatches on the layout).

LeRobot v3.0: see wam_ros.data.lerobot.
ALOHA HDF5: episode_<i>.hdf5 with /observations/qpos, /observations/qvel,
  /observations/images/<cam> (T, H, W, 3) uint8, /observations/depth/<cam> (T, H, W) uint16,
  /action, /value_target, /gate_label; attrs sim, compress, fps, task, success, joint_names.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np
from tqdm import tqdm

from wam_ros import __version__
from wam_ros.config import gripper_columns
from wam_ros.data.bag import BagError
from wam_ros.data.bag_frames import EpisodeIndex, index_episode, iter_frames
from wam_ros.data.dataset import DatasetError, DatasetMeta, Episode
from wam_ros.data.targets import frame_targets

VIDEO_CODECS = ("h264", "av1", "lossless")  # LeRobot colour video (wam_ros.data.lerobot.COLOR_CODECS)


@dataclass(frozen=True)
class ExportConfig:
    fps: float = 15.0
    gamma: float = 0.99
    gate_window: int = 20
    reward: str = "success"  # value_target column: success, or stages (the recorded stage markers)
    video_codec: str = "h264"  # LeRobot colour video: h264, av1 or lossless (RGB)
    include_failures: bool = True  # failed and partial episodes teach the value head what failing looks like
    progress: bool = True

    def __post_init__(self) -> None:
        if self.video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec {self.video_codec!r}: expected one of {', '.join(VIDEO_CODECS)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")


def targets(index: EpisodeIndex, cfg: ExportConfig) -> tuple[np.ndarray, np.ndarray]:
    """(value_target, gate_label) per frame, as training computes them."""
    return frame_targets(
        index.state[:, gripper_columns(index.joint_names)],
        index.success,
        index.stage_frames,
        cfg.reward,
        gamma=cfg.gamma,
        window=cfg.gate_window,
    )


def episode_indices(paths: Iterable[Path], cfg: ExportConfig) -> list[EpisodeIndex]:
    out = []
    for path in paths:
        index = index_episode(path, cfg.fps)
        if not cfg.include_failures and not index.success:
            continue
        if out and (index.joint_names != out[0].joint_names or index.cameras != out[0].cameras):
            raise BagError(
                f"{path}: joints {index.joint_names} / cameras {index.cameras} differ from "
                f"{out[0].path}'s; export them into separate datasets"
            )
        if len(index) < 2:
            raise BagError(f"{path}: only {len(index)} frame at {cfg.fps} fps")
        out.append(index)
    if not out:
        raise BagError("no episodes to export")
    return out


def progress_bar(total: int, desc: str, cfg: ExportConfig):
    return tqdm(total=total, desc=desc, unit="frame", disable=not cfg.progress, file=sys.stderr, leave=False)


def prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BagError(f"{out}: exists and is not empty (use --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def export_hdf5(paths: list[Path], out: Path, cfg: ExportConfig, robot: str = "", overwrite: bool = False) -> dict:
    indices = episode_indices(paths, cfg)
    out = Path(out)
    prepare_out(out, overwrite)
    bar = progress_bar(sum(len(ix) for ix in indices), "export hdf5", cfg)
    total = 0
    try:
        for e, ix in enumerate(indices):
            value, gate = targets(ix, cfg)
            with h5py.File(out / f"episode_{e}.hdf5", "w") as f:
                f.attrs.update(
                    {
                        "sim": bool(ix.record.get("sim", False)),
                        "compress": False,
                        "fps": cfg.fps,
                        "task": ix.task,
                        "success": ix.success,
                        "outcome": str(ix.record.get("outcome", "")),
                        "stage_frames": json.dumps(ix.stage_frames),
                        "robot": robot or str(ix.record.get("robot", "")),
                        "joint_names": json.dumps(ix.joint_names),
                        "cameras": json.dumps(ix.cameras),
                        "intrinsics": json.dumps(ix.intrinsics),
                        "source_bag": str(ix.path.resolve()),
                        "software": f"wam_ros {__version__}",
                    }
                )
                obs = f.create_group("observations")
                obs.create_dataset("qpos", data=ix.state)
                obs.create_dataset("qvel", data=np.gradient(ix.state, 1.0 / cfg.fps, axis=0))
                f.create_dataset("action", data=ix.action)
                f.create_dataset("value_target", data=value)
                f.create_dataset("gate_label", data=gate)
                images, depths = obs.create_group("images"), obs.create_group("depth")
                for k, colors, depth in iter_frames(ix):
                    for cam in ix.cameras:
                        if cam not in images:
                            h, w = colors[cam].shape[:2]
                            images.create_dataset(cam, (len(ix), h, w, 3), np.uint8, chunks=(1, h, w, 3))
                            if cam in depth:
                                depths.create_dataset(
                                    cam,
                                    (len(ix), h, w),
                                    np.uint16,
                                    chunks=(1, h, w),
                                    compression="gzip",
                                    compression_opts=1,
                                )
                        images[cam][k] = colors[cam]
                        if cam in depth:
                            depths[cam][k] = depth[cam]
                    bar.update(1)
            total += len(ix)
    finally:
        bar.close()
    return {
        "format": "hdf5",
        "path": str(out),
        "episodes": len(indices),
        "frames": total,
        "cameras": indices[0].cameras,
    }


# --- loading exported datasets as training episodes --------------------------------------------
def is_hdf5(path: Path) -> bool:
    return bool(sorted(Path(path).glob("episode_*.hdf5")))


def dataset_digest(path: Path) -> str:
    """SHA-256 over every file of an exported dataset (relative path and content, in path order):
    names the exact data a checkpoint was trained on."""
    import hashlib

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise DatasetError(f"{root}: no dataset files to digest")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DatasetSummary:
    """What `wam-ros dataset info` reports, read from the metadata alone (no video decoded)."""

    meta: DatasetMeta
    lengths: list[int]
    successes: list[bool]
    tasks: list[str]
    image_size: tuple[int, int]


def _hdf5_episodes(path: Path) -> Iterator[tuple[h5py.File, DatasetMeta]]:
    """Each episode file, open, with its layout; all must share the first one's."""
    files = sorted(Path(path).glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[-1]))
    if not files:
        raise DatasetError(f"{path}: no episode_*.hdf5 files")
    first = None
    for file in files:
        with h5py.File(file, "r") as f:
            cameras = json.loads(f.attrs["cameras"]) if "cameras" in f.attrs else sorted(f["observations/images"])
            names = (
                json.loads(f.attrs["joint_names"])
                if "joint_names" in f.attrs
                else [f"joint_{i}" for i in range(f["observations/qpos"].shape[1])]
            )
            meta = DatasetMeta(
                cameras=list(cameras),
                state_names=names,
                action_names=names,
                action_space="joint_position",
                fps=float(f.attrs.get("fps", 50.0)),
            )  # ALOHA: 50 Hz
            if first is not None and meta != first:
                raise DatasetError(f"{file}: cameras/joints/fps differ from the first episode's")
            first = meta
            yield f, meta


def summarize_hdf5(path: Path) -> DatasetSummary:
    lengths, successes, tasks, size, meta = [], [], set(), (0, 0), None
    for f, meta in _hdf5_episodes(path):
        lengths.append(int(f["observations/qpos"].shape[0]))
        successes.append(bool(f.attrs.get("success", True)))
        tasks.add(str(f.attrs.get("task", "")))
        size = tuple(int(v) for v in f[f"observations/images/{meta.cameras[0]}"].shape[1:3])
    return DatasetSummary(meta, lengths, successes, sorted(tasks), size)


def load_hdf5(path: Path) -> tuple[DatasetMeta, list[Episode]]:
    episodes, meta = [], None
    for f, meta in _hdf5_episodes(path):
        cameras = meta.cameras
        depth_group = f["observations"].get("depth")
        episodes.append(
            Episode(
                rgb=np.stack([f[f"observations/images/{c}"][()] for c in cameras], axis=1),
                state=f["observations/qpos"][()],
                action=f["action"][()],
                task=str(f.attrs.get("task", "")),
                success=bool(f.attrs.get("success", True)),
                stage_frames=json.loads(f.attrs.get("stage_frames", "[]")),
                depth=np.stack([depth_group[c][()] for c in cameras], axis=1)
                if depth_group is not None and all(c in depth_group for c in cameras)
                else None,
            )
        )
    return meta, episodes
