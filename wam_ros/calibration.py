"""Calibration check: project the robot's wrist frames into the head camera image (ROS-free).

The camera mounts (head extrinsics in the base frame, wrist hand-eye transforms) come from
config/robots/<robot>.yaml through the URDF. Drawn on a real head image (with its intrinsics and
the joint positions it was taken at), the markers must sit on the grippers; without an image the
simulator renders one, which checks the conventions end to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from wam_ros.config import SIDES, RobotConfig, load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.geometry.transforms import matrix_to_pose
from wam_ros.robots.urdf import generate_urdf

CHECK_FRAMES = tuple(f"{side}_{frame}" for side in SIDES for frame in ("flange", "tcp", "wrist_color_optical_frame"))


def project_frames(
    kinematics: Kinematics,
    joints: Mapping[str, float],
    camera_frame: str,
    K: np.ndarray,
    frames: tuple[str, ...] = CHECK_FRAMES,
) -> dict[str, tuple[float, float, float]]:
    """(u, v, depth in m) of each frame's origin in the camera (optical frame: z forward, y down)."""
    poses = kinematics.frame_poses(joints, [camera_frame, *frames])
    world_to_camera = np.linalg.inv(poses[camera_frame])
    out = {}
    for frame in frames:
        x, y, z = (world_to_camera @ poses[frame][:, 3])[:3]
        out[frame] = (float(K[0, 0] * x / z + K[0, 2]), float(K[1, 1] * y / z + K[1, 2]), float(z))
    return out


def axis_triads(
    kinematics: Kinematics,
    joints: Mapping[str, float],
    camera_frame: str,
    K: np.ndarray,
    frames: tuple[str, ...] = CHECK_FRAMES,
    length: float = 0.04,
) -> dict[str, list[tuple[float, float]]]:
    """Per frame, the image points of the tips of its x, y and z axes (`length` m)."""
    poses = kinematics.frame_poses(joints, [camera_frame, *frames])
    world_to_camera = np.linalg.inv(poses[camera_frame])
    out = {}
    for frame in frames:
        tips = []
        for axis in range(3):
            x, y, z = (world_to_camera @ poses[frame] @ np.append(length * np.eye(3)[axis], 1.0))[:3]
            tips.append((float(K[0, 0] * x / max(z, 1e-6) + K[0, 2]), float(K[1, 1] * y / max(z, 1e-6) + K[1, 2])))
        out[frame] = tips
    return out


def calibration_check(
    robot: str,
    out: Path,
    image: np.ndarray | None = None,
    K: np.ndarray | None = None,
    joints: Mapping[str, float] | None = None,
) -> dict:
    """Write a PNG of the head image with the projected wrist frames; return the projections."""
    from PIL import Image, ImageDraw

    cfg = load_robot_config(robot)
    urdf = generate_urdf(cfg)
    joints = dict(cfg.home_positions() if joints is None else joints)
    if image is None:  # the simulator's head camera at these joint positions
        from wam_ros.sim.world import SimWorld

        world = SimWorld(cfg, urdf)
        try:
            world.set_joint_positions(joints)
            frame = world.render("head")
            image, K = frame.rgb, frame.K
        finally:
            world.close()
    if K is None:
        raise ValueError("K: the head camera intrinsics are needed with an image")
    kinematics = Kinematics(urdf)
    projections = project_frames(kinematics, joints, "head_color_optical_frame", K)
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    h, w = image.shape[:2]
    triads = axis_triads(kinematics, joints, "head_color_optical_frame", K)
    for row, (name, (u, v, z)) in enumerate(projections.items()):
        if z <= 0:
            continue
        for tip, color in zip(triads[name], ((230, 30, 30), (30, 200, 30), (40, 90, 255))):  # x, y, z
            draw.line([(u, v), tip], fill=color, width=3)
        # labels stacked in a column at the image's edge with a leader line: they never overlap
        label_x, label_y = (8 if u > w / 2 else w - 150), 8 + 14 * row
        draw.line([(u, v), (label_x + (140 if label_x < w / 2 else -4), label_y + 6)], fill=(255, 255, 255), width=1)
        draw.text((label_x, label_y), name.replace("_color_optical_frame", "_cam"), fill=(255, 255, 255))
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return {
        "robot": robot,
        "image": str(out),
        "size": [w, h],
        "projections": {
            name: {
                "u": round(u, 1),
                "v": round(v, 1),
                "depth_m": round(z, 3),
                "in_view": bool(z > 0 and 0 <= u < w and 0 <= v < h),
            }
            for name, (u, v, z) in projections.items()
        },
    }


