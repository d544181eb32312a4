"""The observed RGB-D scene carried into predicted robot configurations (ROS-free, numpy).

A predicted chunk says where the arms will be; what the cameras will then see follows from the
observed depth as far as the scene is rigid: the points on a robot link move with that link (forward
kinematics at the present and at the predicted joint positions), everything else stays, and each
camera, wrist cameras included, looks at the result from its own predicted pose. This is the
geometric part of the future that a video model otherwise has to learn pixel by pixel (and that a
small one trained on a few demonstrations does not): `KinematicReprojection` renders it per future
step, and the world model predicts the rest as a change on top (WorldActionPolicy).

Which observed point belongs to which link comes from the URDF's collision shapes (box, cylinder,
sphere; a mesh counts as a capsule from its link's origin to its child joints), inflated by a margin
for depth noise; what lies between a gripper's fingers is held and moves with the hand. All views'
points are fused, so one camera's view of the table can fill what an arm uncovers in another's; a
view's own points win wherever they land (at a few dozen pixels a side, two views' samples of one
surface never line up). Pixels nothing lands on keep the observed frame (nothing moves), except
where the robot was and has left: those take the nearest background pixel around them, not a ghost
of the arm.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from wam_ros.geometry.transforms import pose_to_matrix

MESH_RADIUS = 0.06  # m: a mesh's capsule (its link origin to its child joints)
FILL_PASSES = 3  # rounds of growing the background into pixels the robot left
MAX_DEPTH = 100.0  # m: beyond this a depth value is a sensor glitch
GAP_NEIGHBOURS = 5  # of 8 neighbours covered: a pixel between spread-out points, not an edge


@dataclass(frozen=True)
class Shape:
    """One collision shape of a link: kind "box" (half extents), "cylinder" (radius, half length,
    axis z), "sphere" (radius) or "capsule" (radius, from `origin` to `end`, both in the link frame)."""

    link: str
    kind: str
    origin: np.ndarray  # 4x4 link <- shape
    size: tuple[float, ...]
    end: np.ndarray | None = None  # capsule only: second end point (link frame)


@dataclass(frozen=True)
class GraspRegion:
    """The space between a gripper's two fingers (a box in the frame of the link they hang from):
    what lies there is held, and moves with that link. `joint` opens the fingers along the region's
    y axis; at opening q their inner faces are at +-(q - finger_half_width)."""

    link: str
    joint: str
    origin: np.ndarray  # 4x4 link <- region centre (the fingers' joint origin, at the fingers' height)
    half_depth: float  # along x
    half_length: float  # along z
    finger_half_width: float


def _origin(element: ET.Element | None) -> np.ndarray:
    if element is None:
        return np.eye(4)
    return pose_to_matrix(
        [float(v) for v in element.get("xyz", "0 0 0").split()], [float(v) for v in element.get("rpy", "0 0 0").split()]
    )


def robot_shapes(urdf: str) -> list[Shape]:
    """The collision shapes of every link of a URDF (visual shapes where a link has no collision)."""
    root = ET.fromstring(urdf)
    children: dict[str, list[np.ndarray]] = {}
    for joint in root.iter("joint"):
        parent = joint.find("parent").get("link")
        children.setdefault(parent, []).append(_origin(joint.find("origin"))[:3, 3])
    shapes = []
    for link in root.iter("link"):
        name = link.get("name")
        elements = link.findall("collision") or link.findall("visual")
        for element in elements:
            geometry = element.find("geometry")
            if geometry is None or not len(geometry):
                continue
            kind, T = geometry[0], _origin(element.find("origin"))
            if kind.tag == "box":
                half = tuple(float(v) / 2 for v in kind.get("size").split())
                shapes.append(Shape(name, "box", T, half))
            elif kind.tag == "cylinder":
                shapes.append(Shape(name, "cylinder", T, (float(kind.get("radius")), float(kind.get("length")) / 2)))
            elif kind.tag == "sphere":
                shapes.append(Shape(name, "sphere", T, (float(kind.get("radius")),)))
            elif kind.tag == "mesh":
                for end in children.get(name, [np.zeros(3)]):
                    shapes.append(Shape(name, "capsule", np.eye(4), (MESH_RADIUS,), np.asarray(end, float)))
    return shapes


def grasp_regions(urdf: str, shapes: Sequence[Shape]) -> list[GraspRegion]:
    """A region per pair of prismatic finger joints of one link where one mimics the other (the
    generated URDFs' `<side>_gripper` and `<side>_gripper_mirror`), sized by the first finger's box."""
    root = ET.fromstring(urdf)
    joints = {j.get("name"): j for j in root.iter("joint")}
    regions = []
    for joint in joints.values():
        mimic = joint.find("mimic")
        source = joints.get(mimic.get("joint")) if mimic is not None else None
        if joint.get("type") != "prismatic" or source is None or source.get("type") != "prismatic":
            continue
        parent, finger = source.find("parent").get("link"), source.find("child").get("link")
        if joint.find("parent").get("link") != parent:
            continue
        box = next((s for s in shapes if s.link == finger and s.kind == "box"), None)
        if box is None:
            continue
        origin = _origin(source.find("origin")) @ box.origin
        axis = np.abs(np.array([float(v) for v in source.find("axis").get("xyz", "1 0 0").split()]))
        if not np.allclose(axis, [0, 1, 0]):
            continue  # the region's axes assume fingers opening along y, as the generated URDFs do
        regions.append(GraspRegion(parent, source.get("name"), origin, box.size[0], box.size[2], box.size[1]))
    return regions


def _in_region(points: np.ndarray, region: GraspRegion, link_pose: np.ndarray, opening: float) -> np.ndarray:
    T = link_pose @ region.origin
    local = (points - T[:3, 3]) @ T[:3, :3]
    gap = opening - region.finger_half_width
    return (
        (gap > 0)
        & (np.abs(local[:, 0]) <= region.half_depth)
        & (np.abs(local[:, 1]) < gap)
        & (np.abs(local[:, 2]) <= region.half_length)
    )


def _inside(points: np.ndarray, shape: Shape, link_pose: np.ndarray, margin: float) -> np.ndarray:
    """Which (N, 3) base-frame points lie within `margin` of the shape at the link's pose."""
    T = link_pose @ shape.origin
    local = (points - T[:3, 3]) @ T[:3, :3]  # into the shape frame
    if shape.kind == "box":
        return np.all(np.abs(local) <= np.asarray(shape.size) + margin, axis=1)
    if shape.kind == "cylinder":
        radius, half = shape.size
        return (np.hypot(local[:, 0], local[:, 1]) <= radius + margin) & (np.abs(local[:, 2]) <= half + margin)
    if shape.kind == "sphere":
        return np.linalg.norm(local, axis=1) <= shape.size[0] + margin
    axis = shape.end
    t = np.clip(local @ axis / max(float(axis @ axis), 1e-12), 0.0, 1.0)
    return np.linalg.norm(local - t[:, None] * axis, axis=1) <= shape.size[0] + margin


def _camera_coordinates(
    points: np.ndarray, K: np.ndarray, camera_pose: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) base-frame points -> sub-pixel (row, column) and depth along the optical axis as seen
    from camera_pose (base <- optical frame) with intrinsics K (NaN behind the camera)."""
    local = (points - camera_pose[:3, 3]) @ camera_pose[:3, :3]
    z = local[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        z_ok = np.where(z > 1e-6, z, np.nan)
        return K[1, 1] * local[:, 1] / z_ok + K[1, 2], K[0, 0] * local[:, 0] / z_ok + K[0, 2], z


def project(
    points: np.ndarray, K: np.ndarray, camera_pose: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As _camera_coordinates, rounded to the nearest pixel of an image of `size`: (row, column,
    depth), row and column -1 where the point is behind the camera or outside the image."""
    v, u, z = _camera_coordinates(points, K, camera_pose)
    with np.errstate(invalid="ignore"):
        u, v = np.rint(u), np.rint(v)
        ok = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u < size[1]) & (v >= 0) & (v < size[0])
    return np.where(ok, v, -1).astype(np.int64), np.where(ok, u, -1).astype(np.int64), z


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution (a = -0.5) weights of the 4 taps around fractional positions t: (N, 4)."""
    a = -0.5
    d = np.stack([1 + t, t, 1 - t, 2 - t], axis=1)  # distances to taps -1, 0, 1, 2
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def _bicubic(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """image (h, w, C) sampled at sub-pixel (rows, cols) by cubic convolution (a sub-pixel shift
    keeps edges sharper than bilinear interpolation does), clamped to the image."""
    h, w = image.shape[:2]
    rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    wr, wc = _cubic_weights(rows - r0), _cubic_weights(cols - c0)
    taps = np.arange(-1, 3)
    r = np.clip(r0[:, None] + taps, 0, h - 1)[:, :, None]  # (N, 4, 1)
    c = np.clip(c0[:, None] + taps, 0, w - 1)[:, None, :]  # (N, 1, 4)
    return np.einsum("ni,nj,nijc->nc", wr, wc, image[r, c].astype(np.float64))


class KinematicReprojection:
    """Renders the observed RGB-D views at predicted robot configurations.

    kinematics: a wam_ros.geometry.kinematics.Kinematics of the robot's URDF; cameras: the optical
    frames of the views (URDF frames); margin: how far from a link's shape an observed point still
    counts as that link (m)."""

    def __init__(self, kinematics, urdf: str, camera_frames: Sequence[str], margin: float = 0.02):
        self.kinematics = kinematics
        self.shapes = robot_shapes(urdf)
        self.grasps = grasp_regions(urdf, self.shapes)
        self.links = sorted({s.link for s in self.shapes} | {g.link for g in self.grasps})
        self.camera_frames = list(camera_frames)
        self.margin = margin

    def _poses(self, joints: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        poses = self.kinematics.frame_poses(joints, self.links + self.camera_frames)
        return (np.stack([poses[link] for link in self.links]), np.stack([poses[f] for f in self.camera_frames]))

    def label(
        self, points: np.ndarray, link_poses: np.ndarray, joints: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """Index into self.links of the link each point lies on (or is held by: between the fingers
        of a gripper open by `joints`), -1 for the rest of the scene."""
        labels = np.full(len(points), -1, dtype=np.int64)
        finite = np.isfinite(points).all(axis=1)
        points = np.nan_to_num(points)
        for region in self.grasps:
            opening = (joints or {}).get(region.joint)
            if opening is not None:
                i = self.links.index(region.link)
                labels[finite & (labels < 0) & _in_region(points, region, link_poses[i], opening)] = i
        for shape in self.shapes:
            i = self.links.index(shape.link)
            labels[finite & (labels < 0) & _inside(points, shape, link_poses[i], self.margin)] = i
        return labels

    def render(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        K: np.ndarray,
        present: Mapping[str, float],
        futures: Sequence[Mapping[str, float]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """rgb (V, h, w, 3) uint8 and depth (V, h, w) metres (0: none) observed at the joint positions
        `present`; K (V, 3, 3) for (h, w). Returns, per joint configuration of `futures`, what the
        views would see: rgb (V, T, h, w, 3) uint8 and depth (V, T, h, w) metres (0 where unknown).

        Which point a pixel shows is decided by a z-buffer of the moved points (nearest pixel); its
        colour is then looked up where that pixel's centre came from (cubic in the source view),
        so that the sub-pixel motion of the first steps is not rounded away; cubic, because
        bilinear interpolation blurs a sub-pixel shift about as much as the shift changes the image."""
        if (
            depth.ndim != 3
            or rgb.shape != (*depth.shape, 3)
            or np.shape(K) != (depth.shape[0], 3, 3)
            or depth.shape[0] != len(self.camera_frames)
        ):
            raise ValueError(
                f"shapes do not agree: rgb {rgb.shape}, depth {depth.shape}, K {np.shape(K)} for "
                f"{len(self.camera_frames)} views (expected (V, h, w, 3), (V, h, w), (V, 3, 3))"
            )
        views, h, w = depth.shape
        # a sensor's glitch (NaN, inf, negative, absurd range) is no depth, not a point at infinity
        depth = np.where(np.isfinite(depth) & (depth > 0) & (depth < MAX_DEPTH), depth, 0.0)
        link_now, camera_now = self._poses(present)
        points, source = _lift(depth, K, camera_now)
        labels = self.label(points, link_now, present)
        valid = np.isfinite(points).all(axis=1)
        points, source, labels = points[valid], source[valid], labels[valid]
        view_of = source // (h * w)
        out_rgb = np.empty((views, len(futures), h, w, 3), np.uint8)
        out_depth = np.empty((views, len(futures), h, w), np.float32)
        # where each view saw the robot: those pixels are uncovered when the robot moves on
        robot_pixels = np.zeros((views, h * w), bool)
        robot_pixels[view_of[labels >= 0], source[labels >= 0] % (h * w)] = True
        scene = _Scene(rgb, depth, K, camera_now, labels, view_of, robot_pixels.reshape(views, h, w))
        for step, joints in enumerate(futures):
            link_future, camera_future = self._poses(joints)
            motions = link_future @ np.linalg.inv(link_now)  # per link: present -> future, base frame
            moved = points.copy()
            for i in np.unique(labels[labels >= 0]):
                moved[labels == i] = moved[labels == i] @ motions[i][:3, :3].T + motions[i][:3, 3]
            for v in range(views):
                out_rgb[v, step], out_depth[v, step] = _render_view(scene, v, moved, motions, camera_future[v])
        return out_rgb, out_depth


@dataclass(frozen=True)
class _Scene:
    """The observation, lifted and labelled once per render: what each future view is made from."""

    rgb: np.ndarray  # (V, h, w, 3)
    depth: np.ndarray  # (V, h, w) metres, 0: none
    K: np.ndarray  # (V, 3, 3)
    camera_now: np.ndarray  # (V, 4, 4) base <- optical frame
    labels: np.ndarray  # (N,) link index per valid point, -1: the rest of the scene
    view_of: np.ndarray  # (N,) the view each point was seen in
    robot_pixels: np.ndarray  # (V, h, w) where each view saw the robot


def _render_view(
    scene: _Scene, v: int, moved: np.ndarray, motions: np.ndarray, camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """View v from `camera` (its predicted pose) of the points moved by their links' `motions`:
    colour (h, w, 3) and depth (h, w) metres (0 where unknown)."""
    rgb, depth, K, labels, view_of = scene.rgb, scene.depth, scene.K, scene.labels, scene.view_of
    h, w = depth.shape[1:]
    rows, cols = np.mgrid[0:h, 0:w]
    own = view_of == v
    winner, z = _splat(moved, own, K[v], camera, (h, w))
    # another view's points fill what this view's own do not cover, except where this view saw
    # nothing within range (beyond the room: nothing else belongs there either)
    other, other_z = _splat(moved, ~own, K[v], camera, (h, w))
    fill = (winner < 0) & (other >= 0) & ((depth[v] > 0) | scene.robot_pixels[v])
    winner, z = np.where(fill, other, winner), np.where(fill, other_z, z)
    hit = winner >= 0
    # each covered pixel's centre, at the depth of the point it shows, back to where it was seen
    centre = np.stack(
        [(cols[hit] - K[v][0, 2]) / K[v][0, 0] * z[hit], (rows[hit] - K[v][1, 2]) / K[v][1, 1] * z[hit], z[hit]], axis=1
    )
    centre = centre @ camera[:3, :3].T + camera[:3, 3]
    link, source_view = labels[winner[hit]], view_of[winner[hit]]
    for i in np.unique(link[link >= 0]):
        back = np.linalg.inv(motions[i])
        centre[link == i] = centre[link == i] @ back[:3, :3].T + back[:3, 3]
    image = rgb[v].copy()
    colours = np.zeros((int(hit.sum()), 3))
    for s in np.unique(source_view):
        at = source_view == s
        r, c, _ = _camera_coordinates(centre[at], K[s], scene.camera_now[s])
        colours[at] = _bicubic(rgb[s], r, c)
    image[hit] = np.clip(np.rint(colours), 0, 255).astype(np.uint8)
    z = np.where(hit, z, np.nan)
    image, z, hit = _close_gaps(image, z, hit, depth[v] > 0)
    # what showed the robot and nothing covers now: the background around it
    image, z, hit = _grow_background(image, z, hit, ~hit & scene.robot_pixels[v])
    keep = ~hit
    image[keep], z[keep] = rgb[v][keep], depth[v][keep]
    return image, np.where(np.isfinite(z), z, 0.0)


def _lift(depth: np.ndarray, K: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of every view in the base frame: points (N, 3) (NaN without depth) and the source
    index view * h * w + row * w + column."""
    views, h, w = depth.shape
    rows, cols = np.mgrid[0:h, 0:w]
    clouds = []
    for v in range(views):
        d = np.where(depth[v] > 0, depth[v], np.nan).astype(np.float64)
        local = np.stack([(cols - K[v][0, 2]) / K[v][0, 0] * d, (rows - K[v][1, 2]) / K[v][1, 1] * d, d], axis=-1)
        clouds.append(local.reshape(-1, 3) @ poses[v][:3, :3].T + poses[v][:3, 3])
    return np.concatenate(clouds), np.arange(views * h * w)


