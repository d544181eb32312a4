"""`wam-ros bench policy-model`: inference latency and memory of one model with random weights (issue 20)."""

from __future__ import annotations

import time

import numpy as np

from wam_ros.perf.common import device_absent, peak_memory_mib, synchronize

# Action latencies the papers report (issue 20), printed beside ours: X-WAM's on an RTX 3090, and
# FastWAM's (the issue names no GPU for it).
ACTION_LATENCY_ANCHORS_MS = {"x_wam_rtx3090": 1033.0, "fastwam": 190.0}
MODEL_DTYPES = ("fp32", "bf16")
# Above this many parameters one denoising pass takes minutes on a few CPU cores (xwam: 8.9 B).
CPU_PARAMETER_LIMIT = 100_000_000


def _random_policy(cfg, device: str, dtype: str):
    """A WorldActionPolicy of `cfg` with random weights, built on `device` directly in `dtype` (an
    fp32 build first would need twice the memory: 36 GB for xwam), with a one-task table and a
    normaliser of random states."""
    import torch

    from wam_ros.model.normalization import Normalizer
    from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy
    from wam_ros.model.wam import WorldActionModel

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    default = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = WorldActionModel(cfg)
    finally:
        torch.set_default_dtype(default)
    model.to(torch_dtype)
    model.text_encoder.register(["benchmark"])
    states = np.random.default_rng(0).normal(size=(100, cfg.state_dim))
    names = [f"joint_{i}" for i in range(cfg.state_dim)]
    meta = CheckpointMeta(list(cfg.cameras), list(cfg.image_size), names, names, cfg.action_space, 15.0)
    return WorldActionPolicy(model, Normalizer.from_data(states, states, cfg.action_space, []), meta)


def bench_policy_model(
    config: str = "small",
    device: str = "cpu",
    dtype: str = "fp32",
    repeats: int = 10,
    force: bool = False,
    action_steps: int = 0,
    video_steps: int = 0,
) -> dict:
    """One model of `config` with random weights on `device` in `dtype`, measured interleaved after a
    warm-up: action latency with ANS (actions final after T_a of T_O passes) against synchronous
    sampling (final only after all T_O), video latency (all passes, depth and VAE decode), the time
    of one pass with and without the action-value expert, and peak memory; medians over `repeats`,
    beside the papers' anchors. action_steps / video_steps: T_a / T_O (0: the config's). bf16 runs
    the bf16 weights under autocast (the observation and the noise stay fp32). The gate threshold is
    0 so that every run takes the predictive expert (the reactive one waits for the whole video).

    Without the device: what was skipped and why. On cpu, a config above CPU_PARAMETER_LIMIT
    parameters is refused unless `force`."""
    import torch

    from wam_ros.config import ConfigError
    from wam_ros.model.model_config import load_model_config

    if dtype not in MODEL_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {', '.join(MODEL_DTYPES)}")
    result: dict = {
        "target": "policy-model",
        "config": config,
        "device": device,
        "dtype": dtype,
        "anchors_action_latency_ms": ACTION_LATENCY_ANCHORS_MS,
    }
    absent = device_absent(device)
    if absent:
        return {
            **result,
            "skipped": True,
            "reason": absent,
            "not_measured": ["action latency ANS vs synchronous", "video latency", "pass time", "peak memory"],
        }
    from wam_ros.model.policy import Observation
    from wam_ros.model.wam import WorldActionModel

    cfg = load_model_config(config, gate_threshold=0.0)
    with torch.device("meta"):
        parameters = WorldActionModel(cfg).parameter_counts()
    if torch.device(device).type == "cpu" and parameters["total"] > CPU_PARAMETER_LIMIT and not force:
        raise ConfigError(
            f"{config} has {parameters['total'] / 1e9:.2f} B parameters: one denoising pass takes "
            f"minutes on {torch.get_num_threads()} CPU threads. Use --device cuda, a small config "
            "(demo, small), or --force"
        )
    t_a, t_o = action_steps or cfg.action_steps, video_steps or cfg.video_steps
    if not 1 <= t_a < t_o:
        raise ConfigError(f"need 1 <= action_steps ({t_a}) < video_steps ({t_o}) to compare ANS with synchronous")
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    policy = _random_policy(cfg, device, dtype)
    weights_mib = peak_memory_mib(device)
    rng = np.random.default_rng(1)
    h, w = cfg.image_size
    obs = Observation(
        images={c: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for c in cfg.cameras},
        depths={c: rng.integers(300, 2000, (h, w), dtype=np.uint16) for c in cfg.cameras},
        state=rng.normal(size=cfg.state_dim),
        instruction="benchmark",
    )
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    samples: dict[str, list[float]] = {
        name: []
        for name in ("ans", "synchronous", "video_total", "video_decode", "encode", "joint_pass", "video_only_pass")
    }

    def timed_passes(seed: int) -> None:
        """Each pass of one chunk on its own: the first T_a run both experts, the rest the video expert."""
        with torch.no_grad():
            session = policy.session(obs, t_a, t_o, seed)
            while not session.video_final:
                name = "video_only_pass" if session.actions_final else "joint_pass"
                start = time.perf_counter()
                session.step()
                synchronize(device)
                samples[name].append((time.perf_counter() - start) * 1e3)

    with autocast:
        policy.predict(obs, action_steps=t_a, video_steps=t_o, seed=0)  # warm-up (allocations, kernels)
        for i in range(repeats):
            ans = policy.predict(obs, video=False, action_steps=t_a, video_steps=t_o, seed=i).timings
            sync = policy.predict(obs, video=False, action_steps=t_o, video_steps=t_o, seed=i).timings
            full = policy.predict(obs, action_steps=t_a, video_steps=t_o, seed=i).timings
            timed_passes(i)
            samples["ans"].append(ans["actions_ms"])
            samples["synchronous"].append(sync["actions_ms"])
            samples["video_total"].append(full["total_ms"])
            samples["video_decode"].append(full["decode_ms"])
            samples["encode"].append(full["encode_ms"])
    p50 = {name: round(float(np.median(values)), 2) for name, values in samples.items()}
    return {
        **result,
        "sampler": cfg.sampler,
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "steps": {"action_steps_Ta": t_a, "video_steps_TO": t_o},
        "parameters": parameters,
        "action_latency_ms_p50": {"ans": p50["ans"], "synchronous": p50["synchronous"]},
        "synchronous_over_ans": round(p50["synchronous"] / p50["ans"], 2),
        "video_latency_ms_p50": {
            "all_passes_depth_and_decode": p50["video_total"],
            "of_which_vae_decode": p50["video_decode"],
            "of_which_encode": p50["encode"],
        },
        "pass_ms_p50": {"video_and_action_experts": p50["joint_pass"], "video_expert_only": p50["video_only_pass"]},
        "memory": {"after_building_the_model": weights_mib, "peak": peak_memory_mib(device)},
        "ans_over_anchor": {name: round(p50["ans"] / ms, 3) for name, ms in ACTION_LATENCY_ANCHORS_MS.items()},
    }