# --- ChArUco board poses and hand-eye calibration (OpenCV) -----------------------------------
HAND_EYE_METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis")


@dataclass(frozen=True)
class CharucoSpec:
    """The printed board: squares (columns, rows), square and marker sides (m), ArUco dictionary."""

    squares: tuple[int, int] = (7, 5)
    square: float = 0.03
    marker: float = 0.022
    dictionary: str = "DICT_5X5_100"

    def board(self):
        import cv2

        return cv2.aruco.CharucoBoard(
            self.squares,
            self.square,
            self.marker,
            cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)),
        )

    @property
    def size(self) -> tuple[float, float]:
        return self.squares[0] * self.square, self.squares[1] * self.square

    def image(self, pixels_per_square: int = 100) -> np.ndarray:
        """The board to print (grey uint8), no margin: it spans exactly `size`."""
        return self.board().generateImage(
            (self.squares[0] * pixels_per_square, self.squares[1] * pixels_per_square), marginSize=0
        )


@dataclass(frozen=True)
class BoardView:
    T_camera_board: np.ndarray  # 4x4, board frame (OpenCV's: origin at a corner, z out of the board)
    corners: int
    rms_px: float  # reprojection error of the detected corners
    object_points: np.ndarray  # (N, 3) the detected corners on the board (m)
    image_points: np.ndarray  # (N, 2) where they were seen (px)
    image_size: tuple[int, int]  # (width, height)


def board_pose(
    rgb: np.ndarray, K: np.ndarray, spec: CharucoSpec, D: np.ndarray | None = None, min_corners: int = 8
) -> BoardView | None:
    """The board's pose in a camera image (optical frame), or None when too few corners are seen."""
    import cv2

    board = spec.board()
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    corners, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(gray)
    if ids is None or len(ids) < min_corners:
        return None
    objects, image_points = board.matchImagePoints(corners, ids)
    D = np.zeros(5) if D is None else np.asarray(D, float)
    ok, rvec, tvec = cv2.solvePnP(objects, image_points, K, D, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    projected, _ = cv2.projectPoints(objects, rvec, tvec, K, D)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points.reshape(-1, 2)) ** 2, axis=1))))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
    return BoardView(
        T, int(len(ids)), rms, objects.reshape(-1, 3), image_points.reshape(-1, 2), (gray.shape[1], gray.shape[0])
    )


@dataclass(frozen=True)
class HandEyeResult:
    method: str
    transform: np.ndarray  # eye in hand: gripper -> camera; eye to hand: base -> camera
    residual_mm: float  # spread of the board pose it implies over the views (translation, RMS)
    residual_deg: float  # (rotation, RMS)


