"""PolicyLoop: what policy_node and the in-process benchmark both do between their inputs and the
deployed checkpoint (ROS-free; a tiny random model, real inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.model_data import TASK, synthetic_dataset, tiny_config
from wam_ros.config import load_robot_config
from wam_ros.control.chunking import ChunkScheduler
from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config
from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy
from wam_ros.model.policy_loop import PolicyLoop
from wam_ros.model.train import WindowDataset
from wam_ros.model.wam import WorldActionModel


@pytest.fixture(scope="module")
def policy_and_episode():
    torch.manual_seed(0)
    cfg = tiny_config(gate_threshold=0.0)  # the predictive expert: its chunks are handed over with RTC
    meta, episodes = synthetic_dataset(cfg, episodes=1)
    model = WorldActionModel(cfg)
    model.text_encoder.register([TASK])
    policy = WorldActionPolicy(
        model,
        WindowDataset(episodes, meta, cfg).normalizer,
        CheckpointMeta(
            meta.cameras, list(cfg.image_size), meta.state_names, meta.action_names, meta.action_space, meta.fps
        ),
    )
    return policy, episodes[0]


def make_loop(policy_and_episode, seed: int = -1) -> tuple[PolicyLoop, list[tuple[str, str]]]:
    policy, _ = policy_and_episode
    deployed = DeployedPolicy(
        policy,
        load_robot_config("agilex"),
        ChunkScheduler(chunking_config(policy)),
        DeployConfig(action_steps=2, video=False),
    )
    problems: list[tuple[str, str]] = []
    loop = PolicyLoop(
        deployed,
        TASK,
        max_observation_age=0.5,
        seed=seed,
        on_problem=lambda cause, detail: problems.append((cause, detail)),
    )
    return loop, problems


def feed(loop: PolicyLoop, episode, stamp: float, t: int = 0) -> None:
    cams = loop.deployed.policy.cfg.cameras
    loop.observe(
        stamp,
        ({c: episode.rgb[t, i] for i, c in enumerate(cams)}, {c: episode.depth[t, i] for i, c in enumerate(cams)}, {}),
    )
    loop.update_joints(loop.deployed.policy.meta.state_names, episode.state[t].tolist())


def run(loop: PolicyLoop, job, now: float) -> list:
    chunks = []
    loop.infer(job, lambda: now, chunks.append)
    return chunks


def test_only_a_fresh_usable_observation_starts_an_inference(policy_and_episode):
    loop, problems = make_loop(policy_and_episode)
    _, episode = policy_and_episode
    assert loop.job(0.0) is None and problems == []  # nothing seen yet: nothing to report
    loop.observe_degraded(0.0, "head camera silent for 0.4 s")
    assert loop.job(0.0) is None
    assert problems[-1] == ("observation degraded", "sync_node marked the set degraded: head camera silent for 0.4 s")
    feed(loop, episode, 1.0)
    assert loop.job(1.6) is None and problems[-1][0] == "observation stale"
    assert "0.600 s old (max_observation_age 0.5 s)" in problems[-1][1]
    loop.update_joints(["left_joint1"], [float("nan")])
    assert loop.job(1.1) is None and problems[-1][0] == "joint state missing, NaN or out of range"
    assert "left_joint1=nan" in problems[-1][1]
    loop.update_joints(["left_joint1", "left_joint2"], [0.1])
    assert problems[-1] == ("joint_states malformed", "2 names, 1 positions")
    feed(loop, episode, 1.0)
    loop.reject_observation("observation malformed", "head: JPEG truncated")
    assert loop.job(1.1) is None  # the set before the broken one is not acted on
    feed(loop, episode, 2.0)
    first, second = loop.job(2.1), loop.job(2.2)
    assert (first.chunk_id, second.chunk_id) == (1, 2) and first.stamp == 2.0
    np.testing.assert_allclose(first.obs.state, episode.state[0])


def test_a_seed_makes_every_chunks_noise_reproducible_and_minus_one_draws_fresh_noise(policy_and_episode):
    _, episode = policy_and_episode
    seeds = []
    for seed in (7, 7, -1):
        loop, _ = make_loop(policy_and_episode, seed)
        feed(loop, episode, 0.0)
        seeds.append([loop.job(0.0).seed for _ in range(3)])
    assert seeds[0] == seeds[1] and seeds[0][0] == 7 and len(set(seeds[0])) == 3
    assert seeds[2] == [None, None, None]


def test_no_inference_starts_while_the_supervisor_rolls_back_or_is_estopped(policy_and_episode):
    loop, _ = make_loop(policy_and_episode)
    assert loop.due(0.0)  # nothing executes: due at once
    for mode, due in (
        ("ROLLING_BACK", False),
        ("ESTOP", False),
        ("RESAMPLING", True),
        ("HOLD", True),
        ("RUNNING", True),
    ):
        loop.supervisor_state(mode, 0)
        assert loop.due(0.0) is due, mode


def test_a_refusal_of_the_executing_chunk_drops_its_plan_once(policy_and_episode):
    loop, _ = make_loop(policy_and_episode, seed=1)
    _, episode = policy_and_episode
    feed(loop, episode, 0.0)
    job = loop.job(0.0)
    (ready,) = run(loop, job, 0.0)
    assert loop.deployed.scheduler.executing.chunk_id == job.chunk_id
    assert not loop.due(0.05)  # the executing chunk covers the next steps
    assert loop.supervisor_state("RUNNING", 99) is False  # not the executing chunk: nothing changes
    assert loop.supervisor_state("HOLD", job.chunk_id) is True
    assert loop.deployed.scheduler.executing is None and loop.refusals == 1 and loop.due(0.05)
    assert loop.supervisor_state("HOLD", job.chunk_id) is False  # the same report again: counted once
    assert loop.refusals == 1


def test_a_resample_discards_the_inference_in_flight_and_conditions_on_the_restored_state(policy_and_episode):
    loop, _ = make_loop(policy_and_episode, seed=2)
    policy, episode = policy_and_episode
    names = list(policy.meta.state_names)
    feed(loop, episode, 0.0)
    in_flight = loop.job(0.0)
    bad = loop.resample(["left_joint1", "elbow"], [0.1, float("inf")])
    assert not bad.accepted and "unknown joints ['elbow']" in bad.message
    restored = episode.state[5].tolist()  # where the rollback returned the arms
    reply = loop.resample(names, restored)
    assert reply.accepted and reply.chunk_id == in_flight.chunk_id + 1
    assert reply.message == f"chunk {reply.chunk_id} will be sampled from the restored state"
    assert not loop.current(in_flight) and run(loop, in_flight, 0.0) == []  # finished, never handed on
    assert loop.due(0.0)  # the resampled chunk is due at once
    resampled = loop.job(0.0)
    assert resampled.chunk_id == reply.chunk_id and loop.current(resampled)
    np.testing.assert_allclose(resampled.obs.state, restored)
    (ready,) = run(loop, resampled, 0.0)
    assert ready.chunk_id == reply.chunk_id
    # once used, the restored state is not applied again
    np.testing.assert_allclose(loop.job(0.0).obs.state, episode.state[0])
