"""Training: episode windows -> batches, two stages (video-only, then joint), AdamW with a constant
then linearly decaying learning rate, gradient clipping, resumable and deterministic checkpoints,
DDP under torchrun."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wam_ros.config import RobotConfig
from wam_ros.model.action_space import ChunkEncoder, gripper_columns
from wam_ros.model.config import ModelConfig
from wam_ros.model.episodes import DatasetError, DatasetMeta, Episode
from wam_ros.model.normalization import Normalizer
from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy, depth_metres, git_revision, resize_images, rgb_tensor
from wam_ros.model.targets import frame_targets
from wam_ros.model.wam import WorldActionModel, inverse_depth


@dataclass
class TrainConfig:
    video_stage_steps: int = 300  # stage 1: autoencoder + video expert + depth branch
    joint_stage_steps: int = 600  # stage 2: everything but the autoencoder
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.01
    decay_fraction: float = 0.3  # the last part of each stage decays linearly to zero
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10

    @property
    def total_steps(self) -> int:
        return self.video_stage_steps + self.joint_stage_steps

    def stage(self, step: int) -> tuple[str, int, int]:
        """(stage name, step within the stage, stage length)."""
        if step < self.video_stage_steps:
            return "video", step, self.video_stage_steps
        return "joint", step - self.video_stage_steps, self.joint_stage_steps

    def learning_rate(self, step: int) -> float:
        _, i, n = self.stage(step)
        decay_start = n * (1 - self.decay_fraction)
        return self.lr if i < decay_start else self.lr * max(0.0, (n - i) / max(n - decay_start, 1))


class WindowDataset:
    """Training windows: frame t, the H future frames every actions_per_frame steps, K actions from t
    in the model's action space (relative to the state at t). Windows running past the end repeat
    the last frame and the last target: the arms hold still."""

    def __init__(self, episodes: list[Episode], meta: DatasetMeta, cfg: ModelConfig,
                 robot: RobotConfig | None = None):
        problems = []
        if list(meta.cameras) != list(cfg.cameras):
            problems.append(f"cameras {meta.cameras} but the model config has {list(cfg.cameras)}")
        if len(meta.state_names) != cfg.state_dim:
            problems.append(f"{len(meta.state_names)} state columns but state_dim={cfg.state_dim}")
        if meta.action_space != "joint_position":
            problems.append(f"recorded actions must be absolute joint targets (joint_position), got "
                            f"{meta.action_space!r}; the model config's action_space picks the representation")
        if cfg.use_depth_input and any(ep.depth is None for ep in episodes):
            problems.append("the model takes depth input but some episodes have no depth")
        try:
            self.encoder = ChunkEncoder(cfg.action_space, meta.state_names, meta.action_names, robot)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if len(self.encoder.columns) != cfg.action_dim:
                problems.append(f"{cfg.action_space} gives {len(self.encoder.columns)} action columns "
                                f"{self.encoder.columns} but action_dim={cfg.action_dim}")
        if problems:
            raise DatasetError("dataset does not fit the model config: " + "; ".join(problems))
        self.cfg, self.meta = cfg, meta
        state_grippers = gripper_columns(meta.state_names)
        self.episodes = []
        for ep in episodes:
            value, gate = frame_targets(ep.state[:, state_grippers], ep.success, ep.stage_frames, cfg.reward,
                                        cfg.gamma, cfg.gate_window)
            self.episodes.append({
                "rgb": resize_images(ep.rgb, cfg.image_size, "area"),
                "depth": None if ep.depth is None else resize_images(ep.depth, cfg.image_size, "nearest"),
                "state": ep.state, "action": ep.action, "task": ep.task,
                "state_tcp": self.encoder.tcp_poses(ep.state, meta.state_names),
                "target_tcp": self.encoder.tcp_poses(ep.action, meta.action_names),
                "value": value, "gate": gate, "success": ep.success,
            })
        self.index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep))]
        chunks = np.stack([self.chunk(e, t) for e, t in self.index])  # (windows, K, A), encoded once
        self.normalizer = Normalizer.from_data(np.concatenate([ep.state for ep in episodes]),
                                               chunks.reshape(-1, chunks.shape[-1]), cfg.action_space,
                                               gripper_columns(self.encoder.columns), state_grippers)
        self.normalized_chunks = self.normalizer.action.normalize(chunks)

    @property
    def action_columns(self) -> list[str]:
        return self.encoder.columns

    def chunk(self, episode: int, t: int) -> np.ndarray:
        """The K actions from frame t in the model's action space (unnormalised)."""
        ep = self.episodes[episode]
        steps = np.minimum(t + np.arange(self.cfg.num_actions), len(ep["state"]) - 1)
        return self.encoder.encode(ep["action"][steps], ep["state"][t], ep["target_tcp"][steps],
                                   ep["state_tcp"][t] if len(ep["state_tcp"]) else None)

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, indices: list[int], device: torch.device | str = "cpu") -> dict:
        cfg = self.cfg
        rgb, depth, state, actions, value, gate, imitate, tasks = [], [], [], [], [], [], [], []
        for i in indices:
            e, t = self.index[i]
            ep = self.episodes[e]
            last = len(ep["state"]) - 1
            frames = np.minimum(t + cfg.actions_per_frame * np.arange(cfg.horizon + 1), last)
            rgb.append(ep["rgb"][frames].swapaxes(0, 1))  # (V, F, H, W, 3)
            if ep["depth"] is not None:
                depth.append(depth_metres(ep["depth"][frames].swapaxes(0, 1)))
            actions.append(self.normalized_chunks[i])
            state.append(self.normalizer.state.normalize(ep["state"][t]))
            value.append(ep["value"][t])
            gate.append(ep["gate"][t])
            imitate.append(float(ep["success"]))
            tasks.append(ep["task"])
        batch = {"rgb": rgb_tensor(np.stack(rgb)).to(device),
                 "inverse_depth": inverse_depth(torch.from_numpy(np.stack(depth))).to(device) if depth else None,
                 "state": torch.from_numpy(np.stack(state)).to(device),
                 "actions": torch.from_numpy(np.stack(actions)).to(device),
                 "value": torch.tensor(np.array(value), dtype=torch.float32, device=device),
                 "gate": torch.tensor(np.array(gate), dtype=torch.float32, device=device),
                 "imitate": torch.tensor(imitate, dtype=torch.float32, device=device),
                 "instruction": tasks}
        return batch