def hand_eye(
    T_base_gripper: list[np.ndarray],
    T_camera_board: list[np.ndarray],
    eye_in_hand: bool,
    methods: tuple[str, ...] = HAND_EYE_METHODS,
) -> list[HandEyeResult]:
    """cv2.calibrateHandEye over the views, per method, best (smallest residual) first. Eye in hand
    (a wrist camera, the board fixed): the camera in the gripper frame. Eye to hand (the head
    camera, the board held by the gripper): the camera in the base frame. The residual is how much
    the board's pose (in the base, resp. the gripper) it implies varies over the views."""
    import cv2

    if len(T_base_gripper) != len(T_camera_board) or len(T_base_gripper) < 3:
        raise ValueError(f"hand-eye needs >= 3 paired views, got {len(T_base_gripper)} and {len(T_camera_board)}")
    moving = [T if eye_in_hand else np.linalg.inv(T) for T in T_base_gripper]
    results = []
    for method in methods:
        R, t = cv2.calibrateHandEye(
            [T[:3, :3] for T in moving],
            [T[:3, 3] for T in moving],
            [T[:3, :3] for T in T_camera_board],
            [T[:3, 3] for T in T_camera_board],
            method=getattr(cv2, f"CALIB_HAND_EYE_{method.upper()}"),
        )
        X = np.eye(4)
        X[:3, :3], X[:3, 3] = R, t.ravel()
        boards = [M @ X @ C for M, C in zip(moving, T_camera_board)]
        mean_t = np.mean([B[:3, 3] for B in boards], axis=0)
        residual_mm = 1e3 * float(np.sqrt(np.mean([np.sum((B[:3, 3] - mean_t) ** 2) for B in boards])))
        reference = boards[0][:3, :3]
        angles = [np.degrees(np.arccos(np.clip((np.trace(reference.T @ B[:3, :3]) - 1) / 2, -1, 1))) for B in boards]
        results.append(HandEyeResult(method, X, residual_mm, float(np.sqrt(np.mean(np.square(angles))))))
    return sorted(results, key=lambda r: (r.residual_mm, r.residual_deg))


# --- the procedure: views of a fixed board, the wrist cameras' hand-eye, the head's extrinsics ------
@dataclass
class CalibrationViews:
    """Board views paired with joint positions: per wrist camera, (joints, view) while its arm moves
    around a board fixed on the table; the head camera's view of the same board (joints, view)."""

    wrist: dict[str, list[tuple[dict[str, float], BoardView]]]
    head: list[tuple[dict[str, float], BoardView]]
    intrinsics: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> the driver's K


def intrinsics_check(views: list[BoardView], K: np.ndarray, tolerance: float = 0.02) -> dict:
    """The camera's intrinsics estimated from the board views (OpenCV's calibrateCamera, distortion
    fixed at zero: a rectified or undistorted stream), against the driver's K: relative differences
    of fx, fy, cx, cy and whether they are within `tolerance`."""
    import cv2

    if len(views) < 4:
        return {"views": len(views), "ok": None, "note": "fewer than 4 board views: not checked"}
    flags = (
        cv2.CALIB_USE_INTRINSIC_GUESS
        | cv2.CALIB_FIX_K1
        | cv2.CALIB_FIX_K2
        | cv2.CALIB_FIX_K3
        | cv2.CALIB_ZERO_TANGENT_DIST
    )
    rms, estimate, _, _, _ = cv2.calibrateCamera(
        [v.object_points.astype(np.float32) for v in views],
        [v.image_points.astype(np.float32) for v in views],
        views[0].image_size,
        K.astype(np.float64).copy(),
        np.zeros(5),
        flags=flags,
    )
    names = {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2)}
    relative = {n: float(abs(estimate[i] - K[i]) / K[0, 0]) for n, i in names.items()}
    return {
        "views": len(views),
        "rms_px": round(float(rms), 3),
        "estimated": {n: round(float(estimate[i]), 2) for n, i in names.items()},
        "driver": {n: round(float(K[i]), 2) for n, i in names.items()},
        "relative_difference": {n: round(v, 4) for n, v in relative.items()},
        "ok": bool(max(relative.values()) <= tolerance),
    }


def nearest_rpy(rpy: tuple[float, ...], reference: tuple[float, ...]) -> tuple[float, ...]:
    """Of the two roll/pitch/yaw triples of one rotation, the one nearer `reference` (so that a
    written config changes by the calibration, not by an Euler flip)."""

    def wrap(a: float) -> float:
        return (a + np.pi) % (2 * np.pi) - np.pi

    r, p, y = rpy
    other = (wrap(r + np.pi), wrap(np.pi - p), wrap(y + np.pi))
    distance = [sum(abs(wrap(a - b)) for a, b in zip(c, reference)) for c in (tuple(rpy), other)]
    return tuple(float(v) for v in (tuple(rpy), other)[int(np.argmin(distance))])


