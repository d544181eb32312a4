"""Image payloads (ROS-free): raw sensor_msgs/Image fields checked and viewed as arrays, CameraInfo
intrinsics checked, and the image_transport compressed formats (JPEG/PNG color, compressedDepth
PNG for 16UC1 depth). The nodes check every live image with the same functions."""

from __future__ import annotations

import io
import struct
from typing import Iterable, Sequence

import numpy as np
from PIL import Image as PILImage

# compressed_depth_image_transport prefixes the PNG with its ConfigHeader
# {int32 format; float depthParam[2]}; for 16UC1 only the PNG after it matters.
DEPTH_HEADER = struct.pack("<iff", 0, 0.0, 0.0)
ENCODINGS = {  # encoding -> (dtype, channels)
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "mono8": (np.uint8, 1),
    "16UC1": (np.uint16, 1),
    "mono16": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


class ImageError(ValueError):
    """An image, or the CameraInfo describing it, that cannot be used: the message says which field
    is wrong; `check` names the check that failed (encoding, size, data size, camera_info, ...), so
    that nodes can count rejections by cause."""

    def __init__(self, message: str, check: str = "payload"):
        super().__init__(message)
        self.check = check


def image_layout(
    height: int,
    width: int,
    encoding: str,
    step: int,
    size: int,
    is_bigendian: int = 0,
    encodings: Iterable[str] = ENCODINGS,
) -> tuple[np.dtype, int]:
    """(dtype, channels) of a raw sensor_msgs/Image's fields, once they are known to describe a
    non-empty image of `size` data bytes in one of `encodings`. Raises ImageError (a ValueError)."""
    if encoding not in ENCODINGS or encoding not in encodings:
        raise ImageError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(e for e in encodings if e in ENCODINGS)}",
            "encoding",
        )
    if is_bigendian:
        raise ImageError("big-endian images are not supported", "encoding")
    if width <= 0 or height <= 0:
        raise ImageError(f"image {width}x{height} has no pixels", "size")
    dtype, channels = ENCODINGS[encoding]
    row = width * channels * np.dtype(dtype).itemsize
    if step < row:
        raise ImageError(
            f"image {width}x{height} {encoding}: step {step} is less than the {row} bytes of a row", "data size"
        )
    if size != step * height:
        raise ImageError(
            f"image {width}x{height} {encoding}: {size} data bytes, but step {step} x height {height} "
            f"= {step * height}",
            "data size",
        )
    return np.dtype(dtype), channels


def image_array(
    height: int, width: int, encoding: str, step: int, data, is_bigendian: int = 0, encodings: Iterable[str] = ENCODINGS
) -> np.ndarray:
    """(H, W, C) or (H, W) view of a raw sensor_msgs/Image's fields, in the encoding's channel
    order (no copy unless rows are padded). Raises ImageError (a ValueError) when malformed or not
    in one of `encodings`."""
    buf = data.view(np.uint8).ravel() if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    dtype, channels = image_layout(height, width, encoding, step, buf.size, is_bigendian, encodings)
    row = width * channels * dtype.itemsize
    rows = buf.reshape(height, step)[:, :row] if step != row else buf
    out = np.ascontiguousarray(rows).view(dtype)
    return out.reshape((height, width, channels) if channels > 1 else (height, width))


def camera_matrix(k: Sequence[float], width: int, height: int) -> np.ndarray:
    """The 3x3 intrinsics of a CameraInfo (k row-major) for width x height images. Raises ImageError
    unless they describe a calibrated camera: finite, focal lengths > 0, last row (0, 0, 1) (an
    all-zero K is ROS's "uncalibrated"; NaN would turn every lifted point into NaN)."""
    if width <= 0 or height <= 0:
        raise ImageError(f"CameraInfo {width}x{height} describes no pixels", "camera_info")
    K = np.asarray(k, dtype=float)
    if K.shape != (9,):
        raise ImageError(f"CameraInfo K has shape {K.shape}, expected 9 values", "camera_info")
    K = K.reshape(3, 3)
    if not np.isfinite(K).all() or not (K[0, 0] > 0 and K[1, 1] > 0) or not np.allclose(K[2], (0.0, 0.0, 1.0)):
        raise ImageError(
            f"CameraInfo K {K.ravel().tolist()} is not a calibrated camera matrix (finite, fx, fy > 0, last row 0 0 1)",
            "camera_info",
        )
    return K


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """float32 metres -> uint16 millimetres (16UC1); 0, NaN and inf become 0 (no measurement)."""
    return np.clip(np.rint(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0), 0, 65535).astype(
        np.uint16
    )


def check_jpeg_quality(quality: int) -> None:
    """Raises ValueError unless `quality` is a JPEG quality (1..100)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg_quality {quality}: expected 1..100")


def encode_color(rgb: np.ndarray, codec: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """(format, data) of a sensor_msgs/CompressedImage for an RGB image."""
    buf = io.BytesIO()
    if codec == "jpeg":
        PILImage.fromarray(rgb).save(buf, "JPEG", quality=int(quality))
    elif codec == "png":
        PILImage.fromarray(rgb).save(buf, "PNG", compress_level=1)
    else:
        raise ImageError(f"color codec {codec!r}: expected jpeg or png")
    return f"rgb8; {codec} compressed bgr8", buf.getvalue()


def encode_depth(depth: np.ndarray) -> tuple[str, bytes]:
    """(format, data) of a compressedDepth CompressedImage for uint16 millimetres (lossless)."""
    if depth.dtype != np.uint16:
        raise ImageError(f"depth must be uint16 millimetres to compress losslessly, got {depth.dtype}")
    buf = io.BytesIO()
    PILImage.fromarray(depth).save(buf, "PNG", compress_level=1)
    return "16UC1; compressedDepth png", DEPTH_HEADER + buf.getvalue()


def decode_compressed(fmt: str, data: bytes | np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB (H, W, 3) uint8 or depth (H, W) uint16 from a CompressedImage's format and data. With
    `size` (height, width), an image that declares another size is refused before it is decoded
    (a corrupt or hostile header cannot make this allocate gigabytes). Raises ImageError."""
    raw = bytes(data)
    depth = "compressedDepth" in fmt
    if depth:
        raw = raw[len(DEPTH_HEADER) :]
    try:
        with PILImage.open(io.BytesIO(raw)) as image:
            if size is not None and image.size != (size[1], size[0]):
                raise ImageError(
                    f"{fmt!r} payload is {image.size[0]}x{image.size[1]}, expected {size[1]}x{size[0]}", "size"
                )
            if depth and image.mode not in ("I;16", "I;16B", "I", "L"):
                raise ImageError(f"{fmt!r} payload has pixel mode {image.mode}, expected 16-bit grey", "encoding")
            return np.asarray(image, dtype=np.uint16) if depth else np.asarray(image.convert("RGB"))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, PILImage.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode {fmt!r} payload of {len(raw)} bytes: {type(exc).__name__}: {exc}") from None


def colorize_depth(depth_mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> RGB (near red .. far blue, 2nd-98th percentile), black where unknown."""
    d = depth_mm.astype(np.float32) / 1000.0
    valid = d > 0
    lo, hi = np.percentile(d[valid], [2, 98]) if valid.any() else (0.0, 1.0)
    x = np.clip((d - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = np.stack(
        [np.clip(1.5 - abs(4 * x - 3), 0, 1), np.clip(1.5 - abs(4 * x - 2), 0, 1), np.clip(1.5 - abs(4 * x - 1), 0, 1)],
        axis=-1,
    )
    rgb[~valid] = 0.0
    return (rgb * 255).astype(np.uint8)
