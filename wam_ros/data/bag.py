"""rosbag2 (MCAP) episodes written and read with `rosbags` (ROS-free).

One episode is one bag directory: `<name>/<name>.mcap` + `metadata.yaml` (what `ros2 bag info`
and `ros2 bag play` read on Jazzy) + `episode.json` (this package's episode record: robot,
cameras, calibration, task, teleop source, outcome). `episode.json` is written when the
episode starts and rewritten when it ends, so a recording that was killed still says what it was.

A killed recorder leaves an MCAP file without its summary and footer and no metadata.yaml;
`recover` scans the records that reached the disk and writes a complete bag of them.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from wam_ros.paths import share_dir

BAG_VERSION = 8  # what Jazzy's ros2 bag reads most reliably (ENVIRONMENT notes)
EPISODE_FILE = "episode.json"
LOCK_FILE = ".recording.lock"  # flock-ed by the writer; the kernel releases it when the writer dies
MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagError(ValueError):
    """A bag that cannot be written or read; the message names the path and the problem."""


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Jazzy's message types plus this package's msg/ (the definitions the nodes were built from,
    so the stored type hashes match the running system's)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict = {}
    for path in sorted((share_dir() / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"wam_ros/msg/{path.stem}"))
    store.register(types)
    return store


class EpisodeBagWriter:
    """Writes one episode bag. Not thread-safe: one writer thread owns it."""

    def __init__(self, path: Path, episode: dict[str, Any]):
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path}: exists already; an episode is never overwritten")
        self.episode = dict(episode)
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._lock = os.open(self.path / LOCK_FILE, os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._connections: dict[str, Any] = {}
        self.messages = 0
        self.bytes = 0
        write_episode_record(self.path, self.episode)

    def add_topic(self, topic: str, msgtype: str) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())

    def write(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic], int(stamp_ns), data)
        self.messages += 1
        self.bytes += len(data)

    def flush(self) -> None:
        """Pushes buffered messages to the disk, so a crash loses at most what came after.

        rosbags keeps messages in a pending chunk until it exceeds 1 MiB (images close a chunk
        each; joint states alone would wait minutes), then writes through a buffered file.
        Uses rosbags 0.11's MCAP storage internals (pinned in requirements/venv.txt)."""
        storage = self._writer.storage
        if storage is None:
            return
        if storage.chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()

    def close(self, **outcome: Any) -> dict[str, Any]:
        """Writes the summary, metadata.yaml and the final episode record."""
        self.episode.update(outcome)
        self._writer.set_custom_data("wam_ros.episode", json.dumps(self.episode, sort_keys=True))
        self._writer.close()
        write_episode_record(self.path, self.episode)
        (self.path / LOCK_FILE).unlink()
        os.close(self._lock)
        return self.episode


def write_episode_record(path: Path, episode: dict[str, Any]) -> None:
    tmp = Path(path) / f".{EPISODE_FILE}.tmp"
    tmp.write_text(json.dumps(episode, indent=2, sort_keys=True))
    tmp.replace(Path(path) / EPISODE_FILE)  # atomic: a crash leaves the old or the new record


def read_episode_record(path: Path) -> dict[str, Any]:
    record = Path(path) / EPISODE_FILE
    if not record.is_file():
        return {}
    try:
        return json.loads(record.read_text())
    except json.JSONDecodeError as exc:
        raise BagError(f"{record}: {exc}") from None


def is_complete(path: Path) -> bool:
    return (Path(path) / "metadata.yaml").is_file()


def is_being_recorded(path: Path) -> bool:
    """True while a live writer (this or another process) holds the episode's lock."""
    lock = Path(path) / LOCK_FILE
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


# --- recovery of a bag whose writer was killed ------------------------------------------------
@dataclass
class _Scan:
    schemas: dict[int, str]                      # schema id -> message type
    channels: dict[int, tuple[str, int]]         # channel id -> (topic, schema id)
    messages: list[tuple[int, int, bytes]]       # (channel id, log time, data)
    truncated_at: int | None


