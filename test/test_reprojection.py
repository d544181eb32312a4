"""The observed scene carried to predicted joint positions (wam_ros.geometry.reprojection), checked
against what MuJoCo renders at those positions, and the tracking response (wam_ros.control.tracking)."""

from __future__ import annotations

import numpy as np
import pytest

from wam_ros.config import CAMERA_NAMES, load_robot_config
from wam_ros.control.tracking import expected_positions, fit_tracking_gains
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.geometry.lifting import scale_intrinsics
from wam_ros.geometry.reprojection import KinematicReprojection, robot_shapes
from wam_ros.model.policy import resize_images
from wam_ros.model.world_eval import depth_errors, motion_correlation, psnr
from wam_ros.robots.urdf import generate_urdf
from wam_ros.sim.world import SimWorld

SIZE = (48, 64)  # the model's image size here (height, width)


@pytest.fixture(scope="module")
def agilex():
    robot = load_robot_config("agilex")
    urdf = generate_urdf(robot)
    world = SimWorld(robot, urdf)
    kinematics = Kinematics(urdf)
    frames = [f"{c}_color_optical_frame" for c in CAMERA_NAMES]
    yield robot, world, KinematicReprojection(kinematics, urdf, frames)
    world.close()


def _views(world: SimWorld, joints: dict[str, float]):
    """The three views at the model's size, resized as DeployedPolicy.observation resizes live frames."""
    world.set_joint_positions(joints)
    frames = [world.render(c) for c in CAMERA_NAMES]
    rgb = np.stack([resize_images(f.rgb[None], SIZE, "area")[0] for f in frames])
    depth = np.stack([resize_images(f.depth[None], SIZE, "nearest")[0] for f in frames])
    K = np.stack([scale_intrinsics(f.K, f.rgb.shape[:2], SIZE) for f in frames])
    return rgb, depth, K


def test_the_urdf_shapes_and_which_link_a_point_lies_on(agilex):
    robot, _, reprojection = agilex
    shapes = robot_shapes(generate_urdf(robot))
    kinds = {s.kind for s in shapes}
    assert kinds == {"box", "cylinder", "sphere"}  # the generated URDFs have no meshes
    assert {"left_link2", "left_flange", "left_finger1", "right_link6"} <= {s.link for s in shapes}
    home = robot.home_positions()
    links, _ = reprojection._poses(home)
    upper_arm = links[reprojection.links.index("left_link2")]
    inside = upper_arm[:3, :3] @ [0.14, 0.0, 0.0] + upper_arm[:3, 3]  # on the axis of its cylinder
    far = np.array([3.0, 3.0, 3.0])
    labels = reprojection.label(np.stack([inside, far, [np.nan] * 3]), links)
    assert [reprojection.links[labels[0]], labels[1], labels[2]] == ["left_link2", -1, -1]
    # between the fingers (what a gripper holds): moves with the hand while they are apart
    (region,) = [g for g in reprojection.grasps if g.joint == "left_gripper"]
    assert region.link == "left_flange"
    hand = links[reprojection.links.index("left_flange")] @ region.origin
    held = hand[:3, 3]
    opened, closed = {**home, "left_gripper": 0.03}, {**home, "left_gripper": 0.0}
    assert reprojection.links[reprojection.label(held[None], links, opened)[0]] == "left_flange"
    links_closed, _ = reprojection._poses(closed)
    # closed: a finger itself is there (the first finger's shapes come first in the URDF)
    assert reprojection.links[reprojection.label(held[None], links_closed, closed)[0]] == "left_finger1"


def test_a_mesh_link_counts_as_a_capsule_to_its_child_joints():
    urdf = """<robot name="r"><link name="base"/>
      <link name="upper"><collision><geometry><mesh filename="package://x/upper.stl"/></geometry></collision></link>
      <link name="lower"/>
      <joint name="j0" type="fixed"><parent link="base"/><child link="upper"/></joint>
      <joint name="j1" type="revolute"><origin xyz="0 0 0.4"/><parent link="upper"/><child link="lower"/></joint>
    </robot>"""
    (shape,) = robot_shapes(urdf)
    assert (shape.link, shape.kind) == ("upper", "capsule") and shape.end.tolist() == [0.0, 0.0, 0.4]


