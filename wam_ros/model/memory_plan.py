"""A training memory plan without allocating the model: build it on the meta device, count its
parameters, trace what one training step calls and saves for backward, and combine that per GPU
for DDP or FSDP, fp32 or bf16, with or without activation checkpointing.

Everything is traced from the real training code, not assumed: a meta-device step of each stage
(forward and backward: nothing is computed, shapes only) records
- which modules it calls (`called_modules`; distributed.regions turns them into the FSDP groups and
  the checkpointed modules),
- which parameters receive gradients (the ones AdamW keeps states for: a frozen VAE has none),
- every tensor autograd saves for backward (once per storage, parameters excluded) and whether it
  was saved inside a region module, and the region modules' inputs.
Without checkpointing a step holds all saved tensors; with it, those saved outside the region
modules, the region modules' inputs, and one region module's activations at a time while it is
recomputed. Attention is counted as a GPU's fused kernels (flash / memory-efficient) keep it: q,
k, v, the output and one log-sum-exp per query and head, not the N x N weights of the math path
the meta device would trace (at mvwam's 8640 video tokens those would be 3.6 GB per layer). The
meta device has no autocast: bf16 activations are taken as half the fp32 ones (an estimate:
autocast keeps norms and softmax in fp32).

Model states per GPU: fp32 parameters, and fp32 gradients and two fp32 AdamW moments of every
trained parameter. DDP replicates them (under bf16 autocast also a cached bf16 copy of the
weights during the forward). FSDP shards them over the GPUs and gathers two blocks at a time (the
one running and the one prefetched) plus the root's own parameters, in bf16 under bf16. Not
counted: the CUDA context, allocator fragmentation, temporary buffers of single ops.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from wam_ros.model.distributed import PRECISIONS, STRATEGIES, regions
from wam_ros.model.model_config import ModelConfig
from wam_ros.model.wam import WorldActionModel

GIB = 2**30
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
    return {
        "rgb": torch.zeros(b, views, frames, 3, h, w, device=device),
        "inverse_depth": torch.zeros(b, views, frames, h, w, device=device)
        if cfg.depth_blocks or cfg.use_depth_input
        else None,
        "state": torch.zeros(b, cfg.state_dim, device=device),
        "actions": torch.zeros(b, cfg.num_actions, cfg.action_dim, device=device),
        "value": torch.zeros(b, device=device),
        "gate": torch.zeros(b, device=device),
        "imitate": torch.ones(b, device=device),
        "instruction": [TASK] * b,
    }


def _step(model: nn.Module, batch: dict[str, Any], stage: str) -> None:
    losses = model(batch, stage, torch.Generator().manual_seed(0))
    sum(losses.values()).backward()


def called_modules(model: nn.Module, batch: dict[str, Any]) -> set[str]:
    """Names of the modules a training step of either stage calls."""
    ids: set[int] = set()
    handle = nn.modules.module.register_module_forward_pre_hook(lambda module, _args: ids.add(id(module)))
    try:
        for stage in STAGES:
            _step(model, batch, stage)
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    return {name for name, module in model.named_modules() if id(module) in ids}


def training_regions(model: nn.Module, cfg: ModelConfig) -> list[list[nn.Module]]:
    """distributed.regions of `model`, from the calls of a meta-device twin of it."""
    return regions(model, called_modules(meta_model(cfg), example_batch(cfg, 1)))


class _FusedAttention(torch.autograd.Function):
    """Shapes of scaled_dot_product_attention (B, H, N, D) with what a fused kernel saves."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@contextmanager
