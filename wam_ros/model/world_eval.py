"""`wam-ros eval-world-model`: is the predicted future better than "nothing moves"? (ROS-free)

For observations taken from held-out episodes, the policy predicts (through its public path,
WorldActionPolicy.predict, what a robot runs) future colour and depth per view. Each predicted
frame is compared with the episode's recorded frame at the same time offset, and so is the
"nothing moves" baseline: the current frame and the current depth repeated for every future step,
the cameras staying where they are. Per horizon step (averaged over observations and views):

- RGB PSNR (dB) of the frame, 8-bit peak, averaged over frames (`psnr_db`; identical frames count
  as 100 dB), and the PSNR of the mean squared error over all frames of a step (`psnr_pooled_db`),
  which weighs every pixel's error alike instead of crediting "nothing moves" with 100 dB for each
  frame in which nothing moved.
- Motion correlation: Pearson correlation, over every pixel and colour channel of the frame, of the
  predicted change from the present with the true change from the present (`motion_correlation`):
  both are measured from the observed frame (the policy anchors its decoded future to it, so a
  decoder's loss of detail is not counted as motion). The baseline predicts no change, which
  explains none of the motion: 0.
- Depth AbsRel and δ1 (share of pixels with max(pred/true, true/pred) < 1.25) on pixels where both
  depths are valid (> 0).
- Chamfer distance (m) between the predicted and the true 4D cloud of that step: every view's depth
  lifted into the robot base frame (wam_ros.geometry.lifting.lift) with camera poses from the
  kinematics: the predicted cloud at the joint positions the predicted chunk is expected to reach
  at that step (DeployedPolicy.future_joint_maps, as DeployedPolicy.predicted_cloud lifts it for
  RViz), the true cloud at the recorded joint state, the baseline's at the current joint state.

Two predictions are measured: "prediction", the future the robot publishes
(DeployedPolicy.imagined_future: the observed scene carried by the kinematics plus the model's
colour change), and "model_only", the frames and depth the model decodes by itself. A third row,
"kinematics_oracle", carries the observed scene to the recorded joint positions instead of the
predicted ones (colour metrics): what the reprojection gives when the arm's motion is predicted
perfectly, which separates the renderer's error from the predicted motion's.

The predicted frames are aligned to recorded ones by their time offset in actions
(`frame_offsets`): one action is one control period of the episode, so a frame `o` actions ahead of
the observation at frame t is recorded frame t + o. Colour and depth are placed separately (a Wan
VAE decodes a colour frame per action, the depth branch gives one map per latent frame): colour
metrics are reported per colour step, depth and Chamfer per depth step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from wam_ros.config import RobotConfig, load_robot_config
from wam_ros.data.dataset import DatasetError, DatasetMeta, Episode
from wam_ros.data.formats import load_dataset
from wam_ros.model.model_config import ModelConfig
from wam_ros.model.policy import Observation, Prediction, WorldActionPolicy, depth_metres, load_policy, resize_images

PEAK = 255.0
DELTA1_RATIO = 1.25
CHAMFER_MAX_POINTS = 4096  # per cloud: a random subset beyond this keeps the pairwise distances in memory
METRICS = ("psnr_db", "motion_correlation", "depth_abs_rel", "depth_delta1", "chamfer_m")
JSON_NAME, STRIP_NAME = "world_model_eval.json", "world_model_strip.png"
# the strip: one tile per (row, step), plus room for row labels and a title, at this resolution
TILE_INCHES, LABEL_INCHES, TITLE_INCHES, STRIP_DPI = 1.0, 1.1, 0.6, 100


# ---- metrics (plain numpy) -----------------------------------------------------------------------
def psnr(pred: np.ndarray, true: np.ndarray, peak: float = PEAK) -> float:
    """Peak signal-to-noise ratio (dB) of two 8-bit images: 10 log10(peak² / MSE); identical images
    give inf."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def motion_correlation(predicted_change: np.ndarray, true_change: np.ndarray) -> float:
    """Pearson correlation, over every pixel and channel, of a predicted change a and a true change b
    (frames minus a present frame): sum((a - mean a)(b - mean b)) / sqrt(sum((a - mean a)²) sum((b - mean b)²)).

    1: the predicted change has the true change's pattern (at any positive scale), -1: its negation.
    NaN where nothing changed (b constant: no motion to correlate with; averages skip it); 0 where
    b varies but a does not (a prediction of no change explains none of the motion)."""
    a = np.asarray(predicted_change, np.float64).ravel()
    b = np.asarray(true_change, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    sb = float(np.sqrt(np.dot(b, b)))
    if sb == 0:
        return math.nan
    sa = float(np.sqrt(np.dot(a, a)))
    return 0.0 if sa == 0 else float(np.dot(a, b) / (sa * sb))


def depth_errors(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(AbsRel = mean |pred - true| / true, δ1 = share with max(pred/true, true/pred) < 1.25) over
    the pixels where both depths are valid (> 0, finite); NaN for both where none is."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    valid = (pred > 0) & (true > 0) & np.isfinite(pred) & np.isfinite(true)
    if not valid.any():
        return math.nan, math.nan
    p, t = pred[valid], true[valid]
    return float(np.mean(np.abs(p - t) / t)), float(np.mean(np.maximum(p / t, t / p) < DELTA1_RATIO))


def chamfer_distance(a: np.ndarray, b: np.ndarray, max_points: int = CHAMFER_MAX_POINTS, seed: int = 0) -> float:
    """Symmetric Chamfer distance (m) of point sets a (N, 3) and b (M, 3):
    (mean over a of the distance to the nearest point of b + mean over b of the distance to the
    nearest point of a) / 2. NaN where either set is empty. Sets larger than max_points are
    replaced by a seeded random subset of that size."""
    import torch

    rng = np.random.default_rng(seed)
    sets = []
    for points in (a, b):
        points = np.asarray(points, np.float64).reshape(-1, 3)
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) > max_points:
            points = points[rng.choice(len(points), max_points, replace=False)]
        sets.append(torch.from_numpy(points))
    if min(len(s) for s in sets) == 0:
        return math.nan
    distances = torch.cdist(sets[0], sets[1])
    return float((distances.min(dim=1).values.mean() + distances.min(dim=0).values.mean()) / 2)


# ---- time alignment -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameOffsets:
    """Time offsets, in actions (control periods) after the observation, of predicted frames."""

    rgb: np.ndarray  # of Prediction.future_rgb's frames
    depth: np.ndarray | None  # of Prediction.future_depth's frames (None: no depth predicted)


def _offsets(frames: int, cfg: ModelConfig) -> np.ndarray:
    if frames == cfg.horizon:  # one per latent frame, at the last action it spans
        return cfg.actions_per_frame * np.arange(1, frames + 1)
    if frames == cfg.num_actions:  # one per action
        return np.arange(1, frames + 1)
    raise ValueError(
        f"{frames} predicted frames: expected the horizon ({cfg.horizon}) or one per action ({cfg.num_actions})"
    )


def frame_offsets(prediction: Prediction, cfg: ModelConfig) -> FrameOffsets:
    """Where each predicted colour and depth frame lies in time, from how many of them the
    prediction holds and the config: H frames are latent frames, `actions_per_frame` actions apart
    (frame j at actions_per_frame * j); K = actions_per_frame * H frames are one per action (frame j
    at j)."""
    if prediction.future_rgb is None:
        raise ValueError("the prediction has no video")
    depth = prediction.future_depth
    return FrameOffsets(
        _offsets(prediction.future_rgb.shape[1], cfg), None if depth is None else _offsets(depth.shape[1], cfg)
    )


# ---- the evaluation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalConfig:
    episodes: tuple[int, ...] = ()  # dataset indices (held-out episodes); empty: all
    stride: int = 0  # frames between observations in an episode (0: one chunk, K)
    max_samples: int = 0  # observations in all (0: every one the stride gives)
    robot: str = "agilex"  # kinematics for the camera poses (wrist cameras move with the arms)
    seed: int = 0  # sampling noise of observation i: seed + i
    action_steps: int = 0  # T_a (0: the checkpoint's)
    video_steps: int = 0  # T_O (0: the checkpoint's)
    expert: str = "gated"  # whose actions the future follows: the gate's pick, or one forced


@dataclass
class StepMetrics:
    """Per (observation, view, step) image metrics and per (observation, step) Chamfer distances."""

    psnr_db: list[np.ndarray] = field(default_factory=list)  # (V, T) each
    motion_correlation: list[np.ndarray] = field(default_factory=list)  # (V, T)
    depth_abs_rel: list[np.ndarray] = field(default_factory=list)  # (V, T)
    depth_delta1: list[np.ndarray] = field(default_factory=list)  # (V, T)
    chamfer_m: list[np.ndarray] = field(default_factory=list)  # (T,)
    squared_error: list[np.ndarray] = field(default_factory=list)  # (V, T): mean over pixels

    def summary(self, views: Sequence[str]) -> tuple[dict, dict]:
        """(mean per step over observations and views, per view: mean per step over observations);
        None where nothing was measured (no depth). Besides the mean of each frame's PSNR, the PSNR of
        the mean squared error over all frames of a step (`psnr_pooled_db`): the mean of dB values
        counts a frame in which nothing moved (identical: capped at 100 dB) as much as one in which
        the arm crossed the view, so it mostly rewards "nothing moves" for the frames where it is
        exactly right; the pooled one weighs every pixel's error alike."""
        overall, per_view = {}, {v: {} for v in views}
        if self.squared_error:
            stacked = np.stack(self.squared_error)  # (N, V, T)
            overall["psnr_pooled_db"] = _json_floats(_pooled_psnr(stacked.reshape(-1, stacked.shape[-1])))
            for v, view in enumerate(views):
                per_view[view]["psnr_pooled_db"] = _json_floats(_pooled_psnr(stacked[:, v]))
        for name in METRICS:
            values = getattr(self, name)
            if not values:
                overall[name] = None
                continue
            stacked = np.stack(values)
            overall[name] = _json_floats(_nanmean(stacked.reshape(-1, stacked.shape[-1])))
            if stacked.ndim == 3:
                for v, view in enumerate(views):
                    per_view[view][name] = _json_floats(_nanmean(stacked[:, v]))
        return overall, per_view


def _pooled_psnr(squared_errors: np.ndarray) -> np.ndarray:
    """Column-wise PSNR (dB, 8-bit peak) of the mean of per-frame mean squared errors; 100 where
    every frame was exact (as a single frame's inf is capped)."""
    mse = squared_errors.mean(axis=0)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10.0 * np.log10(PEAK**2 / np.maximum(mse, 1e-300)), 100.0)


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Column means over finite values (inf PSNR of identical images counts as a finite cap)."""
    values = np.where(np.isposinf(values), 100.0, values)
    finite = np.isfinite(values)
    return np.where(
        finite.any(axis=0), np.nansum(np.where(finite, values, 0), axis=0) / np.maximum(finite.sum(0), 1), np.nan
    )


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


@dataclass
class EpisodeArrays:
    rgb: np.ndarray  # (T, V, h, w, 3) uint8, the model's cameras at its size
    depth: np.ndarray | None  # (T, V, h, w) as recorded (uint16 mm or float m)
    state: np.ndarray  # (T, S) in the checkpoint's state order


@dataclass(frozen=True)
class _Geometry:
    """What the depth metrics of one observation's futures share: its true depth and cloud at the
    compared steps, computed once."""

    episode: EpisodeArrays
    frame: int
    depth_steps: np.ndarray  # offsets (actions) of the compared depth frames
    offsets: FrameOffsets
    expected_joints: list[dict[str, float]]  # per action of the chunk: where the joints are expected
    true_depth: np.ndarray  # (V, T, h, w) metres at the depth steps
    truth: list[np.ndarray]  # per depth step: the recorded cloud (N, 3)


@dataclass
class Sample:
    """One observation's frames at the model's size, (V, T, ...) with T = the evaluated steps."""

    episode: int
    frame: int
    current_rgb: np.ndarray  # (V, h, w, 3)
    truth_rgb: np.ndarray  # (V, T, h, w, 3)
    predicted_rgb: np.ndarray  # (V, T, h, w, 3)

    @property
    def motion(self) -> float:
        return float(np.abs(self.truth_rgb.astype(np.float32) - self.current_rgb[:, None]).mean())


class WorldModelEvaluation:
    """A checkpoint, a robot's kinematics and camera intrinsics; `run` evaluates episodes."""

    def __init__(
        self,
        policy: WorldActionPolicy,
        robot: RobotConfig,
        intrinsics: Mapping[str, tuple[np.ndarray, tuple[int, int]]],
        config: EvalConfig,
    ):
        from wam_ros.control.chunking import ChunkScheduler
        from wam_ros.geometry.lifting import scale_intrinsics
        from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config

        self.policy, self.config = policy, config
        # what deploys: its action decoding, kinematics and camera frames (the scheduler is unused)
        self.deployed = DeployedPolicy(
            policy, robot, ChunkScheduler(chunking_config(policy)), DeployConfig(video=True, depth=True)
        )
        self.size = tuple(policy.cfg.image_size)
        missing = [c for c in policy.cfg.cameras if c not in intrinsics]
        if missing:
            raise ValueError(f"no intrinsics for cameras {missing}")
        self.K = np.stack([scale_intrinsics(intrinsics[c][0], intrinsics[c][1], self.size) for c in policy.cfg.cameras])

    def observation_frames(self, episodes: Sequence[Episode]) -> list[tuple[int, int]]:
        """(episode index, frame) of each observation: every `stride` frames, as long as the whole
        chunk (K actions, the furthest any predicted frame reaches) stays inside the episode."""
        cfg = self.config
        horizon = self.policy.cfg.num_actions
        chosen = cfg.episodes or tuple(range(len(episodes)))
        bad = [e for e in chosen if not 0 <= e < len(episodes)]
        if bad:
            raise DatasetError(f"episodes {bad}: the dataset has {len(episodes)} (0..{len(episodes) - 1})")
        frames = [(e, t) for e in chosen for t in range(0, len(episodes[e]) - horizon, cfg.stride or horizon)]
        if not frames:
            raise DatasetError(f"no chosen episode is longer than the model's chunk ({horizon} frames)")
        return frames[: cfg.max_samples] if cfg.max_samples else frames

    def _episode_arrays(self, meta: DatasetMeta, episode: Episode) -> EpisodeArrays:
        """The model's cameras and state joints of an episode, frames at the model's size (resized as
        DeployedPolicy.observation resizes live frames)."""
        cams, names = list(self.policy.cfg.cameras), self.policy.meta.state_names
        missing = [c for c in cams if c not in meta.cameras] + [n for n in names if n not in meta.state_names]
        if missing:
            raise DatasetError(f"the dataset lacks the model's cameras/state joints {missing}")
        views = [meta.cameras.index(c) for c in cams]
        depth = None if episode.depth is None else resize_images(episode.depth[:, views], self.size, "nearest")
        return EpisodeArrays(
            rgb=resize_images(episode.rgb[:, views], self.size, "area"),
            depth=depth,
            state=episode.state[:, [meta.state_names.index(n) for n in names]],
        )

    def run(self, meta: DatasetMeta, episodes: Sequence[Episode]) -> tuple[dict, Sample]:
        """The report (see the module docstring) and the observation whose true future moves most
        (for the strip)."""
        if not math.isclose(meta.fps, self.policy.meta.fps, rel_tol=1e-3):
            raise DatasetError(
                f"dataset at {meta.fps} fps, the checkpoint at {self.policy.meta.fps}: a predicted "
                "frame's offset in actions would not point at the recorded frame of that time"
            )
        cams = list(self.policy.cfg.cameras)
        predicted, model_only, baseline, oracle = StepMetrics(), StepMetrics(), StepMetrics(), StepMetrics()
        shown: Sample | None = None
        first: FrameOffsets | None = None
        observations = self.observation_frames(episodes)
        arrays: dict[int, EpisodeArrays] = {}
        for i, (e, t) in enumerate(observations):
            if e not in arrays:
                arrays = {e: self._episode_arrays(meta, episodes[e])}  # one episode in memory at a time
            ep = arrays[e]
            obs = Observation(
                images=dict(zip(cams, ep.rgb[t])),
                state=ep.state[t],
                instruction=episodes[e].task,
                depths=None if ep.depth is None else dict(zip(cams, ep.depth[t])),
            )
            prediction = self.policy.predict(
                obs,
                video=True,
                depth=True,
                seed=self.config.seed + i,
                action_steps=self.config.action_steps or None,
                video_steps=self.config.video_steps or None,
                expert=self.config.expert,
            )
            offsets = frame_offsets(prediction, self.policy.cfg)
            if first is None:
                first = offsets
            elif not (np.array_equal(first.rgb, offsets.rgb) and np.array_equal(first.depth, offsets.depth)):
                raise RuntimeError(f"predicted frame offsets changed between observations: {first} vs {offsets}")
            absolute = self.deployed.encoder.decode(prediction.actions, ep.state[t])
            imagined = self.deployed.imagined_future(prediction, obs, absolute, self.K)
            steps = offsets.rgb
            truth = ep.rgb[t + steps].swapaxes(0, 1)  # (V, T, h, w, 3)
            still = np.repeat(ep.rgb[t][:, None], len(steps), axis=1)
            true_change = truth.astype(np.float64) - still
            futures = (
                (predicted, imagined.future_rgb, imagined.future_depth),
                (model_only, prediction.future_rgb, prediction.future_depth),
                (baseline, still, None),
            )
            colour_only = ()
            if ep.depth is not None:  # the observed scene carried to the recorded joint positions
                carried, _ = self.deployed.reprojection.render(
                    ep.rgb[t],
                    depth_metres(ep.depth[t]),
                    self.K,
                    self.deployed.joint_map(ep.state[t]),
                    [self.deployed.joint_map(ep.state[t + o]) for o in steps],
                )
                colour_only = ((oracle, carried, None),)
            for metrics, frames, _ in (*futures, *colour_only):
                metrics.psnr_db.append(_per_frame(psnr, frames, truth))
                metrics.squared_error.append(_per_frame(_squared_error, frames, truth))
                metrics.motion_correlation.append(
                    _per_frame(motion_correlation, frames.astype(np.float64) - still, true_change)
                )
            if ep.depth is not None:
                geometry = self._ground_truth(ep, t, offsets, absolute)
                self._geometry(geometry, baseline, None, None)
                for metrics, frames, depth in futures[:2]:
                    self._geometry(geometry, metrics, frames, depth)
            sample = Sample(e, t, ep.rgb[t], truth, imagined.future_rgb)
            if shown is None or sample.motion > shown.motion:
                shown = sample
        ours, ours_per_view = predicted.summary(cams)
        alone, _ = model_only.summary(cams)
        still_summary, still_per_view = baseline.summary(cams)
        kinematics_oracle, _ = oracle.summary(cams)

        def timeline(offsets: np.ndarray) -> dict:
            return {
                "offset_actions": [int(o) for o in offsets],
                "seconds": [round(float(o) / meta.fps, 4) for o in offsets],
            }

        report = {
            "model": {
                "image_size": list(self.size),
                "horizon": self.policy.cfg.horizon,
                "expert": self.config.expert,
                # None: a checkpoint from before the fit; its future is placed at the targets
                "tracking_gains": self.policy.meta.tracking_gains,
                "actions_per_frame": self.policy.cfg.actions_per_frame,
            },
            "cameras": cams,
            "episodes": sorted({e for e, _ in observations}),
            "observations": len(observations),
            "steps": timeline(first.rgb),  # psnr_db, motion_correlation
            "depth_steps": timeline(self._depth_steps(first)),  # depth_abs_rel, depth_delta1, chamfer_m
            "prediction": ours,
            "model_only": alone,
            "baseline": still_summary,
            # the kinematic part of "prediction" had it known the recorded joint positions: what the
            # reprojection gives with the arm's motion predicted perfectly (colour only)
            "kinematics_oracle": {
                k: v for k, v in kinematics_oracle.items() if k in ("psnr_db", "psnr_pooled_db", "motion_correlation")
            },
            "per_view": {c: {"prediction": ours_per_view[c], "baseline": still_per_view[c]} for c in cams},
            "beats_baseline": {
                "psnr_db": _compare(ours["psnr_db"], still_summary["psnr_db"], higher=True),
                "psnr_pooled_db": _compare(ours["psnr_pooled_db"], still_summary["psnr_pooled_db"], higher=True),
                "chamfer_m": _compare(ours["chamfer_m"], still_summary["chamfer_m"], higher=False),
            },
        }
        return report, shown

    def _depth_steps(self, offsets: FrameOffsets) -> np.ndarray:
        """The steps depth is compared at: the predicted depth's, or the colour's without one."""
        steps = offsets.rgb if offsets.depth is None else offsets.depth
        return steps[steps > 0]

    def _ground_truth(self, ep: EpisodeArrays, t: int, offsets: FrameOffsets, absolute: np.ndarray) -> _Geometry:
        """The recorded depth and cloud at the depth steps of the observation at frame t (the episode
        has depth), and where the predicted chunk `absolute` is expected to take the joints."""
        steps = self._depth_steps(offsets)
        true_depth = depth_metres(ep.depth[t + steps]).swapaxes(0, 1)  # (V, T, h, w)
        truth = self._clouds(
            true_depth, ep.rgb[t + steps].swapaxes(0, 1), [self.deployed.joint_map(ep.state[t + o]) for o in steps]
        )
        expected = self.deployed.future_joint_maps(ep.state[t], absolute, self.policy.cfg.num_actions)
        return _Geometry(ep, t, steps, offsets, expected, true_depth, truth)

    def _geometry(self, g: _Geometry, metrics: StepMetrics, rgb: np.ndarray | None, depth: np.ndarray | None) -> None:
        """Depth errors and Chamfer distances at the depth steps of one observation's future: colour
        frames (V, F, h, w, 3) and depth maps (V, H, h, w) predicted with the cameras at the expected
        joint positions; rgb None: the baseline (the present repeated, the cameras where they are).
        A prediction without depth (no depth branch) adds nothing."""
        if rgb is not None and depth is None:
            return
        steps, t = g.depth_steps, g.frame
        if rgb is None:
            guess_depth = np.repeat(depth_metres(g.episode.depth[t])[:, None], len(steps), axis=1)
            guess_rgb = np.repeat(g.episode.rgb[t][:, None], len(steps), axis=1)
            maps = [self.deployed.joint_map(g.episode.state[t])] * len(steps)
        else:
            guess_depth = depth[:, g.offsets.depth > 0]
            guess_rgb = rgb[:, [int(np.flatnonzero(g.offsets.rgb == o)[0]) for o in steps]]  # the same times
            maps = [g.expected_joints[o - 1] for o in steps]
        self._depth_metrics(metrics, guess_depth, g.true_depth)
        metrics.chamfer_m.append(_chamfers(self._clouds(guess_depth, guess_rgb, maps), g.truth))

    def _depth_metrics(self, metrics: StepMetrics, pred: np.ndarray, true: np.ndarray) -> None:
        errors = np.array([[depth_errors(p, q) for p, q in zip(pv, tv)] for pv, tv in zip(pred, true)])  # (V, T, 2)
        metrics.depth_abs_rel.append(errors[..., 0])
        metrics.depth_delta1.append(errors[..., 1])

    def _clouds(self, depth: np.ndarray, rgb: np.ndarray, joint_maps: list[dict[str, float]]) -> list[np.ndarray]:
        """Per step, the (N, 3) points of every view's depth (V, T, h, w) lifted with the camera poses
        at that step's joint positions, fused (NaN where no depth)."""
        from wam_ros.geometry.lifting import lift

        cloud = lift(depth, rgb, self.K, self.deployed.camera_poses(joint_maps))
        views, steps = depth.shape[:2]
        points = cloud.points.reshape(views, steps, -1, 3)
        return [points[:, s].reshape(-1, 3) for s in range(steps)]