def _records(bio: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    while bio.tell() + 9 <= end:
        start = bio.tell()
        opcode, length = struct.unpack("<BQ", bio.read(9))
        if start + 9 + length > end:
            bio.seek(start)
            return
        yield opcode, bio.read(length)


def _string(buf: bytes, offset: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, offset)
    return buf[offset + 4:offset + 4 + n].decode(), offset + 4 + n


def _scan_records(records: Iterator[tuple[int, bytes]], scan: _Scan) -> None:
    for opcode, body in records:
        if opcode == 0x03:  # schema: id, name, encoding, data
            (sid,) = struct.unpack_from("<H", body, 0)
            name, _ = _string(body, 2)
            scan.schemas[sid] = name
        elif opcode == 0x04:  # channel: id, schema id, topic, ...
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, _ = _string(body, 4)
            scan.channels[cid] = (topic, sid)
        elif opcode == 0x05:  # message: channel, sequence, log time, publish time, data
            cid, _, log_time = struct.unpack_from("<HIQ", body, 0)
            scan.messages.append((cid, log_time, body[22:]))
        elif opcode == 0x06:  # chunk: start, end, size, crc, compression, records
            offset = 28
            compression, offset = _string(body, offset)
            if compression:
                raise BagError(f"cannot recover a bag with {compression!r}-compressed chunks")
            (size,) = struct.unpack_from("<Q", body, offset)
            inner = io.BytesIO(body[offset + 8:offset + 8 + size])
            _scan_records(_records(inner, size), scan)


def recover(path: Path) -> dict[str, Any]:
    """Rebuilds a complete bag from what a killed writer left in `path`; returns the episode
    record, marked `recovered` (and `partial` unless the episode had ended). Idempotent on a
    complete bag (returns its record unchanged)."""
    path = Path(path)
    if is_complete(path):
        return read_episode_record(path)
    if is_being_recorded(path):
        raise BagError(f"{path}: is being recorded (a running recorder holds it); end the episode first")
    files = sorted(path.glob("*.mcap"))
    if len(files) != 1:
        raise BagError(f"{path}: expected one .mcap file to recover, found {len(files)}")
    scan = _Scan({}, {}, [], None)
    with files[0].open("rb") as bio:
        if bio.read(8) != MCAP_MAGIC:
            raise BagError(f"{files[0]}: not an MCAP file (bad magic)")
        end = files[0].stat().st_size
        _scan_records(_records(bio, end), scan)
        scan.truncated_at = bio.tell() if bio.tell() < end else None
    episode = read_episode_record(path)
    episode.update(recovered=True, recovered_messages=len(scan.messages),
                   recovered_bytes_dropped=(end - scan.truncated_at) if scan.truncated_at else 0)
    if "outcome" not in episode or episode["outcome"] == "recording":
        episode["outcome"] = "partial"
    tmp = path.with_name(path.name + ".recovering")
    if tmp.exists():
        shutil.rmtree(tmp)
    writer = Writer(tmp, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    store = typestore()
    connections = {cid: writer.add_connection(topic, scan.schemas[sid], typestore=store)
                   for cid, (topic, sid) in scan.channels.items()}
    for cid, stamp, data in scan.messages:
        writer.write(connections[cid], stamp, data)
    writer.set_custom_data("wam_ros.episode", json.dumps(episode, sort_keys=True))
    writer.close()
    (tmp / f"{tmp.name}.mcap").rename(tmp / f"{path.name}.mcap")
    # metadata.yaml names the storage file: point it at the final name
    meta = tmp / "metadata.yaml"
    meta.write_text(meta.read_text().replace(f"{tmp.name}.mcap", f"{path.name}.mcap"))
    files[0].rename(path / f"{files[0].name}.killed")
    for item in tmp.iterdir():
        item.rename(path / item.name)
    tmp.rmdir()
    (path / f"{files[0].name}.killed").unlink()
    write_episode_record(path, episode)
    (path / LOCK_FILE).unlink(missing_ok=True)  # left by the killed writer
    return episode
