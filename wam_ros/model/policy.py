"""Inference: observation checks, the step-wise denoising session (ANS, RTC guidance), predict(),
and checkpoints that carry everything needed to run a model on a robot."""

from __future__ import annotations

import pickle
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wam_ros.config import ConfigError, gripper_columns
from wam_ros.model.model_config import ModelConfig
from wam_ros.model.normalization import Normalizer
from wam_ros.model.sampling import make_sampler
from wam_ros.model.wam import WorldActionModel, inverse_depth, x0_to_velocity

CHECKPOINT_FORMAT = 2  # 2: the Wan Video Expert and VAE; 1: the retired own autoencoder and DiT
# RTC inpainting targets are clipped to this many normalised units. The demonstrations span [-1, 1];
# an executing chunk beyond that, re-expressed from the current state (after a rollback, a refused
# chunk, a column the demonstrations barely moved), is not one the model can continue. Unclipped,
# a 0.1 rad offset in a column of scale 3e-4 gave an error of 371 units, and the guidance's
# Jacobian term carried it into another joint: its first step moved 1.3 rad.
INPAINT_TARGET_BOUND = 3.0
PREDICTIVE, REACTIVE = "predictive", "reactive"
EXPERT_CHOICES = ("gated", PREDICTIVE, REACTIVE)


class ObservationError(ValueError):
    """An observation the model cannot take; raised before any tensor math."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: missing, unreadable (truncated, not a checkpoint), of the
    retired architecture, or from an interrupted training; the message says which, in one line."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint that does not fit this robot or this config; the message lists the differences."""


def training_progress(data: Mapping[str, Any]) -> tuple[int, int] | None:
    """(steps trained, steps planned) of a checkpoint written by `wam-ros train`; None without a
    training record (released policies keep theirs)."""
    train = data.get("train") if isinstance(data, Mapping) else None
    if not isinstance(train, Mapping) or "step" not in train or "train_config" not in train:
        return None
    plan = train["train_config"]
    total = sum(int(plan.get(k, 0)) for k in ("vae_stage_steps", "video_stage_steps", "joint_stage_steps"))
    return int(train["step"]), total


@dataclass
class Observation:
    images: Mapping[str, np.ndarray]  # camera -> (H, W, 3) uint8 RGB
    state: np.ndarray  # (S,) in the checkpoint's state_names order
    instruction: str
    depths: Mapping[str, np.ndarray] | None = None  # camera -> (H, W) uint16 mm or float metres


@dataclass
class Prediction:
    actions: np.ndarray  # (K, A) in the action space's units
    value: float  # predicted task progress in [0, 1]
    gate_probability: float  # p(interaction)
    expert: str  # "predictive" or "reactive"
    # the decoded future, anchored to the observation (observed + predicted change, see
    # WorldActionPolicy._anchored_future): 4H frames per view at the action rate (frame k follows action k)
    future_rgb: np.ndarray | None  # (V, 4H, height, width, 3) uint8
    # one depth map per latent frame, at the last frame it spans: future frames 4, 8, .., 4H
    future_depth: np.ndarray | None  # (V, H, height, width) float32 metres (0: no estimate)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per phase

    def rgb_at_depth_frames(self) -> np.ndarray:
        """The future colour frames that future_depth belongs to: (V, H, height, width, 3)."""
        if self.future_rgb is None or self.future_depth is None:
            raise ValueError("the prediction has no video or no depth")
        stride = self.future_rgb.shape[1] // self.future_depth.shape[1]
        return self.future_rgb[:, stride - 1 :: stride]


@dataclass
class CheckpointMeta:
    cameras: list[str]
    image_size: list[int]
    state_names: list[str]
    action_names: list[str]
    action_space: str
    fps: float
    git_revision: str = "unknown"
    # per action column, how the joints follow their targets (wam_ros.control.tracking); None: as
    # written before the fit, every target taken as reached
    tracking_gains: list[float] | None = None