def _squared_error(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))


def _per_frame(metric, frames: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """metric(frame, true frame) for every (view, step): (V, T)."""
    views, steps = truth.shape[:2]
    return np.array([[metric(frames[v, s], truth[v, s]) for s in range(steps)] for v in range(views)])


def _chamfers(ours: list[np.ndarray], truth: list[np.ndarray]) -> np.ndarray:
    return np.array([chamfer_distance(a, b) for a, b in zip(ours, truth)])


def _compare(ours: list | None, baseline: list | None, higher: bool) -> list[bool] | None:
    if ours is None or baseline is None:
        return None
    return [a is not None and b is not None and (a > b if higher else a < b) for a, b in zip(ours, baseline)]


# ---- inputs: camera intrinsics ---------------------------------------------------------------------
def dataset_intrinsics(directory: Path, cameras: Sequence[str]) -> dict[str, tuple[np.ndarray, tuple[int, int]]] | None:
    """camera -> (K, (height, width) it belongs to) from what `wam-ros export` stores with a dataset
    (LeRobot v3 info.json, ALOHA HDF5 attributes, both from the bags' CameraInfo); None for a
    dataset without them (the .npz layout)."""
    from wam_ros.data import export, lerobot

    directory = Path(directory)
    if lerobot.is_lerobot(directory):
        info = json.loads((directory / "meta" / "info.json").read_text())
        stored = lerobot.extras(directory).get("intrinsics") or {}
        sizes = {
            c: tuple(info["features"][f"observation.images.{c}"]["shape"][:2])
            for c in cameras
            if f"observation.images.{c}" in info["features"]
        }
    elif export.is_hdf5(directory):
        import h5py

        with h5py.File(sorted(directory.glob("episode_*.hdf5"))[0], "r") as f:
            stored = json.loads(f.attrs.get("intrinsics", "{}"))
            sizes = {
                c: tuple(f[f"observations/images/{c}"].shape[1:3]) for c in cameras if f"observations/images/{c}" in f
            }
    else:
        return None
    if not all(c in stored and c in sizes for c in cameras):
        return None
    return {c: (np.asarray(stored[c], dtype=float).reshape(3, 3), sizes[c]) for c in cameras}


def simulator_intrinsics(robot: RobotConfig, cameras: Sequence[str]) -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    """The simulator's cameras at its default size (recordings whose metadata carries no
    intrinsics), before resizing to the model's size."""
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimWorld

    world = SimWorld(robot, generate_urdf(robot))
    try:
        size = (world.config.height, world.config.width)
        return {c: (world.intrinsics(c), size) for c in cameras}
    finally:
        world.close()


# ---- the strip ----------------------------------------------------------------------------------------
def strip_size(views: int, steps: int) -> tuple[int, int]:
    """(height, width) in pixels of the strip for this many views and steps: rows truth, prediction
    and baseline per view, one column per step."""
    return (
        round((3 * views * TILE_INCHES + TITLE_INCHES) * STRIP_DPI),
        round((steps * TILE_INCHES + LABEL_INCHES) * STRIP_DPI),
    )


def save_strip(sample: Sample, cameras: Sequence[str], offsets: Sequence[int], fps: float, path: Path) -> None:
    """Truth, prediction and baseline rows per view, one column per horizon step, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views, steps = len(cameras), len(offsets)
    height, width = strip_size(views, steps)
    fig, axes = plt.subplots(
        3 * views, steps, squeeze=False, figsize=(width / STRIP_DPI, height / STRIP_DPI), dpi=STRIP_DPI
    )
    fig.subplots_adjust(
        left=LABEL_INCHES * STRIP_DPI / width,
        right=0.99,
        bottom=0.0,
        top=1.0 - TITLE_INCHES * STRIP_DPI / height,
        wspace=0.05,
        hspace=0.05,
    )
    rows = (
        ("truth", sample.truth_rgb),
        ("prediction", sample.predicted_rgb),
        ("baseline", np.repeat(sample.current_rgb[:, None], steps, axis=1)),
    )
    for v, cam in enumerate(cameras):
        for r, (label, frames) in enumerate(rows):
            for s in range(steps):
                ax = axes[3 * v + r, s]
                ax.imshow(frames[v, s], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if s == 0:
                    ax.set_ylabel(f"{cam}\n{label}", fontsize=8)
                if v == 0 and r == 0:
                    ax.set_title(f"+{offsets[s]} ({offsets[s] / fps:.2f} s)", fontsize=8)
    fig.suptitle(f"episode {sample.episode}, frame {sample.frame}: truth / prediction / nothing moves", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=STRIP_DPI)
    plt.close(fig)


def evaluate_world_model(checkpoint: Path, data: Path, out: Path | None, config: EvalConfig) -> dict:
    """Loads both, evaluates, writes <out>/world_model_eval.json and <out>/world_model_strip.png."""
    policy = load_policy(checkpoint)
    meta, episodes = load_dataset(data)
    robot = load_robot_config(config.robot)
    cams = list(policy.cfg.cameras)
    intrinsics = dataset_intrinsics(data, cams) or simulator_intrinsics(robot, cams)
    report, shown = WorldModelEvaluation(policy, robot, intrinsics, config).run(meta, episodes)
    report = {"checkpoint": str(checkpoint), "data": str(data), **report}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report["png"] = str(out / STRIP_NAME)
        save_strip(shown, cams, report["steps"]["offset_actions"], meta.fps, out / STRIP_NAME)
        (out / JSON_NAME).write_text(json.dumps(report, indent=2))
    return report
