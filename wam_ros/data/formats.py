"""The dataset formats, in one place: this package's own layouts (wam_ros.data.dataset), LeRobot
v3 (wam_ros.data.lerobot) and ALOHA HDF5 (wam_ros.data.export). Writing any of them from recorded
bags, and reading any of them into the same `Episode` lists for training. The one module that
knows all three, so that none of them imports another that builds on it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from wam_ros.data import export, lerobot
from wam_ros.data.dataset import DatasetMeta, Episode, load_native

FORMATS = ("lerobot", "hdf5")  # what `wam-ros export --format` writes


def exporter(fmt: str) -> Callable[..., dict]:
    """The export function of a format (FORMATS)."""
    if fmt == "lerobot":
        return lerobot.export_lerobot
    if fmt == "hdf5":
        return export.export_hdf5
    raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")


def load_dataset(directory: Path, lazy: bool = False) -> tuple[DatasetMeta, list[Episode]]:
    """The dataset's meta and episodes, every episode checked against the meta. With lazy, the rgb
    and depth of npy-layout episodes stay on disk (LeRobot and HDF5 datasets are read into memory)."""
    directory = Path(directory)
    if lerobot.is_lerobot(directory) or export.is_hdf5(directory):
        meta, episodes = (lerobot.load_lerobot if lerobot.is_lerobot(directory) else export.load_hdf5)(directory)
        for i, ep in enumerate(episodes):
            ep.check(meta, f"{directory} episode {i}")
        return meta, episodes
    return load_native(directory, lazy)
