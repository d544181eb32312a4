"""Training, checkpoints, the train CLI (also under torchrun/DDP) and bad input to the model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from support.model_data import assert_same_training_state, observation, synthetic_dataset, tiny_config
from wam_ros.data.dataset import DatasetError, save_dataset
from wam_ros.data.formats import load_dataset
from wam_ros.model.policy import (
    INPAINT_TARGET_BOUND,
    CheckpointError,
    CheckpointMismatch,
    ObservationError,
    load_policy,
)
from wam_ros.model.train import TrainConfig, WindowDataset, train

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model overfitted on three synthetic episodes (about 45 s on one core)."""
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg)
    dataset = WindowDataset(episodes, meta, cfg)
    out = tmp_path_factory.mktemp("train") / "tiny.pt"
    summary = train(
        dataset,
        TrainConfig(
            video_stage_steps=30, joint_stage_steps=120, batch_size=8, lr=2e-3, log_every=10, checkpoint_every=1000
        ),
        out,
        progress=False,
    )
    return cfg, episodes, out, summary


@pytest.mark.slow
def test_overfitting_drives_every_loss_down(trained):
    _, _, _, summary = trained
    losses = summary["losses"]
    assert set(losses["video"]["first"]) == {"reconstruction", "latent_scale", "video", "depth"}
    assert set(losses["joint"]["first"]) == {"video", "depth", "action", "value", "reactive", "gate"}
    # each head from the first interval it was trained in to the end of training; latent_scale is a
    # regulariser (latent mean 0, std 1), not a fit: it only has to stay small
    first = {**losses["joint"]["first"], **losses["video"]["first"]}
    last = {**losses["video"]["last"], **losses["joint"]["last"]}
    assert last.pop("latent_scale") < 0.1, losses["video"]
    for head, start in first.items():
        if head in last:
            assert last[head] < 0.7 * start, f"{head}: {start:.4f} -> {last[head]:.4f}"


@pytest.mark.slow
def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path):
    cfg, episodes, path, _ = trained
    policy = load_policy(path)
    assert policy.meta.cameras == list(cfg.cameras) and policy.meta.action_space == cfg.action_space
    assert policy.meta.git_revision != "" and policy.meta.state_names[6] == "left_gripper"
    copy = tmp_path / "copy.pt"
    policy.save(copy)
    again = load_policy(copy)
    obs = observation(cfg, episodes[0], 3)
    a, b = policy.predict(obs, seed=11), again.predict(obs, seed=11)
    assert np.array_equal(a.actions, b.actions) and a.value == b.value and a.expert == b.expert
    assert np.array_equal(a.future_rgb, b.future_rgb) and np.array_equal(a.future_depth, b.future_depth)
    # the trained model follows its data: actions near the demonstrated ones, progress in range
    demo = episodes[0].action[3 : 3 + cfg.num_actions]
    assert np.abs(a.actions[: len(demo)] - demo).mean() < 0.15
    assert 0.0 <= a.value <= 1.0


@pytest.mark.slow
def test_rtc_guidance_is_the_vjp_of_the_clean_estimate(trained):
    """The guided step of the step-wise API changes the action velocity by exactly
    -c * (I + J)^T ((Y - x0_hat) * w), J = d x0_hat / d x_t, with J^T checked against central
    finite differences of the model itself (no autograd), and c = beta at t = 1."""
    cfg, episodes, path, _ = trained
    policy = load_policy(path)
    obs = observation(cfg, episodes[0], 2)
    target = policy.normalizer.action.denormalize(np.full((cfg.num_actions, cfg.action_dim), 0.8))
    weights = np.zeros(cfg.num_actions)
    weights[:4] = 1.0  # the still-executing prefix
    free, guided = (policy.session(obs, action_steps=4, video_steps=4, seed=3) for _ in range(2))
    one = torch.ones(1)

    @torch.no_grad()
    def clean_estimate(actions: torch.Tensor) -> torch.Tensor:
        return policy.model.trunk(
            free.current, free.future, one, free.text, free.state, actions, free.value, one
        ).action_x0

    x = free.actions.clone()
    y = torch.from_numpy(policy.normalizer.action.normalize(target))[None]
    error = (y - clean_estimate(x)) * torch.from_numpy(weights).float()[None, :, None]
    vjp = torch.zeros_like(x)
    eps = 1e-2
    for i in range(x.numel()):
        step = torch.zeros(x.numel())
        step[i] = eps
        step = step.reshape(x.shape)
        vjp.view(-1)[i] = ((clean_estimate(x + step) - clean_estimate(x - step)) * error).sum() / (2 * eps)
    beta = 5.0
    free.step()
    guided.step(inpaint_target=target, inpaint_weights=weights, guidance_clip=beta)
    # x_next = x_t + (t_next - t) * (v - c * (error + vjp)), t: 1 -> 3/4
    expected = 0.25 * beta * (error + vjp)
    assert vjp.abs().max() > 1e-4
    assert torch.allclose(
        guided.actions - free.actions, expected, atol=2e-3 * float(expected.abs().max()) + 1e-6, rtol=5e-2
    )
    # moving x_t along the guidance lowers the weighted inpainting error of the clean estimate: its
    # slope there (central differences: a trained J is small, a finite step's curvature is not) is
    # -2 |J^T e|
    direction = vjp / vjp.norm()

    def weighted_error(actions: torch.Tensor) -> torch.Tensor:
        return ((y - clean_estimate(actions)) * torch.from_numpy(weights).float()[None, :, None]).pow(2).sum()

    slope = (weighted_error(x + eps * direction) - weighted_error(x - eps * direction)) / (2 * eps)
    assert slope < 0 and float(slope) == pytest.approx(-2 * float(vjp.norm()), rel=0.25)
    zero = policy.session(obs, action_steps=4, video_steps=4, seed=3)
    zero.step(inpaint_target=target, inpaint_weights=np.zeros(cfg.num_actions))
    assert torch.equal(zero.actions, free.actions)  # zero weights: no guidance
    with pytest.raises(ValueError, match="inpainting target"):
        policy.session(obs, seed=0).step(inpaint_target=np.zeros((3, 3)))


