"""Training at scale on tiny models (CPU): the window indexing of the 1 + 4H raw frames, the
learning-rate schedule, bf16 autocast, activation checkpointing, gradient accumulation, resume
after an interrupted run or save, the streaming DataLoader, FSDP under torchrun with sharded
checkpoints, and the meta-device memory plan."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import wam_ros.model.wam as wam
from support.model_data import assert_same_training_state, observation, synthetic_dataset, tiny_config
from wam_ros.data.dataset import DatasetError, LazyFrames, save_dataset
from wam_ros.data.formats import load_dataset
from wam_ros.model.distributed import Topology, checkpoint_activations
from wam_ros.model.memory_plan import GIB, memory_plan, training_regions
from wam_ros.model.policy import load_policy
from wam_ros.model.train import (
    ResizedFrames,
    StepBatches,
    TrainConfig,
    WindowDataset,
    accumulate_gradients,
    collate_windows,
    train,
    window_indices,
    window_loader,
)

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg, episodes=2, length=16)
    return cfg, meta, episodes, WindowDataset(episodes, meta, cfg)


def fresh_model(cfg, seed: int = 0) -> wam.WorldActionModel:
    torch.manual_seed(seed)
    model = wam.WorldActionModel(cfg)
    model.text_encoder.register(["slide the block"])
    return model


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_window_is_the_conditioning_frame_and_the_4h_raw_frames_after_it(tiny):
    cfg, _, episodes, dataset = tiny
    assert cfg.clip_frames == 1 + 4 * cfg.horizon and cfg.num_actions == 4 * cfg.horizon
    frames, actions = window_indices(3, 16, cfg.clip_frames, cfg.num_actions)
    assert frames.tolist() == list(range(3, 3 + cfg.clip_frames)) and actions.tolist() == list(range(3, 11))
    frames, actions = window_indices(12, 16, 9, 8)  # past the end: the last frame and action repeat
    assert frames.tolist() == [12, 13, 14, 15, 15, 15, 15, 15, 15] and actions.tolist() == [
        12,
        13,
        14,
        15,
        15,
        15,
        15,
        15,
    ]
    ep = episodes[0]
    for t in (0, 12):
        sample = dataset[t]  # episode 0, frame t
        frames, _ = window_indices(t, len(ep), cfg.clip_frames, cfg.num_actions)
        assert sample["rgb"].shape == (len(cfg.cameras), cfg.clip_frames, *cfg.image_size, 3)
        assert np.array_equal(sample["rgb"], ep.rgb[frames].swapaxes(0, 1))
        assert sample["inverse_depth"].shape == sample["rgb"].shape[:-1]
        # the synthetic demonstrations command the next state (action[t] = state[t + 1]): action k
        # of the window lands on the window's raw frame k + 1
        chunk = dataset.chunk(0, t)
        assert np.allclose(chunk, ep.state[frames[1:]])


def test_learning_rate_warms_up_then_decays_per_stage():
    base = dict(video_stage_steps=10, joint_stage_steps=20, lr=1e-3, warmup_steps=4, min_lr=1e-4)
    cosine = TrainConfig(**base, decay="cosine", decay_fraction=1.0)
    lrs = [cosine.learning_rate(s) for s in range(30)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # warmup, restarted by stage 2
    assert lrs[10:14] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[14] == pytest.approx(1e-3) and lrs[14 + 8] == pytest.approx(5.5e-4)  # half-way down the cosine
    assert all(a > b for a, b in zip(lrs[14:29], lrs[15:30])) and lrs[29] > 1e-4
    linear = TrainConfig(**base, decay="linear", decay_fraction=0.5)
    lrs = [linear.learning_rate(s) for s in range(10, 30)]
    assert lrs[4:10] == [1e-3] * 6 and lrs[10] == pytest.approx(1e-3) and lrs[15] == pytest.approx(5.5e-4)
    flat = TrainConfig(**base, decay="none")
    assert [flat.learning_rate(s) for s in range(4, 10)] == [1e-3] * 6
    with pytest.raises(ValueError, match="decay 'step'"):
        TrainConfig(decay="step").validate()


def test_bf16_autocast_gives_the_fp32_loss(tiny):
    cfg, _, _, dataset = tiny
    model = fresh_model(cfg)
    batch = collate_windows([dataset[i] for i in (0, 5, 17, 30)])
    fp32 = accumulate_gradients(model, [batch], "joint", torch.Generator().manual_seed(3), "fp32", "cpu")
    bf16 = accumulate_gradients(model, [batch], "joint", torch.Generator().manual_seed(3), "bf16", "cpu")
    assert fp32.keys() == bf16.keys()
    for head, value in fp32.items():
        assert bf16[head] == pytest.approx(value, rel=3e-2, abs=3e-3), head
    assert bf16 != fp32  # autocast did run in bf16


def test_activation_checkpointing_gives_the_same_loss_and_gradients_and_saves_less(tiny):
    cfg, _, _, dataset = tiny
    plain = fresh_model(cfg)
    checkpointed = copy.deepcopy(plain)
    checkpoint_activations(training_regions(checkpointed, cfg))
    batch = collate_windows([dataset[i] for i in (1, 9, 20)])
    saved = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        count = [0]

        def pack(t, count=count):
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses = accumulate_gradients(model, [batch], "joint", torch.Generator().manual_seed(4), "fp32", "cpu")
        saved[name] = (count[0], losses)
    assert saved["checkpointed"][1] == saved["plain"][1]
    # the region modules kept only their inputs (the ops between them, e.g. the shared attention, are not
    # modules: they keep theirs)
    assert saved["checkpointed"][0] < 0.8 * saved["plain"][0]
    a, b = grads(plain), grads(checkpointed)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-7), name


def test_gradient_accumulation_equals_one_batch_of_all_samples(tiny, monkeypatch):
    cfg, _, _, dataset = tiny
    real = wam.training_losses

    def per_sample_noise(model, batch, stage, generator):
        """The real losses, but each sample's noise fixed by its content (not its batch position),
        so that different batch splits see the same noise."""
        out = []
        for b in range(len(batch["rgb"])):
            one = {k: v[b : b + 1] if v is not None else None for k, v in batch.items()}
            seed = int(batch["state"][b].abs().sum().item() * 1e4) + int(batch["value"][b].item() * 1e6)
            out.append(real(model, one, stage, torch.Generator().manual_seed(seed)))
        return {k: torch.stack([o[k] for o in out]).mean() for k in out[0]}

    monkeypatch.setattr(wam, "training_losses", per_sample_noise)
    one_rank = Topology(0, 1, 0)
    split = list(StepBatches(len(dataset), TrainConfig(batch_size=2, grad_accum=2, seed=5), one_rank, 0))
    whole = list(StepBatches(len(dataset), TrainConfig(batch_size=4, grad_accum=1, seed=5), one_rank, 0))
    assert split[0] + split[1] == whole[0] and split[2] + split[3] == whole[1]  # the same global batch
    two_ranks = [
        list(StepBatches(len(dataset), TrainConfig(batch_size=1, grad_accum=2, seed=5), Topology(r, 2, r), 0))
        for r in range(2)
    ]
    assert two_ranks[0][0] + two_ranks[1][0] + two_ranks[0][1] + two_ranks[1][1] == whole[0]
    model = fresh_model(cfg)
    accumulated = copy.deepcopy(model)
    windows = whole[0]
    one = accumulate_gradients(
        model, [collate_windows([dataset[i] for i in windows])], "joint", torch.Generator(), "fp32", "cpu"
    )
    two = accumulate_gradients(
        accumulated,
        [collate_windows([dataset[i] for i in windows[:2]]), collate_windows([dataset[i] for i in windows[2:]])],
        "joint",
        torch.Generator(),
        "fp32",
        "cpu",
    )
    for head in one:
        assert two[head] == pytest.approx(one[head], rel=1e-5, abs=1e-7), head
    a, b = grads(model), grads(accumulated)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-7), name


@pytest.mark.slow
def test_resume_after_an_interrupted_run_and_save_is_bit_identical(tiny, tmp_path, monkeypatch):
    _, _, _, dataset = tiny
    train_cfg = TrainConfig(
        video_stage_steps=6,
        joint_stage_steps=8,
        batch_size=2,
        grad_accum=2,
        warmup_steps=2,
        decay="cosine",
        decay_fraction=1.0,
        min_lr=1e-5,
        log_every=2,
        checkpoint_every=4,
    )
    straight = tmp_path / "straight.pt"
    train(dataset, train_cfg, straight, progress=False)

    class Interrupted(Exception):
        pass

    real_save = torch.save

    def killed_during_save(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("train", {}).get("step") == 12:
            Path(path).write_bytes(b"half a checkpoint")  # the process dies mid-write
            raise Interrupted
        return real_save(obj, path, *args, **kwargs)

    resumed = tmp_path / "resumed.pt"
    monkeypatch.setattr(torch, "save", killed_during_save)
    with pytest.raises(Interrupted):
        train(dataset, train_cfg, resumed, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(resumed, weights_only=False)["train"]["step"] == 8  # the last good one is intact
    summary = train(dataset, train_cfg, resumed, resume=True, progress=False)
    assert summary["steps"] == 14
    a, b = (torch.load(p, weights_only=False) for p in (straight, resumed))
    assert_same_training_state(a, b)
    for key in ("scheduler", "step"):
        assert a["train"][key] == b["train"][key], key
    for sa, sb in zip(a["train"]["optimizer"]["state"].values(), b["train"]["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(x["noise"], y["noise"]) for x, y in zip(a["train"]["rng"], b["train"]["rng"]))
    deeper = tiny_config(blocks=3)
    meta, episodes = synthetic_dataset(deeper, episodes=1, length=8)
    with pytest.raises(DatasetError, match="another model config"):  # refused before any weight is touched
        train(WindowDataset(episodes, meta, deeper), train_cfg, resumed, resume=True, progress=False)


def test_training_starts_from_a_pretrained_wan(tiny, tmp_path):
    """--init-from: a diffusers directory (transformer/, vae/) is the starting point of the video
    expert, the VAE and the depth branch; at a negligible learning rate they stay where it put them."""
    cfg, _, _, dataset = tiny
    prior = fresh_model(cfg, seed=7)
    prior.video.transformer.save_pretrained(tmp_path / "wan" / "transformer")
    prior.vae.vae.save_pretrained(tmp_path / "wan" / "vae")
    train(
        dataset,
        TrainConfig(video_stage_steps=1, joint_stage_steps=1, batch_size=2, lr=1e-12, init_from=str(tmp_path / "wan")),
        tmp_path / "m.pt",
        progress=False,
    )
    state = torch.load(tmp_path / "m.pt", weights_only=False)["model"]
    fresh = fresh_model(cfg).state_dict()  # what training builds without --init-from (seed 0)
    first = cfg.blocks - cfg.depth_blocks
    for name, value in prior.state_dict().items():
        if name.startswith(("video.", "vae.")):
            assert torch.allclose(state[name], value, atol=1e-9), name
    block = f"video.transformer.blocks.{first}.ffn.net.2.weight"
    assert torch.allclose(state["depth_blocks.0.block.ffn.net.2.weight"], prior.state_dict()[block], atol=1e-9)
    assert not torch.allclose(state[block], fresh[block])


def test_streaming_loader_with_workers_yields_the_in_memory_batches(tmp_path):
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(tiny_config(image_size=[48, 48]), episodes=2, length=12)  # resized to 32
    save_dataset(tmp_path / "data", meta, episodes, layout="npy")
    _, lazy = load_dataset(tmp_path / "data", lazy=True)
    assert isinstance(lazy[0].rgb, LazyFrames) and lazy[0].rgb.shape == episodes[0].rgb.shape
    in_memory = WindowDataset(episodes, meta, cfg)
    streamed = WindowDataset(lazy, meta, cfg)
    assert isinstance(streamed.episodes[0]["rgb"], ResizedFrames)  # no frames held
    train_cfg = TrainConfig(video_stage_steps=2, joint_stage_steps=1, batch_size=3, grad_accum=2, workers=2)
    loader = window_loader(streamed, train_cfg, Topology(0, 1, 0), start=1)
    indices = list(loader.batch_sampler)
    assert len(indices) == 4  # steps 1 and 2, two micro-batches each
    for windows, batch in zip(indices, loader):
        expected = in_memory.batch(windows)
        got = {k: v for k, v in batch.items()}
        got["rgb"] = got["rgb"].movedim(-1, -3).float() / 127.5 - 1.0
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, got[key]), key
            else:
                assert value == got[key], key


@pytest.mark.slow
def test_memory_plan_counts_the_real_parameters(tiny):
    cfg = tiny[0]
    plan = memory_plan(cfg, gpus=4, micro_batch=2)
    real = fresh_model(cfg).parameter_counts()
    assert {k: plan["parameters"][k] for k in real} == real
    model = fresh_model(cfg)  # the parameters a real step of each stage trains: what AdamW keeps states for
    for stage in ("video", "joint"):
        accumulate_gradients(
            model, [collate_windows([tiny[3][0], tiny[3][1]])], stage, torch.Generator().manual_seed(0), "fp32", "cpu"
        )
    assert plan["parameters"]["trained"] == sum(p.numel() for p in model.parameters() if p.grad is not None)
    ddp, fsdp = plan["per_gpu_gib"]["ddp"], plan["per_gpu_gib"]["fsdp"]
    assert ddp["fp32"]["weights"] == pytest.approx(4 * real["total"] / GIB, rel=1e-3)
    assert ddp["fp32"]["adamw"] == pytest.approx(8 * plan["parameters"]["trained"] / GIB, rel=1e-3)
    assert fsdp["fp32"]["adamw"] == pytest.approx(ddp["fp32"]["adamw"] / 4, rel=1e-3)
    for stage in ("video", "joint"):
        act = plan["activations_fp32_gib"][stage]
        assert 0 < act["checkpointing"] < act["no_checkpointing"]
    double = memory_plan(cfg, gpus=4, micro_batch=4)["activations_fp32_gib"]["joint"]["no_checkpointing"]
    assert double == pytest.approx(2 * plan["activations_fp32_gib"]["joint"]["no_checkpointing"], rel=0.15)


@pytest.mark.slow
def test_dry_run_of_a_large_config_allocates_nothing():
    # the peak is this process's own memory's high-water mark (VmHWM, kB): getrusage's ru_maxrss
    # survives exec and reported the test runner's 2.1 GB for a child that used 0.5
    script = (
        "import json, re, sys; from pathlib import Path; from wam_ros.cli import main; "
        "code = main(['train', '--config', 'xwam', '--dry-run', '--gpus', '8', '--strategy', 'fsdp', "
        "'--precision', 'bf16', '--checkpointing', '--batch-size', '1']); "
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text())[1], file=sys.stderr); "
        "sys.exit(code)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    plan = json.loads(run.stdout)
    fp32_weights_gib = 4 * plan["parameters"]["total"] / GIB
    assert fp32_weights_gib > 5  # the model it planned would not fit in what the process used
    peak_gib = int(run.stderr.strip().splitlines()[-1]) * 1024 / GIB
    assert peak_gib < 1.5, f"dry run peaked at {peak_gib:.2f} GiB"
    assert plan["gpus"] == 8 and plan["selected"]["strategy"] == "fsdp"
    fsdp = plan["per_gpu_gib"]["fsdp"]["bf16"]
    assert fsdp["adamw"] == pytest.approx(plan["per_gpu_gib"]["ddp"]["bf16"]["adamw"] / 8, rel=1e-3)
    assert plan["selected"]["per_gpu_gib"] == fsdp["total"]["checkpointing"]


@pytest.mark.slow
def test_fsdp_under_torchrun_saves_sharded_checkpoints_and_resumes(tmp_path):
    """Two CPU processes on gloo, each MoT layer sharded (FSDP2), bf16 autocast, activation
    checkpointing, accumulation, workers: a sharded checkpoint, then a resumed run from it."""
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg, episodes=2, length=12)
    save_dataset(tmp_path / "data", meta, episodes, layout="npy")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict()))))
    out = tmp_path / "fsdp.pt"

    def run(joint_steps: int, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
                str(VENV_BIN / "wam-ros"),
                "train",
                "--data",
                str(tmp_path / "data"),
                "--config",
                str(config),
                "--out",
                str(out),
                "--video-steps",
                "2",
                "--joint-steps",
                str(joint_steps),
                "--batch-size",
                "1",
                "--grad-accum",
                "2",
                "--strategy",
                "fsdp",
                "--precision",
                "bf16",
                "--checkpointing",
                "--workers",
                "1",
                "--warmup-steps",
                "1",
                "--decay",
                "cosine",
                "--checkpoint-every",
                "2",
                "--device",
                "cpu",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    first = run(2)
    assert first.returncode == 0, first.stderr[-4000:]
    summary = json.loads(first.stdout)
    assert summary["world_size"] == 2 and summary["strategy"] == "fsdp" and summary["steps"] == 4
    sharded = Path(f"{out}.sharded")
    assert (sharded / "latest").read_text() == "step_00000004"
    step_dir = sharded / "step_00000004"
    assert (step_dir / ".metadata").is_file() and {p.name for p in step_dir.glob("rank_*.pt")} == {
        "rank_0.pt",
        "rank_1.pt",
    }
    assert not list(sharded.glob("*.tmp"))
    (sharded / "step_00000006.tmp").mkdir()  # a save killed before its commit: ignored, then replaced
    before = load_policy(out)
    second = run(4, "--resume")
    assert second.returncode == 0, second.stderr[-4000:]
    assert json.loads(second.stdout)["steps"] == 6
    assert "train 6/6 | [joint]" in second.stderr and "[video]" not in second.stderr  # continued at step 4
    assert (sharded / "latest").read_text() == "step_00000006" and not (sharded / "step_00000004").exists()
    after = load_policy(out)
    changed = [
        n
        for n, t in after.model.state_dict().items()
        if isinstance(t, torch.Tensor) and not torch.equal(t, before.model.state_dict()[n])
    ]
    assert changed  # trained on from the restored weights
    assert after.predict(observation(cfg, episodes[0]), seed=0).actions.shape == (cfg.num_actions, 14)
