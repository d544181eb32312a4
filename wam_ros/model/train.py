"""Training: episode windows -> batches, two stages (video-only, then joint), AdamW with a warmup +
decay learning-rate schedule per stage, gradient accumulation and clipping, bf16 autocast,
activation checkpointing, resumable and deterministic checkpoints, DDP or FSDP under torchrun,
and a DataLoader whose workers read each window's frames from disk (wam_ros.model.distributed,
wam_ros.model.memory_plan)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wam_ros.config import RobotConfig, gripper_columns
from wam_ros.control.tracking import fit_tracking_gains
from wam_ros.data.dataset import DatasetError, DatasetMeta, Episode, Frames, LazyFrames
from wam_ros.data.targets import frame_targets
from wam_ros.model.action_space import ChunkEncoder
from wam_ros.model.distributed import (
    PRECISIONS,
    STRATEGIES,
    ShardedCheckpoints,
    Topology,
    all_ranks,
    autocast,
    checkpoint_activations,
    full_model_state,
    init_distributed,
    is_sharded,
    no_sync,
    rng_state,
    set_rng_state,
    wrap,
)
from wam_ros.model.memory_plan import memory_plan, summary_line, training_regions
from wam_ros.model.model_config import ModelConfig, choice_problems
from wam_ros.model.normalization import Normalizer
from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy, depth_metres, git_revision, resize_images
from wam_ros.model.wam import WorldActionModel, inverse_depth
from wam_ros.progress import Progress

DECAYS = ("linear", "cosine", "none")


@dataclass
class TrainConfig:
    # stage 0: a trainable VAE alone on whole batches; the flow stages learn on its latents, and a
    # VAE that cannot reproduce small motions caps any predicted motion (README: the bench model)
    vae_stage_steps: int = 0
    video_stage_steps: int = 300  # stage 1: video expert + depth branch (+ a trainable VAE)
    joint_stage_steps: int = 600  # stage 2: everything but the VAE
    batch_size: int = 8  # micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step: global batch = batch_size * processes * grad_accum
    # learning rate, per stage: linear warmup to lr, constant, then the last decay_fraction decays to min_lr
    lr: float = 3e-4
    warmup_steps: int = 0
    decay: str = "linear"
    decay_fraction: float = 0.3
    min_lr: float = 0.0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    precision: str = "fp32"  # bf16: autocast (parameters and optimizer states stay fp32)
    checkpointing: bool = False  # activation checkpointing per MoT layer and depth block
    strategy: str = "ddp"  # under torchrun: ddp (replicated) or fsdp (sharded per layer)
    workers: int = 0  # DataLoader worker processes (0: read windows in the training process)
    init_from: str = ""  # a local pretrained Wan (diffusers layout) to start the video expert from
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    stop_after: int = 0  # > 0: end after this many steps, the schedule unchanged (checks that a run reproduces)

    def validate(self) -> "TrainConfig":
        problems = choice_problems(
            decay=(self.decay, DECAYS), precision=(self.precision, PRECISIONS), strategy=(self.strategy, STRATEGIES)
        )
        if min(self.vae_stage_steps, self.video_stage_steps, self.joint_stage_steps) < 0:
            problems.append("stage steps must be >= 0")
        if self.stop_after < 0:
            problems.append("stop_after must be >= 0 (0: run every stage to its end)")
        if self.batch_size < 1 or self.grad_accum < 1 or self.workers < 0:
            problems.append("batch_size and grad_accum must be >= 1, workers >= 0")
        if not 0 <= self.min_lr <= self.lr:
            problems.append(f"min_lr {self.min_lr} must be within 0..lr={self.lr}")
        if not 0 <= self.decay_fraction <= 1:
            problems.append(f"decay_fraction {self.decay_fraction} must be within 0..1")
        if problems:
            raise ValueError("training config: " + "; ".join(problems))
        return self

    @property
    def total_steps(self) -> int:
        return self.vae_stage_steps + self.video_stage_steps + self.joint_stage_steps

    def stage(self, step: int) -> tuple[str, int, int]:
        """(stage name, step within the stage, stage length)."""
        for name, length in (("vae", self.vae_stage_steps), ("video", self.video_stage_steps)):
            if step < length:
                return name, step, length
            step -= length
        return "joint", step, self.joint_stage_steps

    def learning_rate(self, step: int) -> float:
        """Each stage restarts the schedule: stage 2 brings the action-value expert in fresh."""
        _, i, n = self.stage(step)
        if i < self.warmup_steps:
            return self.lr * (i + 1) / self.warmup_steps
        decay_start = max(n * (1 - self.decay_fraction), self.warmup_steps)
        if self.decay == "none" or i < decay_start:
            return self.lr
        progress = (i - decay_start) / max(n - decay_start, 1)
        remaining = 1 - progress if self.decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr + (self.lr - self.min_lr) * remaining


def window_indices(t: int, length: int, clip_frames: int, num_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw frame and action indices of the training window at frame t of an episode of `length`
    frames: frames t .. t+clip_frames-1 (the conditioning frame, then consecutive frames at the
    action rate: what a Wan VAE encodes into 1 + H latent frames) and actions t .. t+num_actions-1,
    so that action k (executed at frame t+k) moves raw frame k to raw frame k+1. Past the episode's
    end both repeat the last index: the arms hold still."""
    last = length - 1
    return np.minimum(t + np.arange(clip_frames), last), np.minimum(t + np.arange(num_actions), last)


