"""`wam-ros bench train-model`: training throughput and peak memory per GPU next to the memory plan (issue 20)."""

from __future__ import annotations

import time

import numpy as np

from wam_ros.perf.common import device_absent, peak_memory_mib, synchronize

TRAIN_MICRO_BATCHES = (1, 8)


def _fsdp_step_run(cfg, device: str, micro_batch: int, repeats: int) -> dict:
    """Training steps of the joint stage (every expert runs) as `wam-ros train --precision bf16
    --checkpointing --strategy fsdp` makes them (train.py's building blocks), on zero batches:
    the median step time, samples/s over all processes and this process's peak allocation."""
    import torch

    from wam_ros.model.distributed import checkpoint_activations, init_distributed, wrap
    from wam_ros.model.memory_plan import TASK, example_batch, training_regions
    from wam_ros.model.train import accumulate_gradients, build_model

    topology = init_distributed()
    torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: an fp32 xwam is 36 GB
        model = build_model(cfg)
    model.text_encoder.register([TASK])  # example_batch's instruction
    groups = training_regions(model, cfg)
    checkpoint_activations(groups)
    trained = wrap(model, "fsdp", topology, device, "bf16", groups)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = example_batch(cfg, micro_batch, "cpu")
    batch["rgb"] = ((batch["rgb"] + 1) * 127.5).to(torch.uint8).movedim(-3, -1)  # the DataLoader's uint8 frames
    noise = torch.Generator().manual_seed(topology.rank)
    model.train()
    seconds = []
    for step in range(repeats + 1):  # the first step warms up (allocator, kernels, FSDP's buffers)
        start = time.perf_counter()
        accumulate_gradients(trained, [batch], "joint", noise, "bf16", device)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step:
            seconds.append(time.perf_counter() - start)
    step_s = float(np.median(seconds))
    return {
        "processes": topology.world,
        "sharded": topology.world > 1,
        "step_s_p50": round(step_s, 3),
        "samples_per_s": round(micro_batch * topology.world / step_s, 3),
        **peak_memory_mib(device),
    }


def bench_train_model(config: str = "xwam", device: str = "cuda", repeats: int = 3, gpus: int = 8) -> dict:
    """Training throughput and peak memory per GPU with bf16 autocast + activation checkpointing +
    FSDP at micro-batch 1 and 8 (joint stage, median of `repeats` steps after one warm-up), next to
    the memory plan (memory_plan.py, as `wam-ros train --dry-run` prints it) for the same setting.
    Run under `torchrun --nproc-per-node N` to shard over N GPUs (one process: FSDP has nothing to
    shard). Without a GPU: the memory plan for `gpus` GPUs only. A micro-batch that runs out of GPU
    memory is reported as such."""
    import torch

    from wam_ros.model.distributed import init_distributed
    from wam_ros.model.memory_plan import memory_plan
    from wam_ros.model.model_config import load_model_config

    cfg = load_model_config(config)
    absent = device_absent(device) or (
        None if torch.device(device).type == "cuda" else "training throughput is measured on GPUs only"
    )
    if not absent and torch.device(device).index is None:
        device = f"cuda:{init_distributed().local_rank}"  # one GPU per torchrun process
    planned_gpus = gpus if absent else init_distributed().world
    result: dict = {
        "target": "train-model",
        "config": config,
        "device": device,
        "setting": "bf16 autocast + activation checkpointing + FSDP, joint stage",
        "gpus": planned_gpus,
    }
    for micro_batch in TRAIN_MICRO_BATCHES:
        plan = memory_plan(cfg, planned_gpus, micro_batch, "fsdp", "bf16", checkpointing=True)
        result.setdefault("parameters", plan["parameters"])
        entry: dict = {
            "planned_gib_per_gpu": plan["selected"]["per_gpu_gib"],
            "planned_parts_gib": plan["per_gpu_gib"]["fsdp"]["bf16"],
        }
        if not absent:
            try:
                entry["measured"] = _fsdp_step_run(cfg, device, micro_batch, repeats)
                entry["measured_over_planned"] = round(
                    entry["measured"]["cuda_max_allocated_mib"] / 1024 / entry["planned_gib_per_gpu"], 3
                )
            except torch.cuda.OutOfMemoryError as exc:
                entry["measured"] = {"out_of_memory": str(exc).splitlines()[0]}
            torch.cuda.empty_cache()
        result[f"micro_batch_{micro_batch}"] = entry
    if absent:
        result.update(
            skipped=True,
            reason=absent,
            not_measured=["step time", "samples/s", "peak memory per GPU"],
            note="the per-GPU figures are memory_plan's estimate (wam-ros train --dry-run)",
        )
    return result
