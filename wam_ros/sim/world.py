"""MuJoCo simulation of a dual-arm setup built from the package's URDF (ROS-free).

The world is the URDF (arms, grippers, camera frames) plus the table and objects from the
robot config. Joints are driven by position servos; cameras render RGB and metric depth
offscreen on the CPU (MUJOCO_GL=egl, shadows off for speed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from transforms3d.euler import euler2quat

os.environ.setdefault("MUJOCO_GL", "egl")
import mujoco  # noqa: E402  (MUJOCO_GL must be set before the import)

from wam_ros.config import CAMERA_NAMES, ConfigError, RobotConfig  # noqa: E402


def scene_heights(robot: RobotConfig) -> tuple[float, dict[str, float]]:
    """(table top z, object -> half height) from the robot's scene config."""
    t = robot.table
    return float(t.pose.xyz[2] + t.size[2]), {o.name: float(o.size[2]) for o in robot.objects}


class CommandError(ValueError):
    """A joint command was rejected; the simulated robot keeps its previous targets."""


@dataclass(frozen=True)
class SimConfig:
    width: int = 320
    height: int = 256
    camera_rate: float = 15.0
    physics_dt: float = 0.002
    # vertical field of view per camera (deg): D435-like head camera, wide wrist cameras
    fovy: dict[str, float] = field(default_factory=lambda: {"head": 58.0, "left_wrist": 65.0, "right_wrist": 65.0})
    depth_range: tuple[float, float] = (0.05, 4.0)
    # Joint position servos: natural frequency and damping ratio, with each joint's own inertia,
    # as stiff as a real arm's position loop; servo_kp is the stiffness floor (a gripper's squeeze
    # on a held object is servo_kp x its closing error, up to the gripper's effort).
    servo_bandwidth_hz: float = 8.0
    servo_damping_ratio: float = 1.0
    servo_kp: float = 400.0
    board: BoardMount | None = None  # a calibration board (visual only), for `wam-ros calibrate`'s checks

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 16 <= value <= 4096:
                raise ConfigError(f"sim.{name}: expected an integer in [16, 4096], got {value!r}")
        for name in ("camera_rate", "physics_dt", "servo_kp", "servo_bandwidth_hz", "servo_damping_ratio"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"sim.{name}: must be > 0, got {getattr(self, name)!r}")


# Table textures the Random condition switches between (index into TABLE_TEXTURES; -1: plain).
TABLE_TEXTURES = ("checker", "gradient", "noise")
DISTRACTOR_SLOTS = 3
HIDDEN = (0.2, 0.0, -0.4)  # under the table top: out of every camera's view and out of reach
# (contype, conaffinity): a contact needs one geom's contype to share a bit with the other's conaffinity
ROBOT_COLLISION = (2, 1)  # the scene, never the robot itself
SCENE_COLLISION = (1, 3)  # the scene and the robot
FALLING_COLLISION = (4, 1)  # the scene only
CLEARANCE = 0.002  # m between a fallen object and the robot before it is solid to it again


@dataclass(frozen=True)
class Distractor:
    """A static clutter box on the table."""

    xyz: tuple[float, float, float]
    half_size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class Appearance:
    """What the Random condition varies besides object positions; the defaults are the Clean scene."""

    light_diffuse: float = 0.7
    light_ambient: float = 0.3
    light_direction: tuple[float, float, float] = (-0.2, 0.0, -1.0)
    table_texture: int = -1  # index into TABLE_TEXTURES, -1: plain
    table_rgba: tuple[float, float, float, float] = (0.72, 0.58, 0.42, 1.0)
    texture_repeat: float = 4.0
    object_rgba: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # else the config's
    distractors: tuple[Distractor, ...] = ()


@dataclass(frozen=True)
class JointTargets:
    """A validated position command: actuator indices and their targets (rad, or m for grippers)."""

    actuators: np.ndarray
    positions: np.ndarray


