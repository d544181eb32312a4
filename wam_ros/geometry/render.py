"""Software rendering of coloured points through a pinhole camera (ROS-free, numpy z-buffer): a
picture of a 4D cloud where RViz cannot run (tests, headless demos)."""

from __future__ import annotations

import numpy as np

VIEW_DIRECTIONS = {  # where the eye sits, seen from the cloud's centre (base axes)
    "front": (1.0, 0.0, 0.6), "back": (-1.0, 0.0, 0.6), "left": (0.0, 1.0, 0.6), "right": (0.0, -1.0, 0.6),
    "top": (0.05, 0.0, 1.0), "oblique": (0.8, -0.8, 0.8),
}


def look_at(eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """base <- optical frame (z forward, x right, y down) of a camera at `eye` looking at `target`."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking straight along `up`
        x = np.cross(z, (1.0, 0.0, 0.0))
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, eye
    return T


def view_pose(points: np.ndarray, view: str, distance: float = 1.6) -> np.ndarray:
    """A named viewpoint (VIEW_DIRECTIONS) looking at the median of the points."""
    if view not in VIEW_DIRECTIONS:
        raise ValueError(f"view {view!r}: expected one of {sorted(VIEW_DIRECTIONS)}")
    centre = np.median(points, axis=0) if len(points) else np.zeros(3)
    direction = np.array(VIEW_DIRECTIONS[view])
    return look_at(centre + distance * direction / np.linalg.norm(direction), centre)


def render_points(points: np.ndarray, colors: np.ndarray, camera_pose: np.ndarray, K: np.ndarray,
                  size: tuple[int, int], radius: int = 1, background: int = 255) -> np.ndarray:
    """(height, width, 3) uint8 image of the points (nearest wins), each a square of 2 radius + 1 px."""
    h, w = size
    image = np.full((h, w, 3), background, np.uint8)
    inverse = np.linalg.inv(camera_pose)
    local = points @ inverse[:3, :3].T + inverse[:3, 3]
    front = local[:, 2] > 0.01
    local, colors = local[front], colors[front]
    u = np.round(K[0, 0] * local[:, 0] / local[:, 2] + K[0, 2]).astype(np.int64)
    v = np.round(K[1, 1] * local[:, 1] / local[:, 2] + K[1, 2]).astype(np.int64)
    order = np.argsort(-local[:, 2])  # far first: nearer points overwrite them
    u, v, colors = u[order], v[order], colors[order]
    for du in range(-radius, radius + 1):
        for dv in range(-radius, radius + 1):
            uu, vv = u + du, v + dv
            inside = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            image[vv[inside], uu[inside]] = colors[inside]
    return image


def pinhole(size: tuple[int, int], fovy_deg: float = 50.0) -> np.ndarray:
    h, w = size
    f = (h / 2) / np.tan(np.radians(fovy_deg) / 2)
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])
