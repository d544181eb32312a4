"""A checkpoint driving a robot (ROS-free): camera arrays and joint states in, absolute joint-target
chunks out, executed asynchronously with real-time chunking (wam_ros.control.chunking); the
predicted future lifted to 4D point clouds (wam_ros.geometry.lifting).

The policy node wires this to topics; the benchmarks and tests drive it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np

from wam_ros.config import SIDES, RobotConfig, gripper_columns
from wam_ros.control.chunking import ChunkingConfig, ChunkScheduler, Handover, default_execution_horizon
from wam_ros.control.commands import Chunk
from wam_ros.control.tracking import expected_positions
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.geometry.lifting import PointCloud, lift, scale_intrinsics
from wam_ros.geometry.reprojection import KinematicReprojection
from wam_ros.model.action_space import ChunkEncoder
from wam_ros.model.model_config import SAMPLERS
from wam_ros.model.policy import (
    PREDICTIVE,
    Observation,
    ObservationError,
    Prediction,
    WorldActionPolicy,
    depth_metres,
    resize_images,
)
from wam_ros.robots.urdf import generate_urdf


def resolve_instruction(policy: WorldActionPolicy, instruction: str) -> str:
    """The instruction to condition on: the given one, or the checkpoint's only task."""
    if instruction:
        return instruction
    tasks = list(getattr(policy.model.text_encoder, "tasks", []))  # a task table knows its instructions
    if len(tasks) != 1:
        raise ValueError(f"instruction: the checkpoint knows {len(tasks)} tasks {tasks}; name one")
    return tasks[0]


def chunking_config(
    policy: WorldActionPolicy,
    mode: str = "rtc",
    rate: float = 0.0,
    execution_horizon: int = 0,
    blend_new_weight: float = 0.7,
) -> ChunkingConfig:
    """Chunk scheduling for a checkpoint: its chunk length, its fps unless `rate` is given, and
    s = (H - 1) // 2 unless given."""
    horizon = policy.cfg.num_actions
    return ChunkingConfig(
        dt=1.0 / (rate or policy.meta.fps),
        horizon=horizon,
        execution_horizon=execution_horizon or default_execution_horizon(horizon),
        mode=mode,
        blend_new_weight=blend_new_weight,
    )


class UnusableJointState(ObservationError):
    """Joint readings the model must not be conditioned on (DeployedPolicy.unusable_joints)."""


FUTURES = ("imagined", "model")


@dataclass(frozen=True)
class DeployConfig:
    action_steps: int = 0  # T_a (0: the checkpoint's)
    video_steps: int = 0  # T_O (0: the checkpoint's)
    video: bool = True  # finish the predicted video after the actions (4D clouds)
    depth: bool = True  # run the depth branch on the last video pass
    guidance_clip: float = 5.0  # RTC guidance weight clip (beta)
    expert: str = "gated"  # gated, or force predictive / reactive (ablations)
    sampler: str = ""  # euler or unipc ("": the checkpoint's config); the weights serve both
    future: str = "imagined"  # the published future: "imagined" (imagined_future) or "model" (its own frames)


@dataclass(frozen=True)
class ChunkReady:
    chunk_id: int
    obs_time: float
    handover: Handover  # what executes from now on, in absolute targets
    prediction: Prediction  # actions (model units), value, gate; no video yet
    targets: np.ndarray  # the whole chunk as absolute targets (K, joints), before the hand-over


