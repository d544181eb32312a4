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
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "16UC1": 1, "mono16": 1, "32FC1": 1}
DTYPES = {"rgb8": np.uint8, "bgr8": np.uint8, "mono8": np.uint8, "16UC1": np.uint16, "mono16": np.uint16,
          "32FC1": np.float32}


class ImageError(ValueError):
    """An image payload that cannot be decoded; the message says which field is wrong."""


def image_array(height: int, width: int, encoding: str, step: int, data: np.ndarray | bytes,
                is_bigendian: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB, (H, W) uint16 or (H, W) float32 view of a raw Image's fields."""
    if encoding not in DTYPES:
        raise ImageError(f"encoding {encoding!r} is not supported; expected one of {', '.join(DTYPES)}")
    if is_bigendian:
        raise ImageError("big-endian images are not supported")
    dtype, channels = np.dtype(DTYPES[encoding]), CHANNELS[encoding]
    row = width * channels * dtype.itemsize
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    if step < row or buf.size < step * height:
        raise ImageError(f"{encoding} {width}x{height}: step {step} and {buf.size} bytes do not hold the image")
    rows = buf[:step * height].reshape(height, step)[:, :row]
    out = np.ascontiguousarray(rows).view(dtype).reshape((height, width, channels) if channels > 1 else (height, width))
    return out[..., ::-1] if encoding == "bgr8" else out


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