class ProgressBar:
    """One line per log interval with the losses per head (carriage-return updates on a terminal)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.start = total, stream, time.perf_counter()
        self.tty = stream.isatty()

    def update(self, step: int, stage: str, losses: dict[str, float], lr: float) -> None:
        rate = step / max(time.perf_counter() - self.start, 1e-9)
        text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        line = f"[{stage}] {step}/{self.total} | {text} | lr {lr:.2e} | {rate:.2f} it/s"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def train(dataset: WindowDataset, train_cfg: TrainConfig, out: Path, resume: bool = False, device: str = "cpu",
          on_log: Callable[[int, str, dict[str, float]], None] | None = None, progress: bool = True) -> dict:
    """Trains and writes the checkpoint `out` (also every checkpoint_every steps). Returns a summary
    with the mean losses per head of the first and the last log interval of each stage."""
    rank, world = _distributed()
    torch.manual_seed(train_cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = WorldActionModel(dataset.cfg).to(device)
    model.text_encoder.register(sorted({ep["task"] for ep in dataset.episodes}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sampler = torch.Generator().manual_seed(train_cfg.seed)
    noise = torch.Generator().manual_seed(train_cfg.seed + 1)
    step, history = 0, {}
    out = Path(out)
    if resume and out.is_file():
        state = torch.load(out, map_location=device, weights_only=False)
        if state.get("config") != dataset.cfg.to_dict():
            raise DatasetError(f"{out}: cannot resume, it was trained with another model config")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["train"]["optimizer"])
        sampler.set_state(state["train"]["sampler_rng"])
        noise.set_state(state["train"]["noise_rng"])
        step, history = state["train"]["step"], state["train"]["history"]
    trained = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    meta = CheckpointMeta(cameras=list(dataset.cfg.cameras), image_size=list(dataset.cfg.image_size),
                          state_names=list(dataset.meta.state_names), action_names=dataset.action_columns,
                          action_space=dataset.cfg.action_space, fps=dataset.meta.fps, git_revision=git_revision())
    policy = WorldActionPolicy(model, dataset.normalizer, meta)

    def save() -> None:
        if rank == 0:
            policy.save(out, {"train": {"step": step, "optimizer": optimizer.state_dict(), "history": history,
                                        "sampler_rng": sampler.get_state(), "noise_rng": noise.get_state(),
                                        "train_config": asdict(train_cfg)}})

    bar = ProgressBar(train_cfg.total_steps) if progress and rank == 0 else None
    window: dict[str, list[float]] = {}
    model.train()
    while step < train_cfg.total_steps:
        stage, _, _ = train_cfg.stage(step)
        lr = train_cfg.learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        indices = torch.randint(len(dataset), (train_cfg.batch_size * world,), generator=sampler)[rank::world]
        losses = trained(dataset.batch(indices.tolist(), device), stage, noise)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        step += 1
        for k, v in losses.items():
            window.setdefault(k, []).append(v.item())
        if step % train_cfg.log_every == 0 or step == train_cfg.total_steps or train_cfg.stage(step)[0] != stage:
            means = {k: float(np.mean(v)) for k, v in window.items()}
            record = history.setdefault(stage, {"first": means, "last": means})
            record["last"] = means
            window = {}
            if bar:
                bar.update(step, stage, means, lr)
            if on_log:
                on_log(step, stage, means)
        if step % train_cfg.checkpoint_every == 0:
            save()
    save()
    if bar:
        bar.close()
    model.eval()
    return {"steps": step, "checkpoint": str(out), "losses": history,
            "parameters": model.parameter_counts()["total"], "world_size": world}