@pytest.mark.slow
def test_rtc_guidance_clips_a_target_the_model_cannot_continue(trained):
    """An executing chunk far outside the demonstrations' range (here 300 normalised units in one
    column, as a 0.1 rad offset gave in a column of scale 3e-4) pulls no harder than one at
    INPAINT_TARGET_BOUND: unclipped, its error reached the other joints through the Jacobian."""
    cfg, episodes, path, _ = trained
    policy = load_policy(path)
    obs = observation(cfg, episodes[0], 2)
    weights = np.ones(cfg.num_actions)

    def guided_step(column_value: float) -> torch.Tensor:
        normalized = np.full((cfg.num_actions, cfg.action_dim), 0.5)
        normalized[:, 0] = column_value
        session = policy.session(obs, action_steps=4, video_steps=4, seed=3)
        session.step(inpaint_target=policy.normalizer.action.denormalize(normalized), inpaint_weights=weights)
        return session.actions

    at_bound, far = guided_step(INPAINT_TARGET_BOUND), guided_step(300.0)
    assert torch.allclose(far, at_bound, atol=1e-5)
    assert far.abs().max() < 20  # one step of 1/4 with c = 5: unclipped, about 1.25 * 300
    assert not torch.allclose(guided_step(1.0), guided_step(2.0), atol=1e-3)  # in range: followed as before


@pytest.mark.slow
def test_training_is_deterministic_and_resumable(tmp_path):
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg, episodes=2, length=16)
    dataset = WindowDataset(episodes, meta, cfg)
    train_cfg = TrainConfig(video_stage_steps=6, joint_stage_steps=6, batch_size=4, log_every=2, checkpoint_every=4)
    straight = tmp_path / "straight.pt"
    train(dataset, train_cfg, straight, progress=False)

    class Interrupted(Exception):
        pass

    def stop_at_ten(step, stage, losses):
        if step == 10:
            raise Interrupted  # as if killed between the checkpoints at 8 and 12

    resumed = tmp_path / "resumed.pt"
    with pytest.raises(Interrupted):
        train(dataset, train_cfg, resumed, on_log=stop_at_ten, progress=False)
    assert torch.load(resumed, weights_only=False)["train"]["step"] == 8
    summary = train(dataset, train_cfg, resumed, resume=True, progress=False)
    assert summary["steps"] == 12
    assert_same_training_state(*(torch.load(p, weights_only=False) for p in (straight, resumed)))

    # --stop-after: the first steps of the same run, the schedule unchanged, and the run resumes from them
    stopped = tmp_path / "stopped.pt"
    assert train(dataset, replace(train_cfg, stop_after=7), stopped, progress=False)["steps"] == 7
    state = torch.load(stopped, weights_only=False)["train"]
    assert state["step"] == 7 and state["scheduler"]["last_epoch"] == 7
    assert train(dataset, train_cfg, stopped, resume=True, progress=False)["steps"] == 12
    a, b = (torch.load(p, weights_only=False) for p in (straight, stopped))
    assert all(torch.equal(t, b["model"][k]) for k, t in a["model"].items() if isinstance(t, torch.Tensor))
    # the first logged losses agree (the stop logged its partial interval: later windows differ)
    assert a["train"]["history"]["video"]["first"] == b["train"]["history"]["video"]["first"]


