"""Image payloads of recorded messages (ROS-free): raw sensor_msgs/Image arrays and the
image_transport compressed formats (JPEG/PNG color, compressedDepth PNG for 16UC1 depth)."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image as PILImage

# compressed_depth_image_transport prefixes the PNG with its ConfigHeader
# {int32 format; float depthParam[2]}; for 16UC1 only the PNG after it matters.
DEPTH_HEADER = struct.pack("<iff", 0, 0.0, 0.0)
ENCODINGS = {  # encoding -> (dtype, channels)
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1),
    "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1), "32FC1": (np.float32, 1),
}


class ImageError(ValueError):
    """An image payload that cannot be decoded; the message says which field is wrong."""


def image_array(height: int, width: int, encoding: str, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    """(H, W, C) or (H, W) view of a raw sensor_msgs/Image's fields, in the encoding's channel
    order (no copy unless rows are padded). Raises ImageError (a ValueError) when malformed."""
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if is_bigendian:
        raise ImageError("big-endian images are not supported")
    dtype, channels = ENCODINGS[encoding]
    row = width * channels * np.dtype(dtype).itemsize
    buf = data.view(np.uint8).ravel() if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if step < row or buf.size != step * height:
        raise ImageError(f"image {width}x{height} {encoding}: step {step} and {buf.size} bytes do not match")
    rows = buf.reshape(height, step)[:, :row] if step != row else buf
    out = np.ascontiguousarray(rows).view(dtype)
    return out.reshape((height, width, channels) if channels > 1 else (height, width))


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """float32 metres -> uint16 millimetres (16UC1); 0, NaN and inf become 0 (no measurement)."""
    return np.clip(np.rint(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0), 0, 65535).astype(np.uint16)


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


def decode_compressed(fmt: str, data: bytes | np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 or depth (H, W) uint16 from a CompressedImage's format and data."""
    raw = bytes(data)
    if "compressedDepth" in fmt:
        raw = raw[len(DEPTH_HEADER):]
    try:
        with PILImage.open(io.BytesIO(raw)) as image:
            if "compressedDepth" in fmt:
                return np.asarray(image, dtype=np.uint16)
            return np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise ImageError(f"cannot decode {fmt!r} payload of {len(raw)} bytes: {exc}") from None


def colorize_depth(depth_mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> RGB (near red .. far blue, 2nd-98th percentile), black where unknown."""
    d = depth_mm.astype(np.float32) / 1000.0
    valid = d > 0
    lo, hi = (np.percentile(d[valid], [2, 98]) if valid.any() else (0.0, 1.0))
    x = np.clip((d - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = np.stack([np.clip(1.5 - abs(4 * x - 3), 0, 1), np.clip(1.5 - abs(4 * x - 2), 0, 1),
                    np.clip(1.5 - abs(4 * x - 1), 0, 1)], axis=-1)
    rgb[~valid] = 0.0
    return (rgb * 255).astype(np.uint8)