class DeployedPolicy:
    def __init__(
        self,
        policy: WorldActionPolicy,
        robot: RobotConfig,
        scheduler: ChunkScheduler,
        config: DeployConfig | None = None,
    ):
        self.policy, self.robot, self.scheduler = policy, robot, scheduler
        self.config = config or DeployConfig()
        if self.config.sampler not in ("", *SAMPLERS):
            raise ValueError(f"sampler {self.config.sampler!r}: expected one of {SAMPLERS} or '' (the checkpoint's)")
        if self.config.future not in FUTURES:
            raise ValueError(f"future {self.config.future!r}: expected one of {FUTURES}")
        meta = policy.meta
        missing = [n for n in (*meta.state_names, *meta.action_names) if n not in robot.joint_names]
        if missing:
            raise ValueError(f"checkpoint joints {missing} are not joints of robot {robot.name!r}")
        if scheduler.config.horizon != policy.cfg.num_actions:
            raise ValueError(
                f"chunking horizon {scheduler.config.horizon} != the model's {policy.cfg.num_actions} actions"
            )
        self.encoder = ChunkEncoder(meta.action_space, meta.state_names, meta.action_names, robot)
        urdf = generate_urdf(robot)
        self.kinematics = Kinematics(urdf)
        self.joint_names = list(meta.action_names)  # columns of the absolute chunks
        self._rest_columns = (
            [meta.state_names.index(n) for n in self.joint_names]
            if set(self.joint_names) <= set(meta.state_names)
            else None
        )
        self.tracking_gains = None if meta.tracking_gains is None else np.asarray(meta.tracking_gains, dtype=float)
        self.reprojection = KinematicReprojection(
            self.kinematics, urdf, [f"{c}_color_optical_frame" for c in policy.cfg.cameras]
        )
        # the command form: arm columns as positions, grippers as openings normalised by their travel
        self._limits = robot.joint_limits()
        self._grippers = gripper_columns(self.joint_names)
        self._arms = [i for i in range(len(self.joint_names)) if i not in self._grippers]
        self._gripper_max = np.array([self._limits[self.joint_names[i]][1] for i in self._grippers])

    # ---- observations ----------------------------------------------------------------------
    def unusable_joints(self, joints: Mapping[str, float]) -> list[str]:
        """The model's state joints that are missing, not finite, or further outside the robot's
        limits than the joint's whole range: no encoder reads that, a glitching driver's 1e38 does
        (and the state clip would otherwise turn it into a plausible input). Each with why."""
        problems = []
        for name in self.policy.meta.state_names:
            value = joints.get(name)
            if value is None or not math.isfinite(value):
                problems.append(f"{name}={'missing' if value is None else value}")
                continue
            lo, hi = self._limits[name]
            if not lo - (hi - lo) <= value <= hi + (hi - lo):
                problems.append(f"{name}={value:.4g} (limits [{lo:.4g}, {hi:.4g}])")
        return problems

    def observation(
        self,
        images: Mapping[str, np.ndarray],
        depths: Mapping[str, np.ndarray] | None,
        joints: Mapping[str, float],
        instruction: str,
    ) -> Observation:
        """Camera images of any size (resized to the model's, as for training) and joint positions by name."""
        unusable = self.unusable_joints(joints)
        if unusable:
            raise UnusableJointState(f"joint states unusable: {', '.join(unusable)}")
        size = tuple(self.policy.cfg.image_size)
        state = np.array([joints[n] for n in self.policy.meta.state_names], dtype=float)
        return Observation(
            images={c: resize_images(a, size, "area") for c, a in images.items()},
            depths=None if depths is None else {c: resize_images(a, size, "nearest") for c, a in depths.items()},
            state=state,
            instruction=instruction,
        )

    # ---- inference -------------------------------------------------------------------------
    def infer(
        self,
        obs: Observation,
        obs_time: float,
        clock: Callable[[], float],
        on_chunk: Callable[[ChunkReady], None],
        chunk_id: int,
        seed: int | None = None,
        epoch: int | None = None,
    ) -> Prediction:
        """Samples the next chunk, RTC-guided towards the executing chunk; on_chunk gets it (in
        absolute targets, already handed over to the scheduler) as soon as the actions are final.
        Returns the full prediction, with the video unless DeployConfig.video is off.
        epoch: the scheduler's epoch when the observation was taken (default: now). If the scheduler
        was reset since (a rollback), the chunk is dropped and on_chunk never sees it."""
        epoch = self.scheduler.epoch if epoch is None else epoch
        # where the arm holds if no chunk is executing: the observed joints, in the chunk's columns
        rest = None if self._rest_columns is None else obs.state[self._rest_columns]
        inpaint = self.scheduler.inpainting(obs_time, rest=rest)
        if inpaint is not None:
            target, weights = inpaint
            inpaint = (self._encode(target, obs.state), weights)
        cfg = self.config

        def actions_final(prediction: Prediction) -> None:
            absolute = self.encoder.decode(prediction.actions, obs.state)
            if not np.isfinite(absolute).all():  # e.g. a diverged checkpoint's NaN weights
                raise FloatingPointError("the model produced non-finite actions; no chunk from this observation")
            guided = prediction.expert == PREDICTIVE  # the reactive expert's actions are not sampled
            # a reset waits until an accepted chunk is handed on (published): none of its epoch follows it
            with self.scheduler.lock:
                handover = self.scheduler.accept(chunk_id, obs_time, absolute, clock(), guided, epoch, rest)
                if handover is not None:
                    on_chunk(ChunkReady(chunk_id, obs_time, handover, prediction, absolute))

        return self.policy.predict(
            obs,
            video=cfg.video,
            depth=cfg.depth,
            action_steps=cfg.action_steps or None,
            video_steps=cfg.video_steps or None,
            seed=seed,
            inpaint=inpaint,
            guidance_clip=cfg.guidance_clip,
            on_actions=actions_final,
            expert=cfg.expert,
            sampler=cfg.sampler or None,
        )

    def command(self, ready: ChunkReady) -> Chunk:
        """What the supervisor checks for one chunk (the fields of wam_ros/ActionChunk): the
        handed-over steps, arms in joint positions, grippers as openings in [0, 1]."""
        steps = ready.handover.chunk
        return Chunk(
            ready.chunk_id,
            ready.obs_time,
            [self.joint_names[i] for i in self._arms],
            steps.positions[:, self._arms],
            steps.dt,
            [self.joint_names[i] for i in self._grippers],
            np.clip(steps.positions[:, self._grippers] / self._gripper_max, 0.0, 1.0),
            value=ready.prediction.value,
        )

    def _encode(self, targets: np.ndarray, state: np.ndarray) -> np.ndarray:
        names = self.policy.meta.action_names
        tcp = self.encoder.tcp_poses
        if self.encoder.space == "ee_delta":
            state_joints = np.array([[state[self.policy.meta.state_names.index(n)] for n in names]])
            return self.encoder.encode(targets, state, tcp(targets, names), tcp(state_joints, names)[0])
        return self.encoder.encode(targets, state)

    # ---- geometry ---------------------------------------------------------------------------
    def joint_map(self, state: np.ndarray, targets: np.ndarray | None = None) -> dict[str, float]:
        q = dict(zip(self.policy.meta.state_names, state))
        if targets is not None:
            q.update(zip(self.joint_names, targets))
        return q

    def camera_poses(self, joint_maps: list[dict[str, float]]) -> np.ndarray:
        """(T, V, 4, 4) base <- optical frame of each model camera for each joint configuration."""
        frames = [f"{c}_color_optical_frame" for c in self.policy.cfg.cameras]
        return np.array(
            [[poses[f] for f in frames] for poses in (self.kinematics.frame_poses(q, frames) for q in joint_maps)]
        )

    def expected_joints(self, state: np.ndarray, absolute: np.ndarray) -> np.ndarray:
        """(K, J) where the joints will be after each target of a chunk (K, J), by the tracking
        response fitted to the training recordings (wam_ros.control.tracking; the targets themselves
        for a checkpoint without one)."""
        start = np.array(
            [
                state[self.policy.meta.state_names.index(n)] if n in self.policy.meta.state_names else absolute[0, i]
                for i, n in enumerate(self.joint_names)
            ]
        )
        return expected_positions(start, absolute, self.tracking_gains)

    def future_joint_maps(
        self, state: np.ndarray, absolute: np.ndarray, frames: int | None = None
    ) -> list[dict[str, float]]:
        """The expected joint configuration at each of `frames` future frames spread evenly over the
        chunk (default: the H latent frames): frame j (1..frames) follows action K j / frames."""
        frames = frames or self.policy.cfg.horizon
        expected = self.expected_joints(state, absolute)
        steps = [min(len(absolute) * j // frames, len(absolute)) - 1 for j in range(1, frames + 1)]
        return [self.joint_map(state, expected[k]) for k in steps]

    def imagined_future(
        self, prediction: Prediction, obs: Observation, absolute: np.ndarray, K: np.ndarray
    ) -> Prediction:
        """The prediction with the future as the robot publishes it (future_rgb (V, F, h, w, 3),
        future_depth (V, H, h, w) metres or None, the prediction's frame counts), K (V, 3, 3) at the
        model's image size.

        With observed depth: the observed scene carried to the expected joint positions of each frame
        (wam_ros.geometry.reprojection: what the kinematics explain) plus the model's predicted
        colour change (decoded future minus observation: what they do not); the depth is the
        carried scene's (0 where it has none), at the depth branch's frames. Without, or with
        DeployConfig.future "model" (to look at what the model predicts by itself): the prediction
        as it is."""
        rgb, depth = prediction.future_rgb, prediction.future_depth
        if rgb is None:
            raise ValueError("the prediction has no video (DeployConfig.video off)")
        if obs.depths is None or self.config.future == "model":
            return prediction
        cams = self.policy.cfg.cameras
        observed = np.stack([obs.images[c] for c in cams])
        observed_depth = np.stack([depth_metres(obs.depths[c]) for c in cams])
        frames = rgb.shape[1]
        carried_rgb, carried_depth = self.reprojection.render(
            observed, observed_depth, K, self.joint_map(obs.state), self.future_joint_maps(obs.state, absolute, frames)
        )
        change = rgb.astype(np.int16) - observed[:, None].astype(np.int16)
        rgb = np.clip(carried_rgb.astype(np.int16) + change, 0, 255).astype(np.uint8)
        if depth is not None:  # the depth branch's maps measured worse than re-lifting the present (README)
            depth = carried_depth[:, frames // depth.shape[1] - 1 :: frames // depth.shape[1]].astype(np.float32)
        return replace(prediction, future_rgb=rgb, future_depth=depth)

    def model_intrinsics(self, intrinsics: Mapping[str, tuple[np.ndarray, tuple[int, int]]]) -> np.ndarray:
        """(V, 3, 3) intrinsics of the model's cameras at its image size, from camera -> (K, (height,
        width) it belongs to)."""
        size = tuple(self.policy.cfg.image_size)
        return np.stack([scale_intrinsics(intrinsics[c][0], intrinsics[c][1], size) for c in self.policy.cfg.cameras])

    def predicted_cloud(
        self,
        prediction: Prediction,
        state: np.ndarray,
        absolute: np.ndarray,
        intrinsics: Mapping[str, tuple[np.ndarray, tuple[int, int]]],
    ) -> PointCloud:
        """A predicted future (as published: imagined_future) in the base frame: one cloud per latent
        frame (V x H depth maps, coloured by the frames they belong to), the cameras at the expected
        joint positions. intrinsics: camera -> (K, (height, width) it belongs to)."""
        if prediction.future_rgb is None or prediction.future_depth is None:
            raise ValueError("the prediction has no video or no depth (DeployConfig.video / depth off)")
        poses = self.camera_poses(self.future_joint_maps(state, absolute))
        return lift(prediction.future_depth, prediction.rgb_at_depth_frames(), self.model_intrinsics(intrinsics), poses)

    def tcp_paths(self, absolute: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
        """side -> (steps, 3) TCP positions along a chunk of absolute targets."""
        sides = [s for s in SIDES if set(self.robot.arm_joint_names(s)) <= set(self.joint_names)]
        frames = [f"{s}_tcp" for s in sides]
        poses = [self.kinematics.frame_poses(self.joint_map(state, row), frames) for row in absolute]
        return {s: np.array([p[f"{s}_tcp"][:3, 3] for p in poses]) for s in sides}
