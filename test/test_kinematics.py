"""FK of the generated URDFs against independent references: piper_sdk's DH FK and franky-sim."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wam_ros.config import load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.robots.urdf import generate_urdf


def test_piper_flange_matches_sdk_dh_table():
    from piper_sdk.kinematics.piper_fk import C_PiperForwardKinematics

    cfg = load_robot_config("agilex")
    kin = Kinematics(generate_urdf(cfg))
    sdk = C_PiperForwardKinematics()
    rng = np.random.default_rng(7)
    mount = np.array(cfg.mounts["right"].xyz)
    for _ in range(20):
        q = [rng.uniform(j.lower, j.upper) for j in cfg.arm.joints]
        T = kin.frame_pose(dict(zip(cfg.arm_joint_names("right"), q)), "right_flange")
        xyz_mm = np.array(sdk.CalFK(q)[-1][:3])
        np.testing.assert_allclose((T[:3, 3] - mount) * 1000.0, xyz_mm, atol=1e-6)


# franky switches the calling thread to SCHED_FIFO, which children inherit: keep it out of pytest.
FRANKY_SIM_PROBE = textwrap.dedent("""
    import json, sys
    import franky, franky_sim
    from franky_sim.mujoco_simulator import MujocoSimulator
    with MujocoSimulator(enable_visualization=False) as sim:
        sim_robot = sim.add_robot(initial_q=tuple(json.loads(sys.argv[1])))
        with franky_sim.SimulationServer(sim) as server:
            server.run_async()
            robot = franky.Robot(sim_robot.hostname, realtime_config=franky.RealtimeConfig.Ignore)
            print(json.dumps({"q": list(robot.current_joint_state.position),
                              "O_T_EE": robot.state.O_T_EE.matrix.tolist()}))
""")


def test_fr3_tcp_matches_franky_sim():
    pytest.importorskip("franky")
    q0 = [0.3, -0.4, 0.2, -2.0, 0.1, 1.9, 0.5]
    result = subprocess.run(
        [sys.executable, "-c", FRANKY_SIM_PROBE, json.dumps(q0)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    # the simulated arm holds q0 under its own servo: a few microradians of drift by the time it answers
    np.testing.assert_allclose(reported["q"], q0, atol=2e-5)

    cfg = load_robot_config("franka")
    kin = Kinematics(generate_urdf(cfg))
    T = kin.frame_pose(dict(zip(cfg.arm_joint_names("left"), reported["q"])), "left_tcp")
    T[:3, 3] -= cfg.mounts["left"].xyz
    np.testing.assert_allclose(T, np.array(reported["O_T_EE"]), atol=1e-5)


def test_wrist_camera_frame_is_flange_times_hand_eye():
    from wam_ros.geometry.transforms import pose_to_matrix

    cfg = load_robot_config("tienkung")
    kin = Kinematics(generate_urdf(cfg))
    home = cfg.home_positions()
    poses = kin.frame_poses(home, ["left_flange", "left_wrist_link"])
    mount = next(c for c in cfg.cameras if c.name == "left_wrist")
    np.testing.assert_allclose(
        poses["left_wrist_link"], poses["left_flange"] @ pose_to_matrix(mount.pose.xyz, mount.pose.rpy), atol=1e-9
    )


@pytest.mark.parametrize("robot", ["franka", "agilex", "tienkung"])
def test_ik_reaches_poses_of_nearby_configurations_within_the_limits(robot):
    cfg = load_robot_config(robot)
    kin = Kinematics(generate_urdf(cfg))
    home = cfg.home_positions()
    joints = cfg.arm_joint_names("right")
    limits = cfg.joint_limits()
    rng = np.random.default_rng(3)
    for _ in range(10):
        q = {
            n: float(np.clip(home[n] + rng.normal(0.0, 0.25), limits[n][0] + 0.05, limits[n][1] - 0.05)) for n in joints
        }
        target = kin.frame_pose({**home, **q}, "right_tcp")
        solution, error = kin.solve_ik("right_tcp", target, joints, home)
        assert error < 1e-4, (robot, q)
        np.testing.assert_allclose(kin.frame_pose({**home, **solution}, "right_tcp"), target, atol=1e-4)
        assert all(limits[n][0] <= solution[n] <= limits[n][1] for n in joints)