@pytest.mark.slow
def test_bad_observations_are_refused_before_any_math(trained):
    cfg, episodes, path, _ = trained
    policy = load_policy(path)
    ep = episodes[0]
    cases = {
        "expected (32, 32, 3) uint8": dict(
            images={**observation(cfg, ep).images, "head": np.zeros((48, 64, 3), np.uint8)}
        ),
        "missing views ['left_wrist']": dict(
            images={c: ep.rgb[0, i] for i, c in enumerate(cfg.cameras) if c != "left_wrist"}
        ),
        "not finite at ['left_joint3']": dict(state=np.where(np.arange(14) == 2, np.nan, ep.state[0])),
        "expected (14,)": dict(state=np.zeros(12)),
        "missing depth for": dict(depths=None),
        "instructions ['dance'] were not in the training data": dict(instruction="dance"),
    }
    for message, change in cases.items():
        with pytest.raises((ObservationError, ValueError), match=re.escape(message)):
            policy.predict(observation(cfg, ep, **change))


@pytest.mark.slow
def test_joint_readings_no_encoder_gives_are_refused_before_the_model(trained):
    from wam_ros.config import load_robot_config
    from wam_ros.control.chunking import ChunkScheduler
    from wam_ros.model.deploy import DeployedPolicy, UnusableJointState, chunking_config

    cfg, episodes, path, _ = trained
    policy = load_policy(path)
    robot = load_robot_config("agilex")
    deployed = DeployedPolicy(policy, robot, ChunkScheduler(chunking_config(policy)))
    frame = observation(cfg, episodes[0])
    lo, hi = robot.joint_limits()["left_joint3"]

    def observe(**joints):
        state = {**dict(zip(policy.meta.state_names, frame.state)), **joints}
        return deployed.observation(
            frame.images, frame.depths, {k: v for k, v in state.items() if v is not None}, frame.instruction
        )

    beyond = hi + 0.5 * (hi - lo)  # outside the limits, but a calibration offset could read that
    assert observe(left_joint3=beyond).state[2] == pytest.approx(beyond)
    for value, message in (
        (1e38, f"left_joint3=1e+38 (limits [{lo:.4g}, {hi:.4g}])"),
        (-1e38, "left_joint3=-1e+38"),
        (float("nan"), "left_joint3=nan"),
        (None, "left_joint3=missing"),
    ):
        with pytest.raises(UnusableJointState, match=re.escape(f"joint states unusable: {message}")):
            observe(left_joint3=value)
    assert deployed.unusable_joints({**dict(zip(policy.meta.state_names, frame.state)), "right_gripper": 7.0}) == [
        f"right_gripper=7 (limits [0, {robot.arm.gripper.stroke:.4g}])"
    ]


@pytest.mark.slow
def test_checkpoints_that_do_not_fit_are_refused(trained, tmp_path):
    cfg, _, path, _ = trained
    with pytest.raises(CheckpointMismatch, match="blocks: expected 3, checkpoint has 2"):
        load_policy(path, expect_config=tiny_config(blocks=3))
    policy = load_policy(path, expect_config=tiny_config())
    policy.check_robot(cameras=list(cfg.cameras), state_names=policy.meta.state_names, action_space="joint_position")
    with pytest.raises(CheckpointMismatch) as error:
        policy.check_robot(
            cameras=["head", "left_wrist", "front"], state_names=policy.meta.state_names[:-1], action_space="ee_delta"
        )
    text = str(error.value)
    assert "robot lacks ['right_wrist']" in text and "robot has extra ['front']" in text
    assert "robot lacks ['right_gripper']" in text and "action space: checkpoint 'joint_position'" in text
    junk = tmp_path / "junk.pt"
    torch.save({"weights": 1}, junk)
    with pytest.raises(CheckpointError, match="not a wam_ros checkpoint"):
        load_policy(junk)
    # unreadable files and interrupted trainings: one line that says what is wrong
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:4096])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for broken in (truncated, text):
        with pytest.raises(CheckpointError, match="not a readable checkpoint .*truncated, corrupted") as error:
            load_policy(broken)
        assert "\n" not in str(error.value)
    data = torch.load(path, weights_only=False)
    data["train"] = {
        **data.get("train", {}),
        "step": 3,
        "train_config": {"vae_stage_steps": 0, "video_stage_steps": 5, "joint_stage_steps": 10},
    }
    partial = tmp_path / "partial.pt"
    torch.save(data, partial)
    with pytest.raises(CheckpointError, match=r"interrupted training's checkpoint \(step 3 of 15\).*--resume"):
        load_policy(partial)
    assert load_policy(partial, allow_partial=True).meta.state_names == policy.meta.state_names