def resize_images(images: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """(..., H, W, 3) colour (mode "area") or (..., H, W) depth (mode "nearest") -> size, through
    torch: the same resampling for training data and live frames."""
    colour = mode == "area"
    spatial = images.shape[-3:-1] if colour else images.shape[-2:]
    if tuple(spatial) == tuple(size):
        return images
    lead = images.shape[:-3] if colour else images.shape[:-2]
    x = torch.from_numpy(images.astype(np.float32)).reshape(-1, *images.shape[len(lead) :])
    x = x.movedim(-1, 1) if colour else x[:, None]
    x = F.interpolate(x, size=tuple(size), mode=mode)
    x = x.movedim(1, -1) if colour else x[:, 0]
    if np.issubdtype(images.dtype, np.integer):
        x = x.round().clamp(np.iinfo(images.dtype).min, np.iinfo(images.dtype).max)
    return x.numpy().astype(images.dtype).reshape(*lead, *x.shape[1:])


def rgb_tensor(images: np.ndarray) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float() / 127.5 - 1.0


def depth_metres(depth: np.ndarray) -> np.ndarray:
    """uint16 millimetres (16UC1) or float metres -> float32 metres."""
    return depth.astype(np.float32) / 1000.0 if depth.dtype == np.uint16 else depth.astype(np.float32)


def git_revision() -> str:
    """This checkout's commit, "-dirty" appended with uncommitted changes to tracked files;
    "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here
        ).stdout.strip()
        if not revision:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=here,
        ).stdout.strip()
        return revision + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class DenoisingSession:
    """One chunk's sampling, one pass at a time, for schedulers that guide or interleave it.

    Two streams, each with its own sampler (sampling.py: Euler or UniPC on Wan's shifted time grid):
    pass i moves the video one step of its T_O-step grid and, while i < T_a, the actions and value one
    step of their T_a-step grid, which ends at t = 0 after pass T_a: the actions are then final (ANS)
    and the remaining passes run the video expert alone.
    """

    def __init__(
        self,
        policy: "WorldActionPolicy",
        obs: Observation,
        action_steps: int,
        video_steps: int,
        generator: torch.Generator,
        sampler: str,
    ):
        if not 1 <= action_steps <= video_steps:
            raise ValueError(f"need 1 <= action_steps ({action_steps}) <= video_steps ({video_steps})")
        self.policy, self.model = policy, policy.model
        self.action_steps, self.video_steps = action_steps, video_steps
        cfg = self.model.cfg
        self.video_sampler = make_sampler(sampler, video_steps, cfg.flow_shift)
        # actions and value form one stream: the same times, and one multistep history over both
        self.action_sampler = make_sampler(sampler, action_steps, cfg.action_flow_shift)
        rgb, inv_depth, state = policy.observation_tensors(obs)
        self.observed_rgb, self.observed_inverse_depth = rgb, inv_depth  # what the decoded future is anchored to
        with torch.no_grad():
            self.text = self.model.text_features([obs.instruction])  # an unknown instruction fails first
            # the still latents ("nothing moves", still_latents) hold the present's own latent as frame 0
            if cfg.video_target == "change":
                self.still = self.model.still_latents(rgb)
                self.current_latent = self.still[:, :, :1]
            else:
                self.still, self.current_latent = None, self.model.vae.encode(rgb[:, :, None])
            self.current = self.model.conditioning(self.current_latent, inv_depth)
            self.gate_probability = float(torch.sigmoid(self.model.gate_logit(self.current, self.text)))
        self.state = state
        h, w = cfg.latent_size
        device = state.device
        # the video target being denoised (WorldActionModel.video_target); future_latents() decodes
        self.future = torch.randn(1, len(cfg.cameras), cfg.horizon, cfg.latent_channels, h, w, generator=generator).to(
            device
        )
        self.actions = torch.randn(1, cfg.num_actions, cfg.action_dim, generator=generator).to(device)
        self.value = torch.randn(1, generator=generator).to(device)
        self.expected_value: Tensor | None = None  # the first pass's x0 estimate (see progress())
        self.passes = 0
        self.last = None

    @property
    def actions_final(self) -> bool:
        return self.passes >= self.action_steps

    @property
    def video_final(self) -> bool:
        return self.passes >= self.video_steps

    def step(
        self,
        inpaint_target: np.ndarray | None = None,
        inpaint_weights: np.ndarray | None = None,
        guidance_clip: float = 5.0,
        with_depth: bool = False,
    ) -> None:
        """One denoising pass. With an inpainting target (K, A) in action units and per-step weights (K,),
        the action update is guided towards it (RTC): velocity minus c (I + J)^T e, where
        e = (target - x0_hat) * w, J = d x0_hat / d x_t and c = min(guidance_clip, (t^2 + (1-t)^2) / (t (1-t))).

        Why I + J: RTC's guidance is the VJP of the clean estimate of a velocity network, x_t - t v,
        whose Jacobian carries the identity. This expert predicts x0 itself, and once trained it is
        nearly insensitive to x_t (J ~ 0): with J alone, guided and unguided chunks agreed to four
        decimals. The identity term restores the pull towards the still-executing prefix."""
        if self.video_final:
            raise RuntimeError("the session has made all its passes")
        cfg, i = self.model.cfg, self.passes
        t_video = torch.full((1,), self.video_sampler.t, device=self.state.device)
        if not self.action_sampler.done:
            ta = self.action_sampler.t
            t_action = torch.full((1,), ta, device=self.state.device)
            guided = inpaint_target is not None
            x = self.actions.detach().requires_grad_(guided)
            with torch.set_grad_enabled(guided):
                out = self.model.trunk(
                    self.current,
                    self.future,
                    t_video,
                    self.text,
                    self.state,
                    x,
                    self.value,
                    t_action,
                    with_depth=with_depth,
                )
            velocity = x0_to_velocity(x, out.action_x0, t_action, cfg.t_min)
            if guided:
                target, weights = self._inpainting(inpaint_target, inpaint_weights)
                error = (target - out.action_x0) * weights[None, :, None]
                (vjp,) = torch.autograd.grad(out.action_x0, x, error)
                c = min(guidance_clip, (ta**2 + (1 - ta) ** 2) / max(ta * (1 - ta), 1e-9))
                velocity = velocity - c * (error + vjp)
            if i == 0:
                self.expected_value = out.value_x0.detach()
            value_velocity = x0_to_velocity(self.value, out.value_x0.detach(), t_action, cfg.t_min)
            joint = self.action_sampler.step(
                torch.cat([x.detach().flatten(1), self.value[:, None]], dim=1),
                torch.cat([velocity.detach().flatten(1), value_velocity[:, None]], dim=1),
            )
            self.actions, self.value = joint[:, :-1].view_as(x), joint[:, -1]
        else:
            # where the video may see the actions, the rest of it is conditioned on the final ones (t_a = 0)
            final = (
                (self.state, self.actions, self.value, torch.zeros(1, device=self.state.device))
                if cfg.video_sees_actions
                else ()
            )
            with torch.no_grad():
                out = self.model.trunk(self.current, self.future, t_video, self.text, *final, with_depth=with_depth)
        self.future = self.video_sampler.step(self.future, out.video_velocity[:, :, 1:].detach())
        self.last = out
        self.passes += 1

    def _inpainting(self, target: np.ndarray, weights: np.ndarray | None) -> tuple[Tensor, Tensor]:
        cfg = self.model.cfg
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (cfg.num_actions, cfg.action_dim):
            raise ValueError(f"inpainting target must be ({cfg.num_actions}, {cfg.action_dim}), got {target.shape}")
        w = np.ones(cfg.num_actions) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (cfg.num_actions,):
            raise ValueError(f"inpainting weights must be ({cfg.num_actions},), got {w.shape}")
        device = self.state.device
        bound = INPAINT_TARGET_BOUND
        normalized = np.clip(self.policy.normalizer.action.normalize(target), -bound, bound)
        return (torch.from_numpy(normalized)[None].to(device), torch.from_numpy(w).float().to(device))

    def latents(self) -> Tensor:
        """The present and the (partly) denoised future latents: (1, V, 1 + H, C, h, w)."""
        return torch.cat([self.current_latent, self.model.future_latents(self.still, self.future)], dim=2)

    def action_chunk(self) -> np.ndarray:
        return self.policy.normalizer.action.denormalize(self.actions[0].detach().cpu().numpy())

    def progress(self) -> float:
        """Expected task progress in [0, 1]: the value's x0 estimate at t = 1, which the x0 loss makes
        the mean over outcomes given the observation. The sampled value is one draw of that
        distribution: on a recorded demonstration its s.d. over noise seeds reached 0.09-0.15 (this
        estimate's: 0.02-0.07), enough for one low draw to fake the drop the rollback supervisor
        reacts to, and for one high draw to raise the peak it compares against."""
        if self.expected_value is None:
            raise RuntimeError("no value yet: make a pass first")
        return float(np.clip((float(self.expected_value) + 1) / 2, 0.0, 1.0))


class WorldActionPolicy:
    """A trained model with its normalisation, task table and metadata: what a robot runs."""

    def __init__(self, model: WorldActionModel, normalizer: Normalizer, meta: CheckpointMeta):
        self.model = model.eval()
        self.normalizer = normalizer
        self.meta = meta
        self.device = next(model.parameters()).device

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg

    def observation_tensors(self, obs: Observation) -> tuple[Tensor, Tensor | None, Tensor]:
        """Checks an observation completely, then converts it: (rgb (1, V, 3, H, W), inverse depth
        (1, V, H, W) or None, normalised state (1, S))."""
        cfg = self.cfg
        h, w = cfg.image_size
        problems = []
        missing = [c for c in cfg.cameras if c not in obs.images]
        if missing:
            problems.append(f"missing views {missing} (the model needs {list(cfg.cameras)})")
        for cam in cfg.cameras:
            img = obs.images.get(cam)
            if img is not None and (img.dtype != np.uint8 or img.shape != (h, w, 3)):
                problems.append(
                    f"camera {cam!r}: image {img.shape} {img.dtype}, expected ({h}, {w}, 3) uint8 "
                    "(resize before predict)"
                )
        if cfg.use_depth_input:
            depths = obs.depths or {}
            missing_depth = [c for c in cfg.cameras if c not in depths]
            if missing_depth:
                problems.append(f"missing depth for {missing_depth} (the model takes depth input)")
            for cam, d in depths.items():
                if cam in cfg.cameras and d.shape != (h, w):
                    problems.append(f"camera {cam!r}: depth {d.shape}, expected ({h}, {w})")
        state = np.asarray(obs.state, dtype=np.float64)
        if state.shape != (cfg.state_dim,):
            problems.append(f"state has shape {state.shape}, expected ({cfg.state_dim},) {self.meta.state_names}")
        elif not np.isfinite(state).all():
            bad = [self.meta.state_names[i] for i in np.flatnonzero(~np.isfinite(state))]
            problems.append(f"state is not finite at {bad}")
        if problems:
            raise ObservationError("; ".join(problems))
        rgb = rgb_tensor(np.stack([obs.images[c] for c in cfg.cameras]))[None].to(self.device)
        inv = None
        if cfg.use_depth_input:
            metres = np.stack([depth_metres(obs.depths[c]) for c in cfg.cameras])
            inv = inverse_depth(torch.from_numpy(metres))[None].to(self.device)
        norm_state = torch.from_numpy(self.normalizer.state.normalize(state))[None].to(self.device)
        return rgb, inv, norm_state

    def session(
        self,
        obs: Observation,
        action_steps: int | None = None,
        video_steps: int | None = None,
        seed: int | None = None,
        sampler: str | None = None,
    ) -> DenoisingSession:
        """sampler: "euler" or "unipc" (None: the config's); the weights do not depend on it."""
        generator = torch.Generator()
        generator.manual_seed(int(seed) if seed is not None else int(torch.randint(2**31, (1,))))
        return DenoisingSession(
            self,
            obs,
            action_steps or self.cfg.action_steps,
            video_steps or self.cfg.video_steps,
            generator,
            sampler or self.cfg.sampler,
        )

    def predict(
        self,
        obs: Observation,
        video: bool = True,
        depth: bool = True,
        action_steps: int | None = None,
        video_steps: int | None = None,
        seed: int | None = None,
        inpaint: tuple[np.ndarray, np.ndarray] | None = None,
        guidance_clip: float = 5.0,
        on_actions: Callable[[Prediction], None] | None = None,
        expert: str = "gated",
        sampler: str | None = None,
    ) -> Prediction:
        """Actions after T_a passes (ANS), then the video (skipped with video=False unless the gate
        picks the reactive expert, which needs the predicted future). The depth branch runs on the
        last pass only and not at all with depth=False.

        inpaint: (target (K, A) in action units, weights (K,)) guides the predictive expert's
        actions towards the target (real-time chunking; DenoisingSession.step). on_actions is called
        with the actions, value and gate (no video yet) as soon as they are final, so a robot can
        execute them while the video finishes. expert: "gated" (the gate picks), or "predictive" /
        "reactive" to force one (ablations). sampler: "euler" or "unipc" (None: the config's)."""
        if expert not in EXPERT_CHOICES:
            raise ValueError(f"expert {expert!r}: expected one of {', '.join(EXPERT_CHOICES)}")
        start = time.perf_counter()
        timings: dict[str, float] = {}
        s = self.session(obs, action_steps, video_steps, seed, sampler)
        timings["encode_ms"] = (time.perf_counter() - start) * 1e3
        if expert == "gated":
            expert = PREDICTIVE if s.gate_probability >= self.cfg.gate_threshold else REACTIVE
        need_video = video or expert == REACTIVE
        last_pass = s.video_steps if need_video else s.action_steps
        depth = depth and video and self.cfg.depth_blocks > 0
        target, weights = inpaint if inpaint is not None else (None, None)

        def actions_ready(actions: np.ndarray) -> None:
            timings["actions_ms"] = (time.perf_counter() - start) * 1e3
            if on_actions is not None:
                on_actions(
                    Prediction(
                        actions=actions,
                        value=s.progress(),
                        gate_probability=s.gate_probability,
                        expert=expert,
                        future_rgb=None,
                        future_depth=None,
                        timings=dict(timings),
                    )
                )

        with torch.no_grad():
            while s.passes < last_pass:
                guided = target is not None and not s.actions_final
                s.step(
                    target if guided else None,
                    weights if guided else None,
                    guidance_clip,
                    with_depth=depth and s.passes == last_pass - 1,
                )
                if s.passes == s.action_steps and expert == PREDICTIVE:
                    actions_ready(s.action_chunk())
            actions = s.action_chunk()
            if expert == REACTIVE:
                reactive = self.model.reactive(s.latents(), s.last.video_hidden, s.state)
                actions = self.normalizer.action.denormalize(reactive[0].cpu().numpy())
                actions_ready(actions)
            future_rgb = future_depth = None
            if video:
                decode_start = time.perf_counter()
                future_rgb, future_depth = self._anchored_future(s, depth)
                timings["decode_ms"] = (time.perf_counter() - decode_start) * 1e3
        timings["total_ms"] = (time.perf_counter() - start) * 1e3
        return Prediction(
            actions=actions,
            value=s.progress(),
            gate_probability=s.gate_probability,
            expert=expert,
            future_rgb=future_rgb,
            future_depth=future_depth,
            timings=timings,
        )

    def _anchored_future(self, s: DenoisingSession, depth: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The decoded future as the observation plus the predicted change: colour frames
        observed + decode(future) - decode(still) (the still latents' clip, where nothing moves),
        depth maps (inverse depth) observed + branch(future) - branch(present) where the observation
        has depth (the branch's own map elsewhere). Why: what the decoder cannot reproduce of the
        present (a tiny VAE loses fine detail; a causal one decodes later frames differently from
        the first) cancels out instead of showing as a blurred or flickering future; what stays
        still stays exactly as observed."""
        still = s.still if s.still is not None else self.model.still_latents(s.observed_rgb)
        decoded = self.model.vae.decode(s.latents())[0, :, 1:]  # (V, 4H, 3, H, W) in [-1, 1]
        reference = self.model.vae.decode(still)[0, :, 1:]
        rgb = s.observed_rgb[0][:, None] + decoded - reference
        future_rgb = ((rgb.movedim(-3, -1) + 1) * 127.5).round().clamp(0, 255).byte().cpu().numpy()
        if not depth:
            return future_rgb, None
        inv = s.last.inverse_depth[0]  # (V, 1 + H, H, W)
        observed = s.observed_inverse_depth
        if observed is not None:
            anchored = observed[0][:, None] + inv[:, 1:] - inv[:, :1]
            inv = torch.where(observed[0][:, None] > 0, anchored, inv[:, 1:])
        else:
            inv = inv[:, 1:]
        inv = inv.clamp(min=0)
        metres = torch.where(inv > 1e-3, 1.0 / inv.clamp(min=1e-3), torch.zeros_like(inv))
        return future_rgb, metres.float().cpu().numpy()  # numpy has no bf16 (bf16 models)

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "normalization": self.normalizer.stats,
            "meta": dict(self.meta.__dict__),
            **(extra or {}),
        }

    def save(self, path: Path, extra: Mapping[str, Any] | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.checkpoint(extra), tmp)
        tmp.replace(path)  # never a half-written checkpoint under the real name

    def check_robot(
        self,
        cameras: Sequence[str] | None = None,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        action_space: str | None = None,
    ) -> None:
        """Raises CheckpointMismatch listing every difference to what the robot provides."""
        differences = []
        for what, ours, theirs in (
            ("cameras", self.meta.cameras, cameras),
            ("state joints", self.meta.state_names, state_names),
            ("action columns", self.meta.action_names, action_names),
        ):
            if theirs is None or list(theirs) == list(ours):
                continue
            missing = [n for n in ours if n not in theirs]
            extra = [n for n in theirs if n not in ours]
            detail = f"robot lacks {missing}" if missing else ""
            detail += ("; " if detail and extra else "") + (f"robot has extra {extra}" if extra else "")
            differences.append(
                f"{what}: checkpoint {list(ours)} vs robot {list(theirs)}"
                + (f" ({detail})" if detail else " (different order)")
            )
        if action_space is not None and action_space != self.meta.action_space:
            differences.append(f"action space: checkpoint {self.meta.action_space!r} vs robot {action_space!r}")
        if differences:
            raise CheckpointMismatch("checkpoint does not match the robot: " + "; ".join(differences))


def load_policy(
    path: Path, device: str = "cpu", expect_config: ModelConfig | None = None, allow_partial: bool = False
) -> WorldActionPolicy:
    """Loads a checkpoint; with expect_config, a checkpoint of another config is refused with the
    differing fields named (before any weights are touched). A checkpoint whose training stopped
    before its planned steps is refused unless allow_partial; every refusal is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        data = torch.load(path, map_location=device, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({first}): truncated, corrupted or not a "
            "torch file; copy it again or retrain"
        ) from None
    if isinstance(data, dict) and data.get("format") == 1:
        raise CheckpointError(
            f"{path}: a checkpoint of the retired architecture (own autoencoder and DiT, "
            "before the Wan video prior); it cannot be loaded or converted: retrain it with "
            "`wam-ros train`"
        )
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a wam_ros checkpoint (format {CHECKPOINT_FORMAT})")
    progress = training_progress(data)
    if progress is not None and progress[0] < progress[1] and not allow_partial:
        raise CheckpointError(
            f"{path}: an interrupted training's checkpoint (step {progress[0]} of {progress[1]}); "
            "finish it with `wam-ros train ... --resume`, or pass it knowingly (allow_partial)"
        )
    cfg = ModelConfig.from_dict(data["config"])
    if expect_config is not None and cfg != expect_config:
        ours, theirs = expect_config.to_dict(), cfg.to_dict()
        fields = [f"{k}: expected {ours[k]!r}, checkpoint has {theirs[k]!r}" for k in ours if ours[k] != theirs[k]]
        raise CheckpointMismatch(f"{path} was trained with another config: " + "; ".join(fields))
    model = WorldActionModel(cfg)
    state = data["model"]
    if "change_scale" not in state and cfg.video_target == "latent":
        state = {**state, "change_scale": model.change_scale}  # written before video_target; unused by "latent"
    model.load_state_dict(state)
    meta = CheckpointMeta(**data["meta"])
    normalizer = Normalizer.from_stats(
        data["normalization"], cfg.action_space, gripper_columns(meta.action_names), gripper_columns(meta.state_names)
    )
    return WorldActionPolicy(model.to(device), normalizer, meta)
