"""Runs in the LeRobot venv (`make lerobot`, Python 3.12, lerobot 0.6.1): LeRobot's own code reads,
edits and writes datasets for the interoperability tests. Imports nothing from wam_ros.

  check DATASET EXPECTED.npz OUT.json   LeRobotDataset loads every frame; values against the bag's
                                         (EXPECTED), then delete_episodes removes episode 0
  write EXPECTED.npz OUT_DIR             LeRobot's writer (its default encodings) writes EXPECTED
EXPECTED.npz: state, action (N, D) float32; episode (N,) int; task (N,) str; names (D,) str;
rgb_<cam> (N, H, W, 3) uint8; depth_<cam> (N, H, W) uint16 millimetres; fps ().
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _cameras(expected) -> list[str]:
    return sorted(k[4:] for k in expected.files if k.startswith("rgb_"))


def check(dataset_dir: Path, expected_path: Path, out: Path) -> None:
    from lerobot.datasets.dataset_tools import delete_episodes
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    expected = np.load(expected_path)
    cameras = _cameras(expected)
    dataset = LeRobotDataset("local/wam_ros_export", root=dataset_dir, video_backend="pyav")
    assert len(dataset) == len(expected["state"]), (len(dataset), len(expected["state"]))
    rgb_error, depth_error, decode_s = [], [], []
    for i in range(len(dataset)):
        start = time.perf_counter()
        item = dataset[i]
        decode_s.append(time.perf_counter() - start)
        np.testing.assert_array_equal(item["observation.state"].numpy(), expected["state"][i])
        np.testing.assert_array_equal(item["action"].numpy(), expected["action"][i])
        assert item["task"] == str(expected["task"][i]), (item["task"], expected["task"][i])
        assert int(item["episode_index"]) == int(expected["episode"][i])
        for cam in cameras:
            rgb = (item[f"observation.images.{cam}"].numpy().transpose(1, 2, 0) * 255.0).round()
            rgb_error.append(np.abs(rgb - expected[f"rgb_{cam}"][i].astype(np.float64)).mean())
            depth = item[f"observation.depth.{cam}"].numpy()[0]
            depth_error.append(np.abs(depth - expected[f"depth_{cam}"][i].astype(np.float64)).max())
    dataset_ep0 = int((expected["episode"] == 0).sum())
    edited_dir = out.parent / "deleted_episode_0"
    edited = delete_episodes(dataset, episode_indices=[0], output_dir=edited_dir)
    edited = LeRobotDataset("local/wam_ros_edited", root=edited_dir, video_backend="pyav")
    assert len(edited) == len(dataset) - dataset_ep0 and edited.meta.total_episodes == dataset.meta.total_episodes - 1
    first = edited[0]
    np.testing.assert_array_equal(first["observation.state"].numpy(), expected["state"][dataset_ep0])
    assert first["task"] == str(expected["task"][dataset_ep0])
    out.write_text(
        json.dumps(
            {
                "frames": len(dataset),
                "episodes": dataset.meta.total_episodes,
                "rgb_mean_abs_error_max": max(rgb_error),
                "depth_max_abs_error_mm": max(depth_error),
                "decode_s_median": float(np.median(decode_s)),
                "decode_s_max": max(decode_s),
                "edited_frames": len(edited),
                "edited_dir": str(edited_dir),
                "stats_keys": sorted(dataset.meta.stats),
            }
        )
    )


def write(expected_path: Path, out_dir: Path) -> None:
    """LeRobot's recording path: create, add_frame, save_episode, finalize (its default encoders:
    AV1 colour, log-quantised HEVC depth)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    expected = np.load(expected_path)
    cameras = _cameras(expected)
    names = [str(n) for n in expected["names"]]
    features = {
        "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
        "action": {"dtype": "float32", "shape": (len(names),), "names": names},
    }
    for cam in cameras:
        h, w = expected[f"rgb_{cam}"].shape[1:3]
        features[f"observation.images.{cam}"] = {
            "dtype": "video",
            "shape": (h, w, 3),
            "names": ["height", "width", "channels"],
        }
        features[f"observation.depth.{cam}"] = {
            "dtype": "video",
            "shape": (h, w, 1),
            "names": ["height", "width", "channels"],
            "info": {"is_depth_map": True},
        }
    dataset = LeRobotDataset.create(
        "local/written_by_lerobot",
        fps=int(expected["fps"]),
        features=features,
        root=out_dir,
        robot_type="held_out",
        use_videos=True,
    )
    episodes = expected["episode"]
    for e in np.unique(episodes):
        for i in np.flatnonzero(episodes == e):
            frame = {
                "observation.state": expected["state"][i],
                "action": expected["action"][i],
                "task": str(expected["task"][i]),
            }
            for cam in cameras:
                frame[f"observation.images.{cam}"] = expected[f"rgb_{cam}"][i]
                frame[f"observation.depth.{cam}"] = expected[f"depth_{cam}"][i][..., None]
            dataset.add_frame(frame)
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "check":
        check(Path(args[0]), Path(args[1]), Path(args[2]))
    elif command == "write":
        write(Path(args[0]), Path(args[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")