def test_carrying_to_the_present_returns_the_observation(agilex):
    robot, world, reprojection = agilex
    home = robot.home_positions()
    rgb, depth, K = _views(world, home)
    carried, carried_depth = reprojection.render(rgb, depth, K, home, [home, home])
    assert np.array_equal(carried, np.repeat(rgb[:, None], 2, axis=1))
    assert np.array_equal(carried_depth, np.repeat(depth[:, None], 2, axis=1))


@pytest.mark.parametrize(
    "motion", [{"left_joint1": 0.12, "left_joint6": 0.15}, {"left_joint2": 0.1, "right_joint1": -0.1}]
)
def test_the_carried_scene_matches_what_the_simulator_renders_there(agilex, motion):
    """An arm moves (its wrist camera with it): the observed scene carried to the new joint positions
    is closer to MuJoCo's render there than the observation itself, and its change from the
    observation follows the true change. Where the camera moves (a wrist), clearly so, depth too; in
    the head camera only the arms move, a few pixels wide at this size with blurred edges: less so."""
    robot, world, reprojection = agilex
    home = robot.home_positions()
    moved = {**home, **{n: home[n] + d for n, d in motion.items()}}
    rgb, depth, K = _views(world, home)
    true_rgb, true_depth, _ = _views(world, moved)
    carried, carried_depth = reprojection.render(rgb, depth, K, home, [moved])
    for v, cam in enumerate(CAMERA_NAMES):
        still_psnr, carried_psnr = psnr(rgb[v], true_rgb[v]), psnr(carried[v, 0], true_rgb[v])
        correlation = motion_correlation(carried[v, 0].astype(float) - rgb[v], true_rgb[v].astype(float) - rgb[v])
        if cam == "head":
            assert carried_psnr > still_psnr and correlation > 0.4, (cam, carried_psnr, still_psnr, correlation)
            continue
        assert carried_psnr > still_psnr + 2.5 and correlation > 0.7, (cam, carried_psnr, still_psnr, correlation)
        still_rel, _ = depth_errors(depth[v], true_depth[v])
        carried_rel, _ = depth_errors(carried_depth[v, 0], true_depth[v])
        assert carried_rel < still_rel, (cam, carried_rel, still_rel)


def test_tracking_gains_recover_a_first_order_response():
    rng = np.random.default_rng(0)
    gains = np.array([0.3, 0.7, 1.0])
    episodes = []
    for _ in range(3):
        targets = np.cumsum(rng.normal(0, 0.05, (50, 3)), axis=0)
        states = np.zeros((50, 3))
        for t in range(49):
            states[t + 1] = states[t] + gains * (targets[t] - states[t])
        episodes.append((states, targets))
    assert fit_tracking_gains(episodes) == pytest.approx(gains, abs=1e-9)
    # a joint never commanded away from where it is: taken as following at once
    still = [(np.zeros((10, 1)), np.zeros((10, 1)))]
    assert fit_tracking_gains(still).tolist() == [1.0]
    with pytest.raises(ValueError, match="differ"):
        fit_tracking_gains([(np.zeros((5, 2)), np.zeros((5, 3)))])
    start, chunk = np.zeros(2), np.ones((3, 2))
    assert np.array_equal(expected_positions(start, chunk, None), chunk)  # a checkpoint without a fit
    assert expected_positions(start, chunk, np.array([0.5, 1.0])).tolist() == [[0.5, 1.0], [0.75, 1.0], [0.875, 1.0]]