def _fused_attention() -> Iterator[None]:
    """Routes torch's scaled_dot_product_attention (wam_ros's and diffusers' calls) through
    _FusedAttention while a meta-device step is traced."""
    real = torch.nn.functional.scaled_dot_product_attention

    def fused(query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return _FusedAttention.apply(query, key, value)

    torch.nn.functional.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = real


@dataclass(frozen=True)
class ActivationTrace:
    """Bytes one fp32 training step keeps for backward, by where they were saved."""

    outside: int  # outside the region modules (embeddings, heads, VAE, shared attention, losses)
    inside: list[int]  # inside each region module
    inputs: list[int]  # each region module's tensor inputs not counted before (what checkpointing keeps)

    @property
    def without_checkpointing(self) -> int:
        return self.outside + sum(self.inside) + sum(self.inputs)

    @property
    def with_checkpointing(self) -> int:
        return self.outside + sum(self.inputs) + max(self.inside, default=0)


def trace_step(
    model: nn.Module, batch: dict[str, Any], stage: str, region_modules: list[nn.Module]
) -> tuple[ActivationTrace, set[int]]:
    """Runs one training step of `stage` (meta tensors: nothing is computed), attributing every
    tensor saved for backward to the region module that saved it. Returns the trace and the ids
    of the parameters that received a gradient."""
    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    kept: list[Tensor] = []  # holds traced tensors, so no storage address is reused mid-trace
    outside, where = [0], [None]
    inside, inputs = [0] * len(region_modules), [0] * len(region_modules)

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
            inside[where[0]] += size
        return t

    def enter(i: int):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            flat = [*args, *kwargs.values()]
            flat += [x for a in flat if isinstance(a, (tuple, list)) for x in a]
            inputs[i] += sum(new_bytes(t) for t in flat if isinstance(t, Tensor))
            where[0] = i

        return hook

    def leave(_module: nn.Module, _args: tuple, _output: Any) -> None:
        where[0] = None

    handles = []
    for i, module in enumerate(region_modules):
        handles.append(module.register_forward_pre_hook(enter(i), with_kwargs=True))
        handles.append(module.register_forward_hook(leave))
    try:
        with _fused_attention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses = model(batch, stage, torch.Generator().manual_seed(0))
        sum(losses.values()).backward()
    finally:
        for handle in handles:
            handle.remove()
    trained = {id(p) for p in model.parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return ActivationTrace(outside[0], inside, inputs), trained


def _gib(n: float) -> float:
    return float(f"{n / GIB:.4g}")


def memory_plan(
    cfg: ModelConfig,
    gpus: int = 1,
    micro_batch: int = 1,
    strategy: str = "ddp",
    precision: str = "fp32",
    checkpointing: bool = False,
) -> dict[str, Any]:
    """Parameters per part and the memory per GPU (GiB) of every strategy x precision, with and
    without checkpointing; `selected` is the one these arguments choose."""
    if strategy not in STRATEGIES or precision not in PRECISIONS:
        raise ValueError(f"strategy {strategy!r} / precision {precision!r}: expected {STRATEGIES} / {PRECISIONS}")
    model = meta_model(cfg)
    batch = example_batch(cfg, micro_batch)
    groups = regions(model, called_modules(model, batch))
    region_modules = [m for group in groups for m in group]
    traces, trained = {}, set()
    for stage in STAGES:
        traces[stage], got_grads = trace_step(model, batch, stage, region_modules)
        trained |= got_grads
    counts = model.parameter_counts()
    total = sum(p.numel() for p in model.parameters())
    n_trained = sum(p.numel() for p in model.parameters() if id(p) in trained)
    group_params = sorted(sum(p.numel() for m in group for p in m.parameters()) for group in groups)
    root_params = total - sum(group_params)
    fp32_activations = {
        "checkpointing": max(t.with_checkpointing for t in traces.values()),
        "no_checkpointing": max(t.without_checkpointing for t in traces.values()),
    }
    per_gpu: dict[str, dict[str, Any]] = {}
    for strat in STRATEGIES:
        per_gpu[strat] = {}
        for prec in PRECISIONS:
            half = prec == "bf16"
            activations = {k: v // 2 if half else v for k, v in fp32_activations.items()}
            shards = gpus if strat == "fsdp" else 1
            parts = {"weights": 4 * total / shards, "grads": 4 * n_trained / shards, "adamw": 8 * n_trained / shards}
            if strat == "fsdp" and gpus > 1:
                gathered = sum(group_params[-2:])  # the running and the prefetched block
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
        "config": {
            "blocks": cfg.blocks,
            "video_width": cfg.video.width,
            "action_width": cfg.action.width,
            "depth_blocks": cfg.depth_blocks,
            "image_size": list(cfg.image_size),
            "views": len(cfg.cameras),
            "clip_frames": cfg.clip_frames,
            "actions": cfg.num_actions,
        },
        "parameters": {**counts, "trained": n_trained},
        "gpus": gpus,
        "micro_batch": micro_batch,
        "activations_fp32_gib": {
            stage: {"checkpointing": _gib(t.with_checkpointing), "no_checkpointing": _gib(t.without_checkpointing)}
            for stage, t in traces.items()
        },
        "per_gpu_gib": per_gpu,
        "selected": {
            "strategy": strategy,
            "precision": precision,
            "checkpointing": checkpointing,
            "per_gpu_gib": chosen,
        },
    }


def summary_line(plan: dict[str, Any]) -> str:
    """One line for the start of a training run."""
    s = plan["selected"]
    return (
        f"memory plan: {plan['parameters']['total'] / 1e6:.1f} M parameters "
        f"({plan['parameters']['trained'] / 1e6:.1f} M trained); {s['strategy']} x {plan['gpus']}, "
        f"{s['precision']}, checkpointing {'on' if s['checkpointing'] else 'off'}, micro-batch "
        f"{plan['micro_batch']}: about {s['per_gpu_gib']:.3g} GiB per GPU (--dry-run for the full plan)"
    )
