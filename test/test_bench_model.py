"""`wam-ros bench policy-model` / `train-model` (issue 20's benchmarks) in short form on this CPU, and the
policy's `sampler` choice travelling from the launch arguments and the node's parameter to predict()."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter

from support.model_data import TASK, meta_for, observation, synthetic_dataset, tiny_config
from wam_ros.cli import main
from wam_ros.config import ConfigError, load_robot_config
from wam_ros.control.chunking import ChunkScheduler
from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config
from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy
from wam_ros.model.train import WindowDataset
from wam_ros.model.wam import WorldActionModel
from wam_ros.ros.system import SystemOptions, describe_system

pytestmark = pytest.mark.ros

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="tests what a machine without CUDA reports")


def test_policy_model_bench_on_demo_measures_ans_against_synchronous():
    from wam_ros.perf.policy_model import ACTION_LATENCY_ANCHORS_MS, bench_policy_model

    # short form: T_a = 1 of T_O = 4 passes, one repeat after the warm-up
    result = bench_policy_model("demo", "cpu", "fp32", repeats=1, action_steps=1, video_steps=4)
    assert "skipped" not in result
    latency = result["action_latency_ms_p50"]
    assert 0 < latency["ans"] < latency["synchronous"]
    assert result["synchronous_over_ans"] == pytest.approx(latency["synchronous"] / latency["ans"], rel=0.01)
    video = result["video_latency_ms_p50"]
    assert video["all_passes_depth_and_decode"] > video["of_which_vae_decode"] > 0
    assert video["all_passes_depth_and_decode"] > latency["ans"]
    assert result["pass_ms_p50"]["video_and_action_experts"] > 0 and result["pass_ms_p50"]["video_expert_only"] > 0
    assert result["memory"]["peak"]["process_rss_peak_mib"] > 0
    assert (
        result["anchors_action_latency_ms"] == ACTION_LATENCY_ANCHORS_MS == {"x_wam_rtx3090": 1033.0, "fastwam": 190.0}
    )
    assert result["ans_over_anchor"]["x_wam_rtx3090"] == pytest.approx(latency["ans"] / 1033.0, abs=1e-3)
    assert result["parameters"]["total"] < 5_000_000 and result["steps"] == {"action_steps_Ta": 1, "video_steps_TO": 4}


@NO_GPU
def test_a_cuda_request_without_a_gpu_prints_what_it_skipped_and_exits_0(capsys):
    assert main(["bench", "policy-model", "--config", "xwam", "--device", "cuda", "--dtype", "bf16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["skipped"] is True and "no CUDA device" in result["reason"]
    assert (result["config"], result["device"], result["dtype"]) == ("xwam", "cuda", "bf16")
    assert result["anchors_action_latency_ms"]["x_wam_rtx3090"] == 1033.0


def test_a_paper_size_config_on_the_cpu_is_refused_unless_forced(capsys):
    assert main(["bench", "policy-model", "--config", "xwam", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "xwam has 8.95 B parameters" in error and "--force" in error
    # options a target does not take are named, not ignored
    assert main(["bench", "lift", "--config", "demo"]) == 2
    assert "bench lift takes no --config" in capsys.readouterr().err


@NO_GPU
def test_train_model_without_a_gpu_reports_the_memory_plan_for_both_micro_batches(monkeypatch):
    """The dry-run estimate comes from memory_plan itself, called once per micro-batch with the
    benchmark's setting (a stand-in here: the real plan of xwam takes minutes to trace on 2 cores)."""
    import wam_ros.model.memory_plan as memory_plan
    from wam_ros.perf.train_model import bench_train_model

    calls = []

    def plan(cfg, gpus, micro_batch, strategy, precision, checkpointing):
        calls.append((cfg.video.width, gpus, micro_batch, strategy, precision, checkpointing))
        return {
            "parameters": {"total": 9},
            "selected": {"per_gpu_gib": 10.0 * micro_batch},
            "per_gpu_gib": {"fsdp": {"bf16": {"weights": 1.0}}},
        }

    monkeypatch.setattr(memory_plan, "memory_plan", plan)
    result = bench_train_model("xwam", "cuda", gpus=4)
    assert calls == [(3072, 4, 1, "fsdp", "bf16", True), (3072, 4, 8, "fsdp", "bf16", True)]
    assert result["skipped"] is True and result["gpus"] == 4 and result["parameters"] == {"total": 9}
    assert result["micro_batch_1"]["planned_gib_per_gpu"] == 10.0
    assert result["micro_batch_8"]["planned_gib_per_gpu"] == 80.0 and "measured" not in result["micro_batch_8"]
    assert bench_train_model("xwam", "cpu", gpus=4)["reason"] == "training throughput is measured on GPUs only"