def optical_from_link(kinematics: Kinematics, camera: str) -> np.ndarray:
    """<cam>_link -> <cam>_color_optical_frame (fixed), from the URDF."""
    poses = kinematics.frame_poses({}, [f"{camera}_link", f"{camera}_color_optical_frame"])
    return np.linalg.inv(poses[f"{camera}_link"]) @ poses[f"{camera}_color_optical_frame"]


def solve_mounts(robot: RobotConfig, views: CalibrationViews) -> dict[str, dict]:
    """Each camera's mount on its parent link (the config's camera pose: parent -> <cam>_link).
    Wrist cameras by hand-eye (every method, with residuals); the head through the board's pose in
    the base, which the calibrated wrist cameras measure: head = base->board . board->head."""
    kinematics = Kinematics(generate_urdf(robot))
    mounts = {c.name: c for c in robot.cameras}
    out: dict[str, dict] = {}
    boards_in_base = []
    for camera, pairs in views.wrist.items():
        parent = mounts[camera].parent
        grippers = [kinematics.frame_pose(joints, parent) for joints, _ in pairs]
        results = hand_eye(grippers, [view.T_camera_board for _, view in pairs], eye_in_hand=True)
        best = results[0]
        boards_in_base += [G @ best.transform @ view.T_camera_board for G, (_, view) in zip(grippers, pairs)]
        out[camera] = {
            "parent": parent,
            "T_parent_optical": best.transform,
            "method": best.method,
            "views": len(pairs),
            "methods": [
                {"method": r.method, "residual_mm": round(r.residual_mm, 3), "residual_deg": round(r.residual_deg, 4)}
                for r in results
            ],
        }
    if views.head and boards_in_base:
        board = boards_in_base[0].copy()
        board[:3, 3] = np.mean([b[:3, 3] for b in boards_in_base], axis=0)
        parent = mounts["head"].parent
        estimates = [
            np.linalg.inv(kinematics.frame_pose(joints, parent)) @ board @ np.linalg.inv(view.T_camera_board)
            for joints, view in views.head
        ]
        head = estimates[0].copy()
        head[:3, 3] = np.mean([e[:3, 3] for e in estimates], axis=0)
        out["head"] = {
            "parent": parent,
            "T_parent_optical": head,
            "method": "board in base from the wrist cameras",
            "views": len(views.head),
            "board_spread_mm": round(
                1e3 * float(np.sqrt(np.mean([np.sum((b[:3, 3] - board[:3, 3]) ** 2) for b in boards_in_base]))), 3
            ),
        }
    for camera, result in out.items():
        if camera in views.intrinsics:
            seen = views.head if camera == "head" else views.wrist[camera]
            result["intrinsics"] = intrinsics_check([view for _, view in seen], views.intrinsics[camera])
        T = result["T_parent_optical"] @ np.linalg.inv(optical_from_link(kinematics, camera))
        xyz, rpy = matrix_to_pose(T)
        rpy = nearest_rpy(rpy, mounts[camera].pose.rpy)
        result["xyz"], result["rpy"] = [round(v, 6) for v in xyz], [round(v, 6) for v in rpy]
        result["T_parent_optical"] = result["T_parent_optical"].round(6).tolist()
    return out