@dataclass(frozen=True)
class BoardMount:
    """A flat printed target (a calibration board) in the scene: `texture` is its image (PNG), laid
    over `size` metres (image width along the board's x, height along its y) with the image's
    top-left corner at the mount's origin, facing +z; fixed to the body `parent` at xyz/rpy."""

    texture: str
    size: tuple[float, float]
    parent: str = "world"
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CameraFrame:
    """One rendered view: RGB uint8 HxWx3, depth float32 metres HxW (0 = no return), intrinsics."""

    name: str
    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray  # 3x3 pinhole intrinsics

    @property
    def frame_id(self) -> str:
        return f"{self.name}_color_optical_frame"


def _mujoco_urdf(urdf: str) -> str:
    """Keep fixed-joint frames as bodies (cameras and TCPs live there) and skip visual duplicates."""
    tag_end = urdf.index(">", urdf.index("<robot")) + 1
    extension = (
        '<mujoco><compiler angle="radian" fusestatic="false" discardvisual="true" '
        'autolimits="true" balanceinertia="true"/></mujoco>'
    )
    return urdf[:tag_end] + extension + urdf[tag_end:]


class SimWorld:
    """The simulated robot: set joint targets, step physics, read joints, render cameras."""

    def __init__(self, robot: RobotConfig, urdf: str, config: SimConfig | None = None):
        self.robot = robot
        self.config = config or SimConfig()
        self.joint_names = robot.joint_names
        self.model = self._build(urdf)
        self.data = mujoco.MjData(self.model)
        self._qadr = np.array([self.model.joint(n).qposadr[0] for n in self.joint_names])
        self._vadr = np.array([self.model.joint(n).dofadr[0] for n in self.joint_names])
        self._act = np.array([self.model.actuator(n).id for n in self.joint_names])
        limits = robot.joint_limits()
        self.lower = np.array([limits[n][0] for n in self.joint_names])
        self.upper = np.array([limits[n][1] for n in self.joint_names])
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self._robot_geoms = np.flatnonzero(self.model.geom_contype == ROBOT_COLLISION[0])
        self._falling: set[int] = set()  # geoms of objects passing through the robot (let_fall)
        self.reset()
        self._tune_servos()
        # OpenGL contexts belong to the thread that creates them: renderers are made on first
        # use, and close() must run on that same thread.
        self._renderers: tuple[mujoco.Renderer, mujoco.Renderer] | None = None

    def _build(self, urdf: str) -> mujoco.MjModel:
        cfg, robot = self.config, self.robot
        spec = mujoco.MjSpec.from_string(_mujoco_urdf(urdf))
        spec.option.timestep = cfg.physics_dt
        # URDF visuals were skipped while parsing; compiling with discardvisual would also drop
        # the table materials added below
        spec.compiler.discardvisual = False
        # the offscreen framebuffer must hold the largest rendered image
        spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, cfg.width)
        spec.visual.global_.offheight = max(spec.visual.global_.offheight, cfg.height)
        world = spec.worldbody
        clean = Appearance()  # the scene as built; apply_appearance changes it per episode
        world.add_light(
            name="sun",
            pos=[0.3, 0.0, 2.5],
            dir=list(clean.light_direction),
            type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
            diffuse=[clean.light_diffuse] * 3,
            ambient=[clean.light_ambient] * 3,
            castshadow=False,
        )
        world.add_geom(
            name="floor",
            type=mujoco.mjtGeom.mjGEOM_PLANE,
            size=[3.0, 3.0, 0.1],
            pos=[0.0, 0.0, -0.75],
            rgba=[0.35, 0.35, 0.38, 1.0],
        )
        t = robot.table
        textures = []
        for kind, builtin in zip(
            TABLE_TEXTURES,
            (
                mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                mujoco.mjtBuiltin.mjBUILTIN_FLAT,
            ),
        ):
            texture = spec.add_texture(
                name=f"table_{kind}",
                type=mujoco.mjtTexture.mjTEXTURE_2D,
                builtin=builtin,
                rgb1=[0.9, 0.9, 0.9],
                rgb2=[0.35, 0.35, 0.35],
                width=64,
                height=64,
            )
            if kind == "noise":
                texture.mark, texture.random, texture.markrgb = mujoco.mjtMark.mjMARK_RANDOM, 0.3, [0.2, 0.2, 0.2]
            textures.append(texture)
        for texture in textures:  # one material per texture; the table's material is switched at run time
            material = spec.add_material(name=f"{texture.name}_material", texrepeat=[4.0, 4.0])
            material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = texture.name
        world.add_geom(
            name="table",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=list(t.size),
            pos=list(t.pose.xyz),
            rgba=list(clean.table_rgba),
        )
        for i in range(DISTRACTOR_SLOTS):
            body = world.add_body(name=f"distractor_{i}", pos=list(HIDDEN), mocap=True)
            # each slot references one table material, which keeps the compiler from discarding the
            # (otherwise unused) materials; apply_appearance gives the slots plain colours
            body.add_geom(
                name=f"distractor_{i}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=[0.02, 0.02, 0.02],
                rgba=[0.5, 0.5, 0.5, 1.0],
                material=f"{textures[i % len(textures)].name}_material",
            )
        for obj in robot.objects:
            body = world.add_body(name=obj.name, pos=list(obj.pose.xyz))
            body.add_freejoint(name=f"{obj.name}_free")
            body.add_geom(
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=list(obj.size),
                rgba=list(obj.rgba),
                mass=0.05,
                friction=[1.5, 0.01, 0.001],
            )
        # Robot geoms touch the scene but not each other (collision bits: robot 2, scene 1);
        # arm controllers compensate gravity, as the real FR3 / Piper / TienKung firmware does.
        # An object falling out of a hand (let_fall) touches only the scene (bit 4).
        robot_bodies = {b.name for b in spec.bodies} - {"world"} - {o.name for o in robot.objects}
        for body in spec.bodies:
            if body.name in robot_bodies:
                body.gravcomp = 1.0
        for geom in spec.geoms:
            if geom.parent.name in robot_bodies:
                geom.contype, geom.conaffinity = ROBOT_COLLISION
                geom.rgba = [0.82, 0.82, 0.85, 1.0]  # MuJoCo's default grey is too dark
            else:
                geom.contype, geom.conaffinity = SCENE_COLLISION
        if cfg.board is not None:
            self._add_board(spec, cfg.board)
        for cam in CAMERA_NAMES:
            # MuJoCo cameras look along -z with y up; ROS optical frames look along +z with y down
            spec.body(f"{cam}_color_optical_frame").add_camera(name=cam, quat=[0.0, 1.0, 0.0, 0.0], fovy=cfg.fovy[cam])
        for joint in spec.joints:
            if joint.name in robot.joint_names or joint.name.endswith("_gripper_mirror"):
                joint.armature = 0.05
                joint.damping = [1.0, 0.0, 0.0]
        limits = robot.joint_limits()
        for name in robot.joint_names:
            act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
            act.set_to_position(kp=cfg.servo_kp, kv=0.0)  # per joint in _tune_servos
            lo, hi = limits[name]
            act.ctrlrange = [lo, hi]
            act.ctrllimited = True
            if name.endswith("_gripper"):
                act.forcerange = [-robot.arm.gripper.effort, robot.arm.gripper.effort]
                act.forcelimited = True
        model = spec.compile()
        model.vis.quality.shadowsize = 0
        model.vis.map.znear = 0.01
        return model

    # --- state -----------------------------------------------------------------------------
    @staticmethod
    def _add_board(spec: mujoco.MjSpec, board: BoardMount) -> None:
        """A textured quad (a mesh with texture coordinates: exact placement of the image), visual only."""
        spec.add_texture(name="board", type=mujoco.mjtTexture.mjTEXTURE_2D, file=str(Path(board.texture).resolve()))
        material = spec.add_material(name="board_material")
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "board"
        w, h = board.size
        mesh = spec.add_mesh(name="board_quad", inertia=mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL)
        mesh.uservert = [0, 0, 0, w, 0, 0, w, h, 0, 0, h, 0]
        mesh.usertexcoord = [0, 1, 1, 1, 1, 0, 0, 0]
        mesh.userface = [0, 1, 2, 0, 2, 3]  # counter-clockwise from +z: it faces +z
        parent = spec.worldbody if board.parent == "world" else spec.body(board.parent)
        body = parent.add_body(name="board", pos=list(board.xyz), quat=list(euler2quat(*board.rpy, "sxyz")))
        body.add_geom(
            name="board",
            type=mujoco.mjtGeom.mjGEOM_MESH,
            meshname="board_quad",
            material="board_material",
            contype=0,
            conaffinity=0,
            mass=1e-3,
        )

    @property
    def time(self) -> float:
        return float(self.data.time)

    def reset(self) -> None:
        for geom in self._falling:
            self.model.geom_contype[geom], self.model.geom_conaffinity[geom] = SCENE_COLLISION
        self._falling.clear()
        mujoco.mj_resetData(self.model, self.data)
        self.set_joint_positions(self.robot.home_positions())

    def _tune_servos(self) -> None:
        """Each position servo's gains from its joint's inertia at the home pose (armature + links:
        the mass matrix diagonal) for servo_bandwidth_hz and servo_damping_ratio. One kp and a kv
        for unit inertia had left the joints (0.05-2 kg m^2) overdamped: they closed only 25-43 %
        of a step per camera frame, and the recorded targets led the states by up to 1 rad."""
        mass = np.zeros((self.model.nv, self.model.nv))
        mujoco.mj_fullM(self.model, self.data, mass)
        cfg = self.config
        omega = 2.0 * math.pi * cfg.servo_bandwidth_hz
        gripper = self.robot.arm.gripper
        for name, act, dof in zip(self.joint_names, self._act, self._vadr):
            if name.endswith("_gripper"):
                # A geared gripper drive (DC motor: force falls linearly to 0 at the rated speed) never
                # moves its fingers faster than its rated velocity, even when what they squeezed slips
                # out: a pure position servo snapped them shut at 0.44 m/s, 4x the Piper's 0.1, a
                # reading the bridges rightly refuse as a driver fault. Time constant 1 / omega.
                self.model.dof_damping[dof] = gripper.effort / gripper.velocity
                self.model.actuator_gainprm[act, 0] = self.model.dof_damping[dof] * omega
                self.model.actuator_biasprm[act, 1:3] = (-self.model.dof_damping[dof] * omega, 0.0)
                continue
            inertia = mass[dof, dof]
            kp = max(cfg.servo_kp, inertia * omega**2)
            kv = 2.0 * cfg.servo_damping_ratio * math.sqrt(kp * inertia)
            self.model.actuator_gainprm[act, 0] = kp
            # position actuator: force = kp * ctrl - kp * q - kv * qdot; the joint's passive
            # damping already brakes it
            self.model.actuator_biasprm[act, 1:3] = (-kp, -max(0.0, kv - self.model.dof_damping[dof]))

    def set_joint_positions(self, positions: Mapping[str, float]) -> None:
        """Place the arms (and hold them there): every joint in joint_names must be given."""
        q = np.array([positions[n] for n in self.joint_names])
        self.data.qpos[self._qadr] = q
        for name in self.joint_names:
            if name.endswith("_gripper"):
                mirror = self.model.joint(name.replace("_gripper", "_gripper_mirror")).qposadr[0]
                self.data.qpos[mirror] = positions[name]
        self.data.qvel[:] = 0.0
        self.data.ctrl[self._act] = q
        mujoco.mj_forward(self.model, self.data)

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._vadr].copy()

    def joint_efforts(self) -> np.ndarray:
        return self.data.actuator_force[self._act].copy()

    def targets(self) -> np.ndarray:
        """Current position targets, in joint_names order."""
        return self.data.ctrl[self._act].copy()

    def object_position(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def object_speed(self, name: str) -> float:
        """Linear speed (m/s) of a free object."""
        return float(np.linalg.norm(self.data.joint(f"{name}_free").qvel[:3]))

    def set_object_position(self, name: str, xyz: np.ndarray | tuple[float, float, float]) -> None:
        """Place a free object upright at rest at `xyz` (its centre)."""
        joint = self.data.joint(f"{name}_free")
        joint.qpos[:3] = xyz
        joint.qpos[3:] = (1.0, 0.0, 0.0, 0.0)
        joint.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def let_fall(self, name: str) -> None:
        """The object slips out of whatever holds it: it passes through the robot (falls out of a
        closed hand instead of being squeezed out of it at an impossible speed) and lands on the
        scene; it is solid to the robot again once no robot geom overlaps it."""
        geom = int(self.model.body(name).geomadr[0])
        self.model.geom_contype[geom], self.model.geom_conaffinity[geom] = FALLING_COLLISION
        self._falling.add(geom)

    def _solidify_fallen(self) -> None:
        for geom in list(self._falling):
            if all(
                mujoco.mj_geomDistance(self.model, self.data, geom, int(other), CLEARANCE, None) >= CLEARANCE
                for other in self._robot_geoms
            ):
                self.model.geom_contype[geom], self.model.geom_conaffinity[geom] = SCENE_COLLISION
                self._falling.discard(geom)

    def object_half_size(self, name: str) -> np.ndarray:
        return self.model.geom_size[self.model.body(name).geomadr[0]].copy()

    def tcp_position(self, side: str) -> np.ndarray:
        return self.data.body(f"{side}_tcp").xpos.copy()

    def table_top(self) -> float:
        return scene_heights(self.robot)[0]

    def apply_appearance(self, appearance: Appearance) -> None:
        """Lighting, table texture and colour, object colours and clutter (render-time model data)."""
        m = self.model
        sun = m.light("sun").id
        m.light_diffuse[sun] = appearance.light_diffuse
        m.light_ambient[sun] = appearance.light_ambient
        direction = np.asarray(appearance.light_direction, dtype=float)
        m.light_dir[sun] = direction / np.linalg.norm(direction)
        table = m.geom("table").id
        if not -1 <= appearance.table_texture < len(TABLE_TEXTURES):
            raise ValueError(f"table_texture {appearance.table_texture}: expected -1..{len(TABLE_TEXTURES) - 1}")
        if appearance.table_texture < 0:
            m.geom_matid[table] = -1
            m.geom_rgba[table] = appearance.table_rgba
        else:
            material = m.material(f"table_{TABLE_TEXTURES[appearance.table_texture]}_material").id
            m.geom_matid[table] = material
            m.mat_rgba[material] = appearance.table_rgba
            m.mat_texrepeat[material] = appearance.texture_repeat
            m.geom_rgba[table] = (1.0, 1.0, 1.0, 1.0)
        clean = {o.name: tuple(o.rgba) for o in self.robot.objects}
        for name, rgba in {**clean, **appearance.object_rgba}.items():
            m.geom_rgba[m.body(name).geomadr[0]] = rgba
        if len(appearance.distractors) > DISTRACTOR_SLOTS:
            raise ValueError(f"{len(appearance.distractors)} distractors; the scene has {DISTRACTOR_SLOTS} slots")
        for i in range(DISTRACTOR_SLOTS):
            body, geom = m.body(f"distractor_{i}"), m.geom(f"distractor_{i}").id
            m.geom_matid[geom] = -1
            if i < len(appearance.distractors):
                d = appearance.distractors[i]
                self.data.mocap_pos[body.mocapid[0]] = d.xyz
                m.geom_size[geom], m.geom_rgba[geom] = d.half_size, d.rgba
                m.geom_rbound[geom] = float(np.linalg.norm(d.half_size))  # the collision broad phase uses it
            else:
                self.data.mocap_pos[body.mocapid[0]] = HIDDEN
        mujoco.mj_forward(m, self.data)

    # --- commands --------------------------------------------------------------------------
    def validate_targets(self, names: list[str], positions: list[float] | np.ndarray) -> JointTargets:
        """Check a whole command against joint names and limits; raises CommandError naming the field.

        Reads only immutable model data, so it is safe to call from another thread while physics runs.
        """
        if len(names) == 0:
            raise CommandError("command names no joints")
        if len(names) != len(positions):
            raise CommandError(f"command has {len(names)} joint names but {len(positions)} positions")
        if len(set(names)) != len(names):
            raise CommandError(f"command names a joint twice: {list(names)}")
        idx = []
        for name in names:
            if name not in self._index:
                raise CommandError(f"unknown joint {name!r}; allowed: {', '.join(self.joint_names)}")
            idx.append(self._index[name])
        q = np.asarray(positions, dtype=float)
        bad = ~np.isfinite(q)
        if bad.any():
            raise CommandError(f"non-finite target for {[names[i] for i in np.flatnonzero(bad)]}")
        idx_arr = np.array(idx)
        lo, hi = self.lower[idx_arr], self.upper[idx_arr]
        out = (q < lo - 1e-9) | (q > hi + 1e-9)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise CommandError(f"{names[i]}={q[i]:.4f} outside its limits [{lo[i]:.4f}, {hi[i]:.4f}]")
        return JointTargets(self._act[idx_arr], q)

    def apply_targets(self, targets: JointTargets) -> None:
        self.data.ctrl[targets.actuators] = targets.positions

    def set_targets(self, names: list[str], positions: list[float] | np.ndarray) -> None:
        """Validate a whole command, then apply it; a bad command changes nothing."""
        self.apply_targets(self.validate_targets(names, positions))

    def step(self, duration: float) -> None:
        """Advance physics by `duration` seconds of simulated time."""
        mujoco.mj_step(self.model, self.data, max(1, round(duration / self.model.opt.timestep)))
        if self._falling:
            self._solidify_fallen()

    # --- cameras ---------------------------------------------------------------------------
    def intrinsics(self, camera: str) -> np.ndarray:
        h, w = self.config.height, self.config.width
        f = (h / 2.0) / math.tan(math.radians(self.model.camera(camera).fovy[0]) / 2.0)
        return np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])

    def render(self, camera: str) -> CameraFrame:
        if self._renderers is None:
            rgb_renderer = mujoco.Renderer(self.model, self.config.height, self.config.width)
            depth_renderer = mujoco.Renderer(self.model, self.config.height, self.config.width)
            depth_renderer.enable_depth_rendering()
            self._renderers = (rgb_renderer, depth_renderer)
        rgb_renderer, depth_renderer = self._renderers
        rgb_renderer.update_scene(self.data, camera)
        rgb = rgb_renderer.render()
        depth_renderer.update_scene(self.data, camera)
        depth = depth_renderer.render().astype(np.float32, copy=False)
        lo, hi = self.config.depth_range
        depth[(depth < lo) | (depth > hi)] = 0.0
        return CameraFrame(camera, rgb, depth, self.intrinsics(camera))

    def render_all(self) -> list[CameraFrame]:
        return [self.render(cam) for cam in CAMERA_NAMES]

    def close(self) -> None:
        """Release the renderers; call from the thread that rendered."""
        if self._renderers is not None:
            for renderer in self._renderers:
                renderer.close()
            self._renderers = None
