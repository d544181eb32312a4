"""Training at scale: the process group, DDP or FSDP2 wrapping, activation checkpointing per MoT
layer, and sharded checkpoints with torch.distributed.checkpoint (DCP).

FSDP shards and activation checkpointing recomputes the repeated blocks, which hold almost all
parameters and activations: per MoT layer the Wan video block and the action-value block (separate
parameters, one shared attention), then the depth branch's blocks (`blocks`). Both work through
module calls (forward hooks), and the trunk runs a MoT layer as calls of the blocks' parts
(attention projections, norms, attn2, ffn) around the shared attention, not as one call per block.
So each block is represented by its `region`: the outermost of its modules that a training step
calls, found by tracing the calls of a meta-device step (memory_plan.called_modules). A block the
trunk calls as a whole is its own region. Each block's region is one FSDP group (gathered once,
resharded after its last part ran), and each region module is checkpointed.

Sharded checkpoints live in `<out>.sharded/`:
    step_NNNNNNNN/       DCP shards of the model and AdamW states (any world size can read them),
                         plus rank_R.pt per rank (its RNG states) and train.pt (step, schedule, history)
    latest               the name of the last complete step directory
A save writes step_NNNNNNNN.tmp/ on every rank, then rank 0 renames it and rewrites `latest`
(write + rename), and only then deletes older steps: a save killed at any point leaves `latest`
naming a complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("ddp", "fsdp")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Topology:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Topology:
    """The process group under torchrun (nccl with GPUs, gloo on CPUs); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Topology(0, 1, 0)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Topology(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def blocks(model: nn.Module) -> list[str]:
    """Module names of the repeated blocks in running order: per MoT layer the video block and the
    action-value block, then the depth blocks."""
    names = {id(m): n for n, m in model.named_modules()}
    pairs = zip(model.video.blocks, model.action_blocks)
    return [names[id(m)] for pair in pairs for m in pair] + [names[id(m)] for m in model.depth_blocks]


def regions(model: nn.Module, called: set[str]) -> list[list[nn.Module]]:
    """Per block, the outermost of its modules (itself included) among `called`, the names of
    the modules a training step calls; blocks a step never calls are left out."""
    modules = dict(model.named_modules())
    out = []
    for block in blocks(model):
        inside = sorted(n for n in called if n == block or n.startswith(block + "."))
        outermost = [n for n in inside if not any(n.startswith(other + ".") for other in inside)]
        if outermost:
            out.append([modules[n] for n in outermost])
    return out


def checkpoint_activations(regions: list[list[nn.Module]]) -> None:
    """Activation checkpointing per region module: it keeps only its inputs and recomputes its
    activations in backward. The composable form leaves the modules (and state_dict keys) as they
    are, and composes with fully_shard."""
    from torch.distributed._composable import checkpoint

    for region in regions:
        for module in region:
            checkpoint(module)


def autocast(device: torch.device | str, precision: str) -> AbstractContextManager:
    """bf16 autocast on cuda or cpu; fp32: nothing. Parameters and AdamW states stay fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def wrap(
    model: nn.Module,
    strategy: str,
    topology: Topology,
    device: torch.device | str,
    precision: str,
    regions: list[list[nn.Module]],
) -> nn.Module:
    """The module the training step calls. One process: the model itself. DDP: replicated,
    gradients all-reduced. FSDP: every block's region, then the root (the parameters outside the
    regions), fully_shard-ed (FSDP2), in place: the
    parameters become DTensor shards, so build the optimizer after this. Under bf16, FSDP gathers
    bf16 parameters (autocast would otherwise cache a bf16 copy of every gathered weight until
    the end of the forward) and reduces gradients in fp32."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {STRATEGIES}")
    if topology.world == 1:
        return model
    device = torch.device(device)
    if strategy == "ddp":
        # unused parameters: stage 1 runs no action-value expert, and the gate only in stage 2
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
            gradient_as_bucket_view=True,
        )
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mixed = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    for region in regions:
        fully_shard(region, mp_policy=mixed)
    fully_shard(model, mp_policy=mixed)
    return model


def no_sync(trained: nn.Module, last_micro_batch: bool) -> AbstractContextManager:
    """DDP skips the gradient all-reduce on all but the last micro-batch of an accumulated step
    (FSDP2 reduce-scatters each micro-batch: its gradients are sharded, not replicated)."""
    if isinstance(trained, nn.parallel.DistributedDataParallel) and not last_micro_batch:
        return trained.no_sync()
    return nullcontext()


def is_sharded(trained: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(trained, FSDPModule)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state on rank 0's CPU (a collective for FSDP: every rank calls it; the
    others get an empty dict). Unsharded models: their own state_dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def rng_state(noise: torch.Generator) -> dict[str, Any]:
    """This process's random state: the loss noise generator, torch's CPU and CUDA generators."""
    return {
        "noise": noise.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any], noise: torch.Generator) -> None:
    noise.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_ranks(value: Any, topology: Topology) -> list[Any]:
    """Every rank's value, in rank order, on every rank (a list of one without a process group)."""
    if topology.world == 1:
        return [value]
    values: list[Any] = [None] * topology.world
    dist.all_gather_object(values, value)
    return values


class ShardedCheckpoints:
    """Sharded training checkpoints of an FSDP run under `<out>.sharded/` (see the module doc)."""

    def __init__(self, out: Path, topology: Topology):
        self.root = Path(f"{out}.sharded")
        self.topology = topology

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return path if path.is_dir() else None

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        shared: dict[str, Any],
        rank_state: dict[str, Any],
    ) -> Path:
        """Collective: every rank calls it. shared: the same on every rank (written by rank 0)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        final = self.root / f"step_{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        if self.topology.main:
            shutil.rmtree(tmp, ignore_errors=True)  # a save that was killed before its rename
            tmp.mkdir(parents=True)
        dist.barrier()
        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp)
        torch.save(rank_state, tmp / f"rank_{self.topology.rank}.pt")
        if self.topology.main:
            torch.save(shared, tmp / "train.pt")
        dist.barrier()  # every shard and rank file is on disk
        if self.topology.main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            pointer = self.root / "latest"
            pointer.with_name("latest.tmp").write_text(final.name)
            pointer.with_name("latest.tmp").replace(pointer)
            for old in self.root.glob("step_*"):
                if old != final and not old.name.endswith(".tmp"):
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def _latest(self) -> Path:
        path = self.latest()
        if path is None:
            raise FileNotFoundError(f"{self.root}: no complete sharded checkpoint")
        return path

    def shared(self) -> dict[str, Any]:
        """The latest checkpoint's shared state (read before its shards, to check it fits)."""
        return torch.load(self._latest() / "train.pt", weights_only=False)

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Restores model and optimizer shards from the latest checkpoint; returns this rank's
        state (None when the checkpoint was written by fewer ranks: DCP reshards the tensors, the
        caller reseeds this rank's generators)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        path = self._latest()
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        own = path / f"rank_{self.topology.rank}.pt"
        return torch.load(own, weights_only=False) if own.is_file() else None