# ---- the sampler, from the launch arguments to predict() ---------------------------------------------
@pytest.fixture(scope="module")
def tiny_policy() -> WorldActionPolicy:
    torch.manual_seed(0)
    cfg = tiny_config(gate_threshold=0.0)  # always the predictive expert: its actions are sampled
    meta, episodes = synthetic_dataset(cfg)
    model = WorldActionModel(cfg)
    model.text_encoder.register([TASK])
    return WorldActionPolicy(
        model,
        WindowDataset(episodes, meta, cfg).normalizer,
        CheckpointMeta(
            meta.cameras, list(cfg.image_size), meta.state_names, meta.action_names, meta.action_space, meta.fps
        ),
    )


def deployed_chunk(policy: WorldActionPolicy, sampler: str) -> np.ndarray:
    deployed = DeployedPolicy(
        policy,
        load_robot_config("agilex"),
        ChunkScheduler(chunking_config(policy)),
        DeployConfig(action_steps=3, video=False, sampler=sampler),
    )
    _, episodes = synthetic_dataset(policy.cfg, episodes=1)
    chunks = []
    deployed.infer(
        observation(policy.cfg, episodes[0]),
        0.0,
        lambda: 0.0,
        lambda ready: chunks.append(ready.targets),
        chunk_id=1,
        seed=3,
    )
    (chunk,) = chunks
    return chunk


def test_the_deployed_sampler_reaches_predict(tiny_policy):
    assert tiny_policy.cfg.sampler == "euler"
    euler, unipc, default = (deployed_chunk(tiny_policy, s) for s in ("euler", "unipc", ""))
    np.testing.assert_array_equal(default, euler)  # "": the checkpoint's config
    assert np.abs(unipc - euler).max() > 1e-6  # the same noise, integrated another way
    with pytest.raises(ValueError, match="sampler 'ddim'"):
        DeployedPolicy(
            tiny_policy,
            load_robot_config("agilex"),
            ChunkScheduler(chunking_config(tiny_policy)),
            DeployConfig(sampler="ddim"),
        )


def test_the_sampler_launch_argument_becomes_the_policy_nodes_parameter():
    def policy_parameters(**arguments: str) -> dict:
        specs = describe_system(SystemOptions.from_arguments({"checkpoint": "tiny.pt", **arguments}))
        return next(s.parameters for s in specs if s.executable == "policy_node")

    assert policy_parameters()["sampler"] == ""
    assert policy_parameters(sampler="unipc")["sampler"] == "unipc"
    with pytest.raises(ConfigError, match="sampler: unknown value 'ddim'; allowed: , euler, unipc"):
        SystemOptions.from_arguments({"sampler": "ddim"})


def test_the_policy_node_hands_its_sampler_and_future_parameters_to_the_deployed_policy(tiny_policy, tmp_path):
    from wam_ros.ros.nodes.policy_node import PolicyNode

    path = tmp_path / "tiny.pt"
    tiny_policy.save(path)
    assert meta_for(tiny_policy.cfg).state_names == tiny_policy.meta.state_names  # the agilex joints
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        common = [Parameter("checkpoint", value=str(path)), Parameter("robot", value="agilex")]
        node = PolicyNode(context=context, parameter_overrides=[*common, Parameter("sampler", value="unipc")])
        assert node.deployed.config.sampler == "unipc" and node.deployed.config.future == "imagined"
        node.destroy_node()
        node = PolicyNode(context=context, parameter_overrides=[*common, Parameter("predicted_future", value="model")])
        assert node.deployed.config.future == "model"
        node.destroy_node()
        with pytest.raises(ConfigError, match="parameter predicted_future: unknown value 'dream'"):
            PolicyNode(context=context, parameter_overrides=[*common, Parameter("predicted_future", value="dream")])
        with pytest.raises(ConfigError, match="parameter sampler: unknown value 'ddim'"):
            PolicyNode(context=context, parameter_overrides=[*common, Parameter("sampler", value="ddim")])
    finally:
        rclpy.try_shutdown(context=context)
