"""`wam-ros dataset info / preview` (ROS-free): what a recording or an exported dataset holds,
and a PNG of one episode (frames of every camera, joint plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from wam_ros.data.bag import BagError
from wam_ros.data.bag_frames import episode_paths, index_episode, iter_frames
from wam_ros.data.dataset import Episode
from wam_ros.data.export import is_hdf5, summarize_hdf5
from wam_ros.data.formats import load_dataset
from wam_ros.data.images import colorize_depth
from wam_ros.data.lerobot import is_lerobot, summarize_lerobot


def _summarize(lengths: list[int], fps: float, successes: list[bool], cameras: list[str], kind: str) -> dict[str, Any]:
    return {
        "format": kind,
        "episodes": len(lengths),
        "frames": int(sum(lengths)),
        "fps": fps,
        "lengths": {"min": min(lengths), "median": float(np.median(lengths)), "max": max(lengths)},
        "seconds": round(sum(lengths) / fps, 2),
        "cameras": cameras,
        "success_rate": round(float(np.mean(successes)), 3),
    }


def dataset_info(path: Path, fps: float = 15.0) -> dict[str, Any]:
    """Episodes, lengths, cameras, fps and success rate of a dataset or of recorded bags (at `fps`)."""
    path = Path(path)
    if is_lerobot(path) or is_hdf5(path):
        kind = "lerobot" if is_lerobot(path) else "hdf5"
        summary = (summarize_lerobot if kind == "lerobot" else summarize_hdf5)(path)
        info = _summarize(summary.lengths, summary.meta.fps, summary.successes, summary.meta.cameras, kind)
        info.update(tasks=summary.tasks, image_size=list(summary.image_size))
        return info
    if (path / "meta.json").is_file():
        meta, episodes = load_dataset(path)
        info = _summarize([len(e) for e in episodes], meta.fps, [e.success for e in episodes], meta.cameras, "npz")
        info.update(tasks=sorted({e.task for e in episodes}), image_size=list(episodes[0].rgb.shape[2:4]))
        return info
    indices = [index_episode(p, fps) for p in episode_paths([path])]
    info = _summarize([len(ix) for ix in indices], fps, [ix.success for ix in indices], indices[0].cameras, "rosbag2")
    info["tasks"] = sorted({ix.task for ix in indices})
    info["outcomes"] = {
        o: sum(ix.record.get("outcome") == o for ix in indices)
        for o in sorted({str(ix.record.get("outcome")) for ix in indices})
    }
    info["recovered"] = [ix.path.name for ix in indices if ix.record.get("recovered")]
    return info


def _plot(series: np.ndarray, names: list[str], size: tuple[int, int], title: str) -> np.ndarray:
    """A small line plot of (T, D) columns, one color per column."""
    w, h = size
    image = PILImage.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=(0, 0, 0))
    lo, hi = float(np.nanmin(series)), float(np.nanmax(series))
    span = max(hi - lo, 1e-6)
    t = np.linspace(8, w - 8, len(series))
    rng = np.random.default_rng(0)
    for j in range(series.shape[1]):
        y = h - 8 - (series[:, j] - lo) / span * (h - 28)
        color = tuple(int(c) for c in rng.integers(0, 200, 3))
        draw.line(list(zip(t.tolist(), y.tolist())), fill=color, width=1)
    draw.text((6, h - 16), f"{lo:.2f} .. {hi:.2f}  ({len(names)} joints)", fill=(80, 80, 80))
    return np.asarray(image)


def preview(path: Path, out: Path, episode: int = 0, frames: int = 5, fps: float = 15.0) -> dict[str, Any]:
    """PNG: per camera a row of color frames and a row of depth frames, evenly spread over the
    episode, then plots of the state and the action."""
    path = Path(path)
    if is_lerobot(path) or is_hdf5(path) or (path / "meta.json").is_file():
        meta, episodes = load_dataset(path)
        if not 0 <= episode < len(episodes):
            raise BagError(f"episode {episode}: the dataset has {len(episodes)}")
        ep: Episode = episodes[episode]
        cameras, picks = meta.cameras, np.linspace(0, len(ep) - 1, frames).round().astype(int)
        rgb = {c: [ep.rgb[k, v] for k in picks] for v, c in enumerate(cameras)}
        depth = {c: [ep.depth[k, v] for k in picks] for v, c in enumerate(cameras)} if ep.depth is not None else {}
        state, action, names = ep.state, ep.action, meta.state_names
    else:
        paths = episode_paths([path])
        if not 0 <= episode < len(paths):
            raise BagError(f"episode {episode}: {path} has {len(paths)} episode bags")
        ix = index_episode(paths[episode], fps)
        cameras, picks = ix.cameras, set(np.linspace(0, len(ix) - 1, frames).round().astype(int).tolist())
        rgb, depth = {c: [] for c in cameras}, {}
        for k, colors, depths in iter_frames(ix):
            if k in picks:
                for c in cameras:
                    rgb[c].append(colors[c])
                    if c in depths:
                        depth.setdefault(c, []).append(depths[c])
        state, action, names = ix.state, ix.action, ix.joint_names
    rows = []
    for c in cameras:
        rows.append(np.concatenate(rgb[c], axis=1))
        if c in depth:
            rows.append(np.concatenate([colorize_depth(d) for d in depth[c]], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    rows += [
        _plot(state, names, (width, 160), "state (joint positions)"),
        _plot(action, names, (width, 160), "action (commanded targets)"),
    ]
    sheet = PILImage.fromarray(np.concatenate(rows, axis=0))
    ImageDraw.Draw(sheet).text((6, 4), f"{path.name} episode {episode}: {', '.join(cameras)}", fill=(255, 255, 0))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return {"path": str(out), "episode": episode, "cameras": cameras, "frames": len(state), "size": list(sheet.size)}