def simulated_views(
    robot: RobotConfig,
    spec: CharucoSpec,
    board_xyz: tuple[float, float, float],
    wrist_views: int = 10,
    seed: int = 0,
    size: tuple[int, int] = (960, 1280),
    spread: float = 0.3,
    max_tries: int = 120,
) -> CalibrationViews:
    """The procedure in the simulator: a printed board on the table, each arm moved to random poses
    around home (joints +-spread rad) until its wrist camera saw the board `wrist_views` times, and
    the head camera's view at home. What a lab records under teleop on the real robot."""
    import tempfile

    from wam_ros.sim.world import BoardMount, SimConfig, SimWorld

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        texture = Path(tmp) / "board.png"
        from PIL import Image

        Image.fromarray(spec.image()).save(texture)
        world = SimWorld(
            robot,
            generate_urdf(robot),
            SimConfig(height=size[0], width=size[1], board=BoardMount(str(texture), spec.size, "world", board_xyz)),
        )
        try:
            world.reset()
            home = robot.home_positions()

            intrinsics = {camera: world.intrinsics(camera) for camera in ("head", *(f"{s}_wrist" for s in SIDES))}

            def look(camera: str, joints: dict[str, float]) -> tuple[dict[str, float], BoardView | None]:
                world.set_joint_positions(joints)
                frame = world.render(camera)
                return dict(zip(robot.joint_names, world.joint_positions())), board_pose(frame.rgb, frame.K, spec)

            wrist: dict[str, list] = {}
            for side in SIDES:
                camera, pairs = f"{side}_wrist", []
                for _ in range(max_tries):
                    joints = {
                        n: home[n] + (rng.uniform(-spread, spread) if n in robot.arm_joint_names(side) else 0.0)
                        for n in robot.joint_names
                    }
                    actual, view = look(camera, joints)
                    if view is not None:
                        pairs.append((actual, view))
                    if len(pairs) == wrist_views:
                        break
                wrist[camera] = pairs
            actual, view = look("head", dict(home))
            return CalibrationViews(wrist, [(actual, view)] if view is not None else [], intrinsics)
        finally:
            world.close()


def recorded_views(bag: Path, spec: CharucoSpec, fps: float = 5.0, still_rad: float = 0.004) -> CalibrationViews:
    """The views of a recorded episode (record:=true, the board fixed on the table, each arm moved
    under teleop to poses where its wrist camera sees the board, pausing at each): frames where the
    joints were still (the image and the joint reading agree), each camera's board pose with the
    intrinsics its driver published (CameraInfo, in the bag)."""
    from wam_ros.data.bag_frames import index_episode, iter_frames

    index = index_episode(Path(bag), fps)
    missing = [cam for cam in index.cameras if cam not in index.intrinsics]
    if missing:
        raise ValueError(
            f"{bag}: no CameraInfo for {missing}: record the camera_info topics (record_source:=raw or synced)"
        )
    K = {cam: np.asarray(index.intrinsics[cam], float).reshape(3, 3) for cam in index.cameras}
    wrist: dict[str, list] = {cam: [] for cam in index.cameras if cam.endswith("_wrist")}
    head: list = []
    for k, colors, _ in iter_frames(index):
        if k == 0 or np.abs(index.state[k] - index.state[k - 1]).max() > still_rad:
            continue
        joints = dict(zip(index.joint_names, (float(v) for v in index.state[k])))
        for cam in index.cameras:
            view = board_pose(colors[cam], K[cam], spec)
            if view is not None:
                (wrist[cam] if cam in wrist else head).append((joints, view))
    return CalibrationViews(wrist, head, K)


def write_camera_mounts(path: Path, mounts: Mapping[str, Mapping], backup: bool = True) -> Path | None:
    """Writes the cameras' xyz/rpy into a robot YAML (config/robots/<robot>.yaml), keeping the rest
    of the file (comments included); the previous file is kept as <name>.bak-<time>. Returns the
    backup's path. Regenerate the URDF afterwards (`wam-ros urdf`)."""
    import io
    import shutil
    import time

    from ruamel.yaml import YAML

    path = Path(path)
    yaml = YAML()
    yaml.preserve_quotes = True
    data = yaml.load(path.read_text())
    for camera, mount in mounts.items():
        entry = data["cameras"][camera]
        if entry["parent"] != mount["parent"]:
            raise ValueError(
                f"{camera}: calibrated on {mount['parent']!r}, but {path} mounts it on {entry['parent']!r}"
            )
        entry["xyz"][:] = [float(v) for v in mount["xyz"]]
        entry["rpy"][:] = [float(v) for v in mount["rpy"]]
    saved = None
    if backup:
        saved = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, saved)
    text = io.StringIO()
    yaml.dump(data, text)
    path.write_text(text.getvalue())
    return saved