def test_training_stores_how_the_joints_followed_and_deployment_places_the_future_there(briefly_trained):
    from wam_ros.control.chunking import ChunkScheduler
    from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config
    from wam_ros.model.policy import Observation, load_policy

    cfg, meta, episodes, checkpoint = briefly_trained
    policy = load_policy(checkpoint)
    names = policy.meta.action_names
    columns = ([meta.state_names.index(n) for n in names], [meta.action_names.index(n) for n in names])
    fitted = fit_tracking_gains([(ep.state[:, columns[0]], ep.action[:, columns[1]]) for ep in episodes])
    assert policy.meta.tracking_gains == pytest.approx(fitted.tolist())
    deployed = DeployedPolicy(policy, load_robot_config("agilex"), ChunkScheduler(chunking_config(policy)))
    state, chunk = episodes[0].state[3], episodes[0].action[4 : 4 + cfg.num_actions]
    expected = expected_positions(state[columns[0]], chunk, fitted)
    assert deployed.expected_joints(state, chunk) == pytest.approx(expected)
    # what is published: the carried scene plus the model's change, or (future="model") the model's own
    obs = Observation(
        images=dict(zip(policy.cfg.cameras, episodes[0].rgb[3])),
        state=state,
        instruction=episodes[0].task,
        depths=dict(zip(policy.cfg.cameras, episodes[0].depth[3])),
    )
    prediction = policy.predict(obs, seed=0)
    K = np.stack([np.array([[30.0, 0.0, 15.5], [0.0, 30.0, 15.5], [0.0, 0.0, 1.0]])] * len(policy.cfg.cameras))
    imagined = deployed.imagined_future(prediction, obs, chunk, K)
    assert imagined.future_rgb.shape == prediction.future_rgb.shape
    assert imagined.future_depth.shape == prediction.future_depth.shape
    assert imagined.actions is prediction.actions and imagined.value == prediction.value
    as_model = DeployedPolicy(
        policy, load_robot_config("agilex"), ChunkScheduler(chunking_config(policy)), DeployConfig(future="model")
    )
    assert as_model.imagined_future(prediction, obs, chunk, K) is prediction
    with pytest.raises(ValueError, match="future 'dream'"):
        DeployedPolicy(
            policy, load_robot_config("agilex"), ChunkScheduler(chunking_config(policy)), DeployConfig(future="dream")
        )
    frames = deployed.future_joint_maps(state, chunk)  # one per latent frame, at its last action
    assert len(frames) == cfg.horizon
    for j, joints in enumerate(frames, start=1):
        assert [joints[n] for n in names] == pytest.approx(expected[cfg.actions_per_frame * j - 1])


def test_the_reprojection_benchmark_runs_in_short_form():
    from wam_ros.perf.reprojection import bench_reprojection

    result = bench_reprojection(repeats=1)
    assert set(result["median"]) == {"32x32", "64x48", "160x128"}
    for size in result["median"].values():
        assert size["reprojection_ms"] > 0 and size["lift_ms"] > 0


def test_glitching_depth_and_wrong_shapes(agilex):
    """NaN, inf, negative and absurd depths are no depth (the output stays finite and within what was
    observed); mismatched arrays are refused with their shapes."""
    robot, world, reprojection = agilex
    home = robot.home_positions()
    rgb, depth, K = _views(world, home)
    glitched = depth.copy()
    glitched[0, :4] = np.nan
    glitched[1, :4] = np.inf
    glitched[2, :4] = -1.0
    glitched[0, 4:8] = 1e38
    moved = {**home, "left_joint1": home["left_joint1"] + 0.1}
    carried, carried_depth = reprojection.render(rgb, glitched, K, home, [home, moved])
    assert np.isfinite(carried_depth).all() and carried_depth.max() <= np.nanmax(depth) + 1.0
    assert np.array_equal(carried[:, 0], rgb)  # at the present: the observed colours, glitches or not
    with pytest.raises(ValueError, match="shapes do not agree"):
        reprojection.render(rgb[:2], depth, K, home, [home])
    with pytest.raises(ValueError, match="shapes do not agree"):
        reprojection.render(rgb, depth[..., :-1], K, home, [home])