class ResizedFrames:
    """Frames of a streamed episode, resized as they are read: only a window's frames are touched
    (resizing is per image, so the result equals resizing the whole episode first)."""

    def __init__(self, frames: LazyFrames, size: tuple[int, int], mode: str):
        self.frames, self.size, self.mode = frames, size, mode

    def __getitem__(self, index: Any) -> np.ndarray:
        return resize_images(self.frames[index], self.size, self.mode)


def _model_frames(frames: Frames, size: tuple[int, int], mode: str) -> np.ndarray | ResizedFrames:
    """Episodes in memory are resized once; streamed ones per read."""
    return ResizedFrames(frames, size, mode) if isinstance(frames, LazyFrames) else resize_images(frames, size, mode)


class WindowDataset(Dataset):
    """Training windows: frame t, the clip_frames - 1 raw frames that follow it, and K actions from
    t in the model's action space (relative to the state at t); see window_indices. Proprioception,
    actions and targets of every episode stay in memory (small); frames stay wherever the
    episodes keep them: in memory, or on disk (load_dataset(lazy=True)), read per window.

    `dataset[i]` is one window as numpy arrays (what DataLoader workers produce, rgb still uint8);
    collate_windows stacks them and to_device makes the model's batch; `batch(indices)` does all
    three in this process."""

    def __init__(self, episodes: list[Episode], meta: DatasetMeta, cfg: ModelConfig, robot: RobotConfig | None = None):
        problems = []
        if list(meta.cameras) != list(cfg.cameras):
            problems.append(f"cameras {meta.cameras} but the model config has {list(cfg.cameras)}")
        if len(meta.state_names) != cfg.state_dim:
            problems.append(f"{len(meta.state_names)} state columns but state_dim={cfg.state_dim}")
        if meta.action_space != "joint_position":
            problems.append(
                f"recorded actions must be absolute joint targets (joint_position), got "
                f"{meta.action_space!r}; the model config's action_space picks the representation"
            )
        if cfg.use_depth_input and any(ep.depth is None for ep in episodes):
            problems.append("the model takes depth input but some episodes have no depth")
        try:
            self.encoder = ChunkEncoder(cfg.action_space, meta.state_names, meta.action_names, robot)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if len(self.encoder.columns) != cfg.action_dim:
                problems.append(
                    f"{cfg.action_space} gives {len(self.encoder.columns)} action columns "
                    f"{self.encoder.columns} but action_dim={cfg.action_dim}"
                )
        if problems:
            raise DatasetError("dataset does not fit the model config: " + "; ".join(problems))
        self.cfg, self.meta = cfg, meta
        state_grippers = gripper_columns(meta.state_names)
        self.episodes = []
        for ep in episodes:
            value, gate = frame_targets(
                ep.state[:, state_grippers], ep.success, ep.stage_frames, cfg.reward, cfg.gamma, cfg.gate_window
            )
            self.episodes.append(
                {
                    "rgb": _model_frames(ep.rgb, cfg.image_size, "area"),
                    "depth": None if ep.depth is None else _model_frames(ep.depth, cfg.image_size, "nearest"),
                    "state": ep.state,
                    "action": ep.action,
                    "task": ep.task,
                    "state_tcp": self.encoder.tcp_poses(ep.state, meta.state_names),
                    "target_tcp": self.encoder.tcp_poses(ep.action, meta.action_names),
                    "value": value,
                    "gate": gate,
                    "success": ep.success,
                }
            )
        self.index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep))]
        chunks = np.stack([self.chunk(e, t) for e, t in self.index])  # (windows, K, A): statistics only
        self.normalizer = Normalizer.from_data(
            np.concatenate([ep.state for ep in episodes]),
            chunks.reshape(-1, chunks.shape[-1]),
            cfg.action_space,
            gripper_columns(self.encoder.columns),
            state_grippers,
        )
        self.tracking_gains = self._tracking_gains(episodes, meta)

    def _tracking_gains(self, episodes: list[Episode], meta: DatasetMeta) -> list[float]:
        """Per action column, how the recorded joint followed its recorded targets
        (wam_ros.control.tracking); 1 for a column without both a state and a target."""
        columns = [c for c in self.encoder.columns if c in meta.state_names and c in meta.action_names]
        gains = dict.fromkeys(self.encoder.columns, 1.0)
        if columns:
            s_idx = [meta.state_names.index(c) for c in columns]
            a_idx = [meta.action_names.index(c) for c in columns]
            fitted = fit_tracking_gains([(ep.state[:, s_idx], ep.action[:, a_idx]) for ep in episodes])
            gains.update(zip(columns, (float(g) for g in fitted)))
        return [gains[c] for c in self.encoder.columns]

    @property
    def action_columns(self) -> list[str]:
        return self.encoder.columns

    @property
    def tasks(self) -> list[str]:
        return sorted({ep["task"] for ep in self.episodes})

    def chunk(self, episode: int, t: int) -> np.ndarray:
        """The K actions from frame t in the model's action space (unnormalised)."""
        ep = self.episodes[episode]
        _, steps = window_indices(t, len(ep["state"]), self.cfg.clip_frames, self.cfg.num_actions)
        return self.encoder.encode(
            ep["action"][steps],
            ep["state"][t],
            ep["target_tcp"][steps],
            ep["state_tcp"][t] if len(ep["state_tcp"]) else None,
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, t = self.index[i]
        ep = self.episodes[e]
        frames, _ = window_indices(t, len(ep["state"]), self.cfg.clip_frames, self.cfg.num_actions)
        depth = None
        if ep["depth"] is not None:
            depth = inverse_depth(torch.from_numpy(depth_metres(ep["depth"][frames].swapaxes(0, 1)))).numpy()
        return {
            "rgb": ep["rgb"][frames].swapaxes(0, 1),  # (V, F, H, W, 3) uint8
            "inverse_depth": depth,  # (V, F, H, W) float32 or None
            "state": self.normalizer.state.normalize(ep["state"][t]),
            "actions": self.normalizer.action.normalize(self.chunk(e, t)),
            "value": ep["value"][t],
            "gate": ep["gate"][t],
            "imitate": float(ep["success"]),
            "instruction": ep["task"],
        }

    def batch(self, indices: list[int], device: torch.device | str = "cpu") -> dict[str, Any]:
        return to_device(collate_windows([self[i] for i in indices]), device)


def collate_windows(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Windows -> one batch of CPU tensors; rgb stays uint8 (a quarter of the bytes to move)."""
    depth = [s["inverse_depth"] for s in samples]
    return {
        "rgb": torch.from_numpy(np.stack([s["rgb"] for s in samples])),
        "inverse_depth": None if depth[0] is None else torch.from_numpy(np.stack(depth)),
        "state": torch.from_numpy(np.stack([s["state"] for s in samples])),
        "actions": torch.from_numpy(np.stack([s["actions"] for s in samples])),
        "value": torch.tensor(np.array([s["value"] for s in samples]), dtype=torch.float32),
        "gate": torch.tensor(np.array([s["gate"] for s in samples]), dtype=torch.float32),
        "imitate": torch.tensor([s["imitate"] for s in samples], dtype=torch.float32),
        "instruction": [s["instruction"] for s in samples],
    }


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The model's batch: rgb (B, V, F, 3, H, W) in [-1, 1] (policy.rgb_tensor's mapping, applied on
    the device), everything else moved as it is."""
    rgb = batch["rgb"].to(device, non_blocking=True).movedim(-1, -3).float() / 127.5 - 1.0
    return {
        k: rgb if k == "rgb" else v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


class StepBatches(Sampler[list[int]]):
    """Micro-batches of window indices, step after step from `start`. Step s's global batch
    (batch_size x processes x grad_accum windows) is drawn from a generator seeded with (seed, s):
    a resumed run draws what the uninterrupted one drew however far the loader's workers had read
    ahead, and the split over processes and accumulation does not change it (process r's
    micro-batch m is slice m * processes + r)."""

    def __init__(self, windows: int, cfg: TrainConfig, topology: Topology, start: int):
        self.windows, self.cfg, self.topology, self.start = windows, cfg, topology, start

    def global_batch(self, step: int) -> np.ndarray:
        size = self.cfg.batch_size * self.topology.world * self.cfg.grad_accum
        return np.random.default_rng([self.cfg.seed, step]).integers(self.windows, size=size)

    def __iter__(self) -> Iterator[list[int]]:
        b, world, rank = self.cfg.batch_size, self.topology.world, self.topology.rank
        for step in range(self.start, self.cfg.total_steps):
            drawn = self.global_batch(step)
            for m in range(self.cfg.grad_accum):
                first = (m * world + rank) * b
                yield drawn[first : first + b].tolist()

    def __len__(self) -> int:
        return (self.cfg.total_steps - self.start) * self.cfg.grad_accum


def window_loader(
    dataset: WindowDataset, cfg: TrainConfig, topology: Topology, start: int, pin_memory: bool = False
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=StepBatches(len(dataset), cfg, topology, start),
        num_workers=cfg.workers,
        collate_fn=collate_windows,
        pin_memory=pin_memory,
    )


def accumulate_gradients(
    trained: torch.nn.Module,
    micro_batches: list[dict[str, Any]],
    stage: str,
    noise: torch.Generator,
    precision: str,
    device: torch.device | str,
) -> dict[str, float]:
    """Forward and backward of each micro-batch, its loss scaled by 1 / micro-batches, so that the
    summed gradients are those of one batch of all their samples (equal sizes, per-sample mean
    losses). Returns the mean loss per head."""
    n = len(micro_batches)
    totals: dict[str, torch.Tensor] = {}
    for m, batch in enumerate(micro_batches):
        with no_sync(trained, last_micro_batch=m == n - 1):
            with autocast(device, precision):
                losses = trained(to_device(batch, device), stage, noise)
            (sum(losses.values()) / n).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + v.detach().float() / n
    return {k: v.item() for k, v in totals.items()}


def build_model(cfg: ModelConfig, init_from: str = "") -> WorldActionModel:
    """A fresh model, or one whose video expert and VAE start from a local pretrained Wan (diffusers
    layout: transformer/ and vae/), the depth branch copied from its blocks."""
    if not init_from:
        return WorldActionModel(cfg)
    return WorldActionModel.from_wan(cfg, Path(init_from))


def train(
    dataset: WindowDataset,
    train_cfg: TrainConfig,
    out: Path,
    resume: bool = False,
    device: str = "cpu",
    on_log: Callable[[int, str, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> dict:
    """Trains and writes the policy checkpoint `out` (every checkpoint_every steps and at the end;
    under FSDP the periodic ones are sharded, in `<out>.sharded/`, and `out` is written at the end).
    With resume, continues from the last checkpoint exactly where the uninterrupted run would be.
    Returns a summary with the mean losses per head of the first and the last log interval of
    each stage, and the throughput."""
    train_cfg.validate()
    cfg = dataset.cfg
    if train_cfg.vae_stage_steps and not cfg.vae_trainable:  # before a paper-size model is built
        raise ValueError(
            f"vae_stage_steps {train_cfg.vae_stage_steps} trains the VAE, but this config's VAE is "
            "frozen (vae_trainable: false)"
        )
    topology = init_distributed()
    if progress and topology.main:
        print(
            summary_line(
                memory_plan(
                    cfg,
                    topology.world,
                    train_cfg.batch_size,
                    train_cfg.strategy,
                    train_cfg.precision,
                    train_cfg.checkpointing,
                )
            ),
            file=sys.stderr,
        )
    torch.manual_seed(train_cfg.seed)  # the same initial weights on every rank
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(cfg, train_cfg.init_from).to(device)
    model.text_encoder.register(dataset.tasks)
    sharding = train_cfg.strategy == "fsdp" and topology.world > 1
    groups = training_regions(model, cfg) if train_cfg.checkpointing or sharding else []
    if train_cfg.checkpointing:
        checkpoint_activations(groups)
    trained = wrap(model, train_cfg.strategy, topology, device, train_cfg.precision, groups)
    sharded = is_sharded(trained)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: train_cfg.learning_rate(s) / train_cfg.lr)
    noise = torch.Generator().manual_seed(train_cfg.seed + 1 + topology.rank)
    step, history = 0, {}
    out = Path(out)
    store = ShardedCheckpoints(out, topology) if sharded else None
    if resume and (store.latest() is not None if store else out.is_file()):
        state = None if store else torch.load(out, map_location=device, weights_only=False)
        shared = store.shared() if store else state.get("train")
        if shared is None or shared.get("config") != cfg.to_dict():
            raise DatasetError(f"{out}: cannot resume, it was trained with another model config")
        if store:
            own = store.load(model, optimizer)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(shared["optimizer"])
            own = shared["rng"][topology.rank] if topology.rank < len(shared["rng"]) else None
        scheduler.load_state_dict(shared["scheduler"])
        step, history = shared["step"], shared["history"]
        if own is None:  # more processes than wrote the checkpoint: a new, reproducible stream
            noise.manual_seed(train_cfg.seed + 1 + topology.rank + 7919 * step)
        else:
            set_rng_state(own, noise)
    meta = CheckpointMeta(
        cameras=list(cfg.cameras),
        image_size=list(cfg.image_size),
        state_names=list(dataset.meta.state_names),
        action_names=dataset.action_columns,
        action_space=cfg.action_space,
        fps=dataset.meta.fps,
        git_revision=git_revision(),
        tracking_gains=dataset.tracking_gains,
    )
    policy = WorldActionPolicy(model, dataset.normalizer, meta)

    def shared_state() -> dict[str, Any]:
        return {
            "step": step,
            "history": history,
            "scheduler": scheduler.state_dict(),
            "train_config": asdict(train_cfg),
            "config": cfg.to_dict(),
        }

    def save() -> None:
        if store:
            store.save(step, model, optimizer, shared_state(), rng_state(noise))
            return
        rngs = all_ranks(rng_state(noise), topology)
        if topology.main:
            policy.save(out, {"train": {**shared_state(), "optimizer": optimizer.state_dict(), "rng": rngs}})

    bar = Progress("train", train_cfg.total_steps, "step", step) if progress and topology.main else None
    window: dict[str, list[float]] = {}
    batches = iter(window_loader(dataset, train_cfg, topology, step, pin_memory=torch.device(device).type == "cuda"))
    first_step, start = step, time.perf_counter()
    model.train()
    end = min(train_cfg.total_steps, train_cfg.stop_after or train_cfg.total_steps)
    while step < end:
        stage, _, _ = train_cfg.stage(step)
        lr = scheduler.get_last_lr()[0]
        losses = accumulate_gradients(
            trained, [next(batches) for _ in range(train_cfg.grad_accum)], stage, noise, train_cfg.precision, device
        )
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        for k, v in losses.items():
            window.setdefault(k, []).append(v)
        if step % train_cfg.log_every == 0 or step == end or train_cfg.stage(step)[0] != stage:
            means = {k: float(np.mean(v)) for k, v in window.items()}
            record = history.setdefault(stage, {"first": means, "last": means})
            record["last"] = means
            window = {}
            if bar:
                bar.update(step, f"[{stage}] " + " ".join(f"{k} {v:.4f}" for k, v in means.items()) + f" | lr {lr:.2e}")
            if on_log:
                on_log(step, stage, means)
        if step % train_cfg.checkpoint_every == 0:
            save()
    seconds = time.perf_counter() - start
    if step % train_cfg.checkpoint_every or step == first_step:  # not saved by the loop's last step
        save()
    if store:  # the deployable single file: gathered on rank 0 ("model" replaces the local shards)
        full = full_model_state(model)
        if topology.main:
            policy.save(out, {"model": full, "train": {k: v for k, v in shared_state().items() if k != "scheduler"}})
    if bar:
        bar.close()
    model.eval()
    samples = (step - first_step) * train_cfg.batch_size * train_cfg.grad_accum * topology.world
    return {
        "steps": step,
        "checkpoint": str(out),
        "losses": history,
        "parameters": model.parameter_counts()["total"],
        "world_size": topology.world,
        "strategy": "fsdp" if sharded else "ddp" if topology.world > 1 else "single",
        "seconds": round(seconds, 3),
        "samples_per_second": round(samples / max(seconds, 1e-9), 3),
    }
