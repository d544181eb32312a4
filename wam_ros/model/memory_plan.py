"""A training memory plan without allocating the model: build it on the meta device, count its
parameters, trace what one training step saves for backward, and combine that per GPU for DDP
or FSDP, fp32 or bf16, with or without activation checkpointing.

Activations are traced, not guessed: a meta-device forward of the real training losses under
`saved_tensors_hooks` records every tensor autograd keeps (counted once per storage, parameters
excluded) and which unit (MoT layer, depth block) saved it. Without checkpointing a step holds all
of them; with it, what lies outside the units, each unit's inputs, and one unit's activations at
a time while it is recomputed. The meta device has no autocast: bf16 activations are taken as
half the fp32 ones (an estimate: autocast keeps norms and softmax in fp32).

Model states per GPU: AdamW keeps fp32 parameters, fp32 gradients and two fp32 moments of every
trainable parameter. DDP replicates them (under bf16 autocast also a cached bf16 copy of the
weights during the forward). FSDP shards them over the GPUs and gathers two units at a time
(the one running and the one prefetched) plus the root's own parameters, in bf16 under bf16.
Not counted: the CUDA context, allocator fragmentation, temporary buffers of single ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wam_ros.model.config import ModelConfig
from wam_ros.model.distributed import PRECISIONS, STRATEGIES, units
from wam_ros.model.wam import WorldActionModel

GIB = 2 ** 30
STAGES = ("video", "joint")
TASK = "meta"  # the instruction of the traced batch


def meta_model(cfg: ModelConfig) -> WorldActionModel:
    """The model with every parameter and buffer on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        model = WorldActionModel(cfg)
    model.text_encoder.register([TASK])
    return model


def example_batch(cfg: ModelConfig, batch_size: int, device: torch.device | str = "meta") -> dict[str, Any]:
    """A training batch of the shapes WindowDataset delivers (zeros)."""
    views, frames = len(cfg.cameras), cfg.clip_frames
    h, w = cfg.image_size
    b = batch_size
    return {"rgb": torch.zeros(b, views, frames, 3, h, w, device=device),
            "inverse_depth": torch.zeros(b, views, frames, h, w, device=device)
            if cfg.depth_blocks or cfg.use_depth_input else None,
            "state": torch.zeros(b, cfg.state_dim, device=device),
            "actions": torch.zeros(b, cfg.num_actions, cfg.action_dim, device=device),
            "value": torch.zeros(b, device=device), "gate": torch.zeros(b, device=device),
            "imitate": torch.ones(b, device=device), "instruction": [TASK] * b}


@dataclass(frozen=True)
class ActivationTrace:
    """Bytes one fp32 training step keeps for backward, by where they were saved."""

    outside: int  # outside the units (embeddings, heads, autoencoder, losses)
    unit_saved: list[int]  # inside each unit
    unit_inputs: list[int]  # each unit's tensor inputs not counted before (what checkpointing keeps)

    @property
    def without_checkpointing(self) -> int:
        return self.outside + sum(self.unit_saved)

    @property
    def with_checkpointing(self) -> int:
        return self.outside + sum(self.unit_inputs) + max(self.unit_saved, default=0)