def _splat(
    points: np.ndarray, use: np.ndarray, K: np.ndarray, pose: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest of the points `use` selects per pixel (a z-buffer): (index into points, -1 where
    none lands; its depth) as (h, w) arrays."""
    h, w = size
    rows, cols, z = project(points, K, pose, size)
    ok = (rows >= 0) & use
    pixel = (rows * w + cols)[ok]
    order = np.lexsort((z[ok], pixel))  # by pixel, nearest first
    pixel, first = pixel[order], np.ones(len(order), bool)
    first[1:] = pixel[1:] != pixel[:-1]
    chosen = np.flatnonzero(ok)[order[first]]
    winner, depth = np.full(h * w, -1, np.int64), np.full(h * w, np.nan)
    winner[pixel[first]], depth[pixel[first]] = chosen, z[chosen]
    return winner.reshape(h, w), depth.reshape(h, w)


def _neighbours(a: np.ndarray, fill) -> list[np.ndarray]:
    """The 8 neighbours of every pixel of a (h, w, ...) array (`fill` beyond the border)."""
    h, w = a.shape[:2]
    padded = np.pad(a, ((1, 1), (1, 1)) + ((0, 0),) * (a.ndim - 2), constant_values=fill)
    return [padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]


def _close_gaps(
    image: np.ndarray, z: np.ndarray, hit: np.ndarray, closable: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels no point landed on though most of their neighbours got one (a surface seen closer than
    it was observed spreads its points apart): the mean of those neighbours. Only where `closable`
    (the view measured depth there: a pixel beyond the depth range stays as observed)."""
    covered = np.stack(_neighbours(hit, False))  # (8, h, w)
    gap = ~hit & closable & (covered.sum(axis=0) >= GAP_NEIGHBOURS)
    if not gap.any():
        return image, z, hit
    weights = covered[..., None].astype(np.float64)
    colours = np.stack(_neighbours(image.astype(np.float64), 0.0)) * weights
    depths = np.stack(_neighbours(np.where(hit, z, 0.0), 0.0)) * covered
    count = np.maximum(covered.sum(axis=0), 1)
    image, z = image.copy(), z.copy()
    image[gap] = np.rint(colours.sum(axis=0)[gap] / count[gap, None]).astype(np.uint8)
    z[gap] = depths.sum(axis=0)[gap] / count[gap]
    return image, z, hit | gap


def _grow_background(
    image: np.ndarray, z: np.ndarray, hit: np.ndarray, holes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fills `holes` from their farthest rendered 8-neighbour (the background behind a moved arm,
    not the arm beside it), a few rounds so that holes a few pixels wide close from their rim."""
    image, z, hit = image.copy(), z.copy(), hit.copy()
    for _ in range(FILL_PASSES):
        todo = holes & ~hit
        if not todo.any():
            break
        depths = np.stack(_neighbours(np.where(hit, z, -np.inf), -np.inf))  # (8, h, w)
        farthest = np.argmax(depths, axis=0)
        best_z = np.take_along_axis(depths, farthest[None], axis=0)[0]
        colours = np.stack(_neighbours(image, 0))  # (8, h, w, 3)
        best_rgb = np.take_along_axis(colours, farthest[None, ..., None], axis=0)[0]
        fill = todo & np.isfinite(best_z)
        image[fill], z[fill], hit = best_rgb[fill], best_z[fill], hit | fill
    return image, z, hit