@pytest.mark.slow
def test_the_vae_stage_trains_the_vae_alone_before_the_flow_stages(tmp_path):
    """Stage 0 ("vae"): a trainable VAE learns on whole batches while every other weight stays as
    initialised; then the video and joint stages follow. A frozen VAE has no such stage."""
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg, episodes=2, length=12)
    dataset = WindowDataset(episodes, meta, cfg)
    train_cfg = TrainConfig(
        vae_stage_steps=12,
        video_stage_steps=0,
        joint_stage_steps=0,
        batch_size=4,
        lr=2e-3,
        log_every=4,
        checkpoint_every=1000,
    )
    assert [train_cfg.stage(k)[0] for k in (0, 11)] == ["vae", "vae"]
    assert TrainConfig(vae_stage_steps=2, video_stage_steps=3).stage(4) == ("video", 2, 3)
    assert TrainConfig(vae_stage_steps=2, video_stage_steps=3, joint_stage_steps=5).stage(5) == ("joint", 0, 5)
    out = tmp_path / "vae.pt"
    summary = train(dataset, train_cfg, out, progress=False)
    assert list(summary["losses"]) == ["vae"] and set(summary["losses"]["vae"]["last"]) == {
        "reconstruction",
        "latent_scale",
    }
    losses = summary["losses"]["vae"]
    assert losses["last"]["reconstruction"] < 0.8 * losses["first"]["reconstruction"], losses
    torch.manual_seed(0)  # train() draws the initial weights from seed 0
    from wam_ros.model.wam import WorldActionModel

    initial = WorldActionModel(cfg).state_dict()
    trained = torch.load(out, weights_only=False)["model"]
    changed = {
        name
        for name, tensor in initial.items()
        if isinstance(tensor, torch.Tensor) and not torch.equal(tensor, trained[name])
    }
    assert changed and all(name.startswith("vae.") for name in changed), sorted(changed)[:5]
    with pytest.raises(ValueError, match="stage steps must be >= 0"):
        TrainConfig(vae_stage_steps=-1).validate()
    frozen = tiny_config(vae_trainable=False)
    frozen_data = WindowDataset(*reversed(synthetic_dataset(frozen, episodes=1, length=8)), frozen)
    with pytest.raises(ValueError, match="VAE is frozen"):
        train(
            frozen_data,
            TrainConfig(vae_stage_steps=1, video_stage_steps=0, joint_stage_steps=0, batch_size=2),
            tmp_path / "frozen.pt",
            progress=False,
        )


def test_datasets_that_do_not_fit_are_refused(tmp_path):
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg, episodes=1, length=8)
    with pytest.raises(DatasetError, match="cameras"):
        WindowDataset(episodes, type(meta)(**{**meta.__dict__, "cameras": ["a", "b", "c"]}), cfg)
    episodes[0].state[3, 1] = np.nan
    with pytest.raises(DatasetError, match="state contains NaN"):
        save_dataset(tmp_path, meta, episodes)
    with pytest.raises(DatasetError, match="no meta.json"):
        load_dataset(tmp_path / "nothing")


def _write_tiny_yaml(directory: Path) -> Path:
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(tiny_config().to_dict()))))  # tuples as lists
    return path


@pytest.mark.slow
def test_train_cli(tmp_path):
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg, episodes=2, length=12)
    save_dataset(tmp_path / "data", meta, episodes)
    config = _write_tiny_yaml(tmp_path)
    out = tmp_path / "ckpt.pt"
    command = [
        str(VENV_BIN / "wam-ros"),
        "train",
        "--data",
        str(tmp_path / "data"),
        "--config",
        str(config),
        "--out",
        str(out),
        "--video-steps",
        "3",
        "--joint-steps",
        "3",
        "--batch-size",
        "2",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["steps"] == 6 and summary["world_size"] == 1
    assert "train 3/6 | [video]" in run.stderr and "train 6/6 | [joint]" in run.stderr and "action" in run.stderr
    assert "ETA" in run.stderr
    assert load_policy(out).meta.action_names == meta.action_names
    bad = subprocess.run(
        [*command[:3], str(tmp_path), *command[4:], "--overwrite"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "no meta.json" in bad.stderr
    # an existing --out is neither resumed nor replaced unless asked
    again = subprocess.run(
        [*command[:3], str(tmp_path / "data"), *command[4:]], capture_output=True, text=True, timeout=300
    )
    assert (
        again.returncode == 2
        and "exists: continue its training with --resume, or replace it with --overwrite" in again.stderr
    )


@pytest.mark.slow
def test_train_cli_under_torchrun_ddp(tmp_path):
    """Two CPU processes with the gloo backend: the DDP path users take with GPUs."""
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg, episodes=2, length=12)
    save_dataset(tmp_path / "data", meta, episodes)
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
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
            str(_write_tiny_yaml(tmp_path)),
            "--out",
            str(out),
            "--video-steps",
            "2",
            "--joint-steps",
            "2",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)  # rank 0 alone prints
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert load_policy(out).predict(observation(cfg, episodes[0]), seed=0).actions.shape == (cfg.num_actions, 14)