def trace_activations(model: WorldActionModel, batch: dict[str, Any], stage: str) -> ActivationTrace:
    """Runs the training losses of `stage` once (on meta tensors: nothing is computed) and
    attributes every tensor saved for backward to the unit that saved it."""
    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    kept: list[Tensor] = []  # holds traced tensors, so no storage address is reused mid-trace
    outside, where = [0], [None]
    members = units(model)
    saved, inputs = [0] * len(members), [0] * len(members)

    def new_bytes(t: Tensor) -> int:
        key = t.untyped_storage()._cdata
        if key in seen or key in parameters:
            return 0
        seen.add(key)
        kept.append(t)
        return t.untyped_storage().nbytes()

    def pack(t: Tensor) -> Tensor:
        size = new_bytes(t)
        if where[0] is None:
            outside[0] += size
        else:
            saved[where[0]] += size
        return t

    def enter(i: int):
        def hook(_module, args, kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
            tensors += [x for a in (*args, *kwargs.values()) if isinstance(a, tuple) for x in a if isinstance(x, Tensor)]
            inputs[i] += sum(new_bytes(t) for t in tensors)
            where[0] = i
        return hook

    def leave(_module, _args, _output):
        where[0] = None

    handles = []
    for i, unit in enumerate(members):
        handles.append(unit.register_forward_pre_hook(enter(i), with_kwargs=True))
        handles.append(unit.register_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(batch, stage, torch.Generator().manual_seed(0))
    finally:
        for handle in handles:
            handle.remove()
    return ActivationTrace(outside[0], saved, inputs)


def _gib(n: float) -> float:
    return float(f"{n / GIB:.4g}")


def memory_plan(cfg: ModelConfig, gpus: int = 1, micro_batch: int = 1, strategy: str = "ddp",
                precision: str = "fp32", checkpointing: bool = False) -> dict[str, Any]:
    """Parameters per part and the memory per GPU (GiB) of every strategy x precision, with and
    without checkpointing; `selected` is the one these arguments choose."""
    if strategy not in STRATEGIES or precision not in PRECISIONS:
        raise ValueError(f"strategy {strategy!r} / precision {precision!r}: expected {STRATEGIES} / {PRECISIONS}")
    model = meta_model(cfg)
    counts = model.parameter_counts()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    unit_params = [sum(p.numel() for p in unit.parameters()) for unit in units(model)]
    root_params = total - sum(unit_params)
    batch = example_batch(cfg, micro_batch)
    traces = {stage: trace_activations(model, batch, stage) for stage in STAGES}
    fp32_activations = {"checkpointing": max(t.with_checkpointing for t in traces.values()),
                        "no_checkpointing": max(t.without_checkpointing for t in traces.values())}
    per_gpu: dict[str, dict[str, Any]] = {}
    for strat in STRATEGIES:
        per_gpu[strat] = {}
        for prec in PRECISIONS:
            half = prec == "bf16"
            activations = {k: v // 2 if half else v for k, v in fp32_activations.items()}
            shards = gpus if strat == "fsdp" else 1
            parts = {"weights": 4 * total / shards, "grads": 4 * trainable / shards, "adamw": 8 * trainable / shards}
            if strat == "fsdp" and gpus > 1:
                gathered = 2 * sorted(unit_params)[-1] if unit_params else 0  # running + prefetched unit
                parts["gathered"] = (gathered + root_params) * (2 if half else 4) * 2  # weights + their grads
            elif half:
                parts["autocast_weights"] = 2 * total
            states = sum(parts.values())
            per_gpu[strat][prec] = {
                **{k: _gib(v) for k, v in parts.items()},
                "activations": {k: _gib(v) for k, v in activations.items()},
                "total": {k: _gib(states + v) for k, v in activations.items()},
            }
    chosen = per_gpu[strategy][precision]["total"]["checkpointing" if checkpointing else "no_checkpointing"]
    return {
        "config": {"blocks": cfg.blocks, "video_width": cfg.video.width, "action_width": cfg.action.width,
                   "image_size": list(cfg.image_size), "views": len(cfg.cameras), "clip_frames": cfg.clip_frames,
                   "actions": cfg.num_actions},
        "parameters": {**counts, "trainable": trainable},
        "gpus": gpus, "micro_batch": micro_batch,
        "activations_fp32_gib": {stage: {"checkpointing": _gib(t.with_checkpointing),
                                         "no_checkpointing": _gib(t.without_checkpointing)}
                                 for stage, t in traces.items()},
        "per_gpu_gib": per_gpu,
        "selected": {"strategy": strategy, "precision": precision, "checkpointing": checkpointing,
                     "per_gpu_gib": chosen},
    }


def summary_line(plan: dict[str, Any]) -> str:
    """One line for the start of a training run."""
    s = plan["selected"]
    return (f"memory plan: {plan['parameters']['total'] / 1e6:.1f} M parameters "
            f"({plan['parameters']['trainable'] / 1e6:.1f} M trainable); {s['strategy']} x {plan['gpus']}, "
            f"{s['precision']}, checkpointing {'on' if s['checkpointing'] else 'off'}, micro-batch "
            f"{plan['micro_batch']}: about {s['per_gpu_gib']:.2f} GiB per GPU (--dry-run for the full plan)")
