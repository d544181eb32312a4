"""Test-session environment: an isolated DDS domain on localhost (in the range whose ports no
ephemeral socket can take), the package's Fast DDS profile, EGL,
and no zombie Fast DDS shared-memory files.

Set before any test imports rclpy, and inherited by the processes that tests start, so that
concurrent test runs (or a bring-up left running by a developer) never see each other.
Also the session's fixtures. Helpers the tests share are in test/support (support.ros: ProbeNode,
stop_process, SPARE_DOMAIN_IDS); this file imports neither rclpy nor torch at collection.
"""

import os
import subprocess
import sys
import time

import pytest

# One torch thread per test process, before anything imports torch: the session's bring-up keeps a
# core busy, and two threads on the other one thrash (a tiny model's step ran 9x slower than with
# one). Inherited by the processes tests start; `wam-ros train --threads N` still sets its own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from wam_ros.ros.system import dds_environment, isolated_domain_id

# The session's bring-up (fixture below) owns ROS_DOMAIN_ID; tests that start their own simulator
# (which refuses a second /clock) use the next two (support.ros.SPARE_DOMAIN_IDS).
os.environ.setdefault("ROS_DOMAIN_ID", str(isolated_domain_id(os.getpid(), span=3)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.update(dds_environment(os.environ))  # the same Fast DDS profile as the nodes
os.environ.setdefault("MUJOCO_GL", "egl")

# Participants that were killed leave their shared-memory ports in /dev/shm. A later participant
# that draws the same port logs "Failed init_port fastrtps_port<N>: open_and_lock_file failed",
# and on a machine with some 300 such files two fresh-clone runs lost service replies and
# teleop chunks of processes the tests had just started, each time after that error. `fastdds
# shm clean` removes only ports and segments no live process holds.
_FASTDDS = os.path.join(os.path.dirname(sys.executable), "fastdds")
if os.path.exists(_FASTDDS):
    subprocess.run([_FASTDDS, "shm", "clean"], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def bringup():
    from support.ros import RunningBringup, stop_process

    arguments = {"robot": "franka", "motion": "scripted", "namespace": "lab"}
    process = subprocess.Popen(
        [sys.executable, "-m", "wam_ros.cli", "bringup", *(f"{k}:={v}" for k, v in arguments.items())]
    )
    running = RunningBringup(process, arguments)
    try:
        deadline = time.monotonic() + 60.0
        expected = {("sim", "/lab"), ("scripted_motion", "/lab"), ("supervisor", "/lab"), ("sync", "/lab")}
        while not expected <= set(running.probe.get_node_names_and_namespaces()):
            assert time.monotonic() < deadline, f"bringup's nodes {expected} never appeared on the graph"
            running.spin_for(0.2)
        yield running
    finally:
        try:
            stop_process(process)
        finally:
            running.close()


@pytest.fixture(scope="session")
def briefly_trained(tmp_path_factory):
    """(cfg, meta, episodes, checkpoint): a tiny model (agilex's 14 joints, always the predictive
    expert) trained for 30 steps on synthetic episodes, shared by the tests of what runs around a
    checkpoint (the policy node, the prediction figure, the world-model evaluation): the model is
    not under test there. Read-only: a test that needs another checkpoint writes its own."""
    from support.model_data import synthetic_dataset, tiny_config
    from wam_ros.model.train import TrainConfig, WindowDataset, train

    cfg = tiny_config(gate_threshold=0.0)  # the predictive expert's chunks are the RTC-guided ones
    meta, episodes = synthetic_dataset(cfg)
    out = tmp_path_factory.mktemp("briefly_trained") / "tiny.pt"
    train(
        WindowDataset(episodes, meta, cfg),
        TrainConfig(video_stage_steps=10, joint_stage_steps=20, batch_size=4, checkpoint_every=1000),
        out,
        progress=False,
    )
    return cfg, meta, episodes, out


def pytest_collection_modifyitems(config, items):
    """The tests on the session's bring-up run last, one after another: its simulator keeps a core
    busy from its start to the end of the session, and the training tests that alphabetically
    follow the first bring-up test ran at a third of their speed beside it."""
    items.sort(key=lambda item: "bringup" in getattr(item, "fixturenames", ()))
