"""rosbag2 (MCAP) episodes written and read with `rosbags` (ROS-free).

One episode is one bag directory: `<name>/<name>.mcap` + `metadata.yaml` (what `ros2 bag info`
and `ros2 bag play` read on Jazzy) + `episode.json` (this package's episode record: robot,
cameras, calibration, task, teleop source, outcome). `episode.json` is written when the
episode starts and rewritten when it ends, so a recording that was killed still says what it was.

A killed recorder, or one whose disk filled up, leaves an MCAP file without its summary and
footer and no metadata.yaml; `recover` ends the file after its last complete chunk where it lies
(no second copy, so it works on a full disk) and writes the missing index and records.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import struct
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Callable

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from ruamel.yaml import YAML

from wam_ros.paths import share_dir

BAG_VERSION = 9  # what Jazzy's `ros2 bag record` writes
ROS_DISTRO = "jazzy"
EPISODE_FILE = "episode.json"
LOCK_FILE = ".recording.lock"  # flock-ed by the writer; the kernel releases it when the writer dies
RESERVE_FILE = ".reserve"  # deleted to make room for the index and the records on a full disk
RESERVE_BYTES = 2**20
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


def _yaml_text(data: Any) -> str:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    text = io.StringIO()
    yaml.dump(data, text)
    return text.getvalue()


def _as_distro(metadata_text: str, wrapped: bool) -> str:
    """rosbags writes `ros_distro: rosbags`; a Jazzy recorder's bag names its distro."""
    data = YAML(typ="safe").load(metadata_text)
    (data["rosbag2_bagfile_information"] if wrapped else data)["ros_distro"] = ROS_DISTRO
    return _yaml_text(data)


def _pack_string(text: str) -> bytes:
    """An MCAP string: u32 length, then UTF-8."""
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _channel_metadata(offered_qos_profiles: str, type_hash: str) -> bytes:
    """MCAP channel user data as rosbag2_storage_mcap (Jazzy) writes it."""
    return b"".join(
        _pack_string(text) for text in ("offered_qos_profiles", offered_qos_profiles, "topic_type_hash", type_hash)
    )


class _Rosbag2McapStorage(McapWriter):
    """rosbags' MCAP storage, with the channel user data and embedded metadata of a Jazzy bag."""

    def add_connection(self, connection: Any, offered_qos_profiles: str) -> None:
        channel = Channel(
            connection.id,
            connection.msgtype,
            connection.topic,
            connection.ext.serialization_format,
            _channel_metadata(offered_qos_profiles, connection.digest),
        )
        self.channels.append(channel)
        self.channel_stats[connection.id] = 0
        write_channel(self.chunk.bio, channel, self.schemas)

    def close(self, version: int, metadata: str) -> None:
        super().close(version, _as_distro(metadata, wrapped=False).strip())


class _Rosbag2Writer(Writer):
    STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _Rosbag2McapStorage}

    def close(self) -> None:
        super().close()
        _replace_text(self.metapath, _as_distro(self.metapath.read_text(), wrapped=True))


class EpisodeBagWriter:
    """Writes one episode bag. Not thread-safe: one writer thread owns it."""

    def __init__(self, path: Path, episode: dict[str, Any]):
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path}: exists already; an episode is never overwritten")
        self.episode = dict(episode)
        self._writer = _Rosbag2Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._lock = -1
        try:
            self._writer.open()
            self._lock = os.open(self.path / LOCK_FILE, os.O_CREAT | os.O_RDWR)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            # random bytes: a compressing filesystem would store zeros in no space at all
            (self.path / RESERVE_FILE).write_bytes(os.urandom(RESERVE_BYTES))
            write_episode_record(self.path, self.episode)
        except BaseException:  # a full disk at the start: leave no episode that holds nothing
            with suppress(OSError):
                self._writer.abort()
            self.release()
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        self._connections: dict[str, Any] = {}
        self.messages = 0
        self.bytes = 0

    def add_topic(self, topic: str, msgtype: str, offered_qos: list[dict[str, Any]] = ()) -> None:
        """`offered_qos`: the publishers' QoS profiles, as rosbag2 stores them (v9 keys: history,
        depth, reliability, durability, deadline/lifespan/liveliness_lease_duration as {sec, nsec},
        liveliness, avoid_ros_namespace_conventions; policies as rmw enum values or names), so
        `ros2 bag play` offers what the publishers offered (a latched topic stays latched)."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=parse_qos(list(offered_qos))
            )

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
        """Writes the summary, metadata.yaml and the final episode record. On an OSError (a full
        disk) the bag is left for `finish_in_place`."""
        self.episode.update(outcome)
        (self.path / RESERVE_FILE).unlink(missing_ok=True)  # room for the summary on a full disk
        self._writer.set_custom_data("wam_ros.episode", json.dumps(self.episode, sort_keys=True))
        self._writer.close()
        write_episode_record(self.path, self.episode)
        self.release()
        return self.episode

    def finish_in_place(self, **outcome: Any) -> dict[str, Any]:
        """After a failed write: ends the file after its last complete chunk where it lies and
        writes the index and the records (as `recover` does). What had not reached the disk, at most
        a flush period, is lost. Raises BagError when even that cannot be written; `episode` then
        holds the record, and calling again retries."""
        self.episode.update(outcome)
        storage, self._writer.storage = self._writer.storage, None
        if storage is not None:
            with suppress(OSError):  # its buffer cannot be written either: closing the file is what counts
                storage.abort()
        for name in ("metadata.yaml", "metadata.yaml.tmp"):  # incomplete until the records are written
            (self.path / name).unlink(missing_ok=True)  # (.tmp: what rosbags' failed close left)

        def on_disk(layout: _Layout) -> dict[str, Any]:
            self.episode["messages_on_disk"] = {
                topic: layout.counts.get(cid, 0) for cid, topic in layout.topics().items()
            }
            return self.episode

        file, layout, _ = _finish_mcap(self.path, on_disk)
        _write_records(self.path, file, layout, self.episode)
        self.release()
        return self.episode

    def release(self) -> None:
        """Gives up the episode's lock (as the kernel would when the process ends)."""
        if self._lock >= 0:
            with suppress(OSError):
                (self.path / LOCK_FILE).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = -1


def _replace_text(target: Path, text: str) -> None:
    """Atomic: a crash leaves the old or the new file; a full disk leaves the old one and no temp file."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(target)) from exc  # a failed close names no file
    tmp.replace(target)


def write_episode_record(path: Path, episode: dict[str, Any]) -> None:
    _replace_text(Path(path) / EPISODE_FILE, json.dumps(episode, indent=2, sort_keys=True))


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


# --- finishing a bag where it lies: after a killed writer or a failed write -------------------
# MCAP records (mcap.dev/spec): opcode u8, body length u64, body; strings and maps u32-prefixed.
_FOOTER, _SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _MESSAGE_INDEX = 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
_CHUNK_INDEX, _STATISTICS, _METADATA, _METADATA_INDEX = 0x08, 0x0B, 0x0C, 0x0D
_SUMMARY_OFFSET, _DATA_END = 0x0E, 0x0F


@dataclass
class _Chunk:
    offset: int
    end: int  # after the chunk record; its message index records follow
    start_time: int
    end_time: int
    size: int  # of its records (uncompressed)
    index_offsets: dict[int, int] = field(default_factory=dict)  # channel -> its message index record
    index_end: int = 0


@dataclass
class _Layout:
    """The complete records of an MCAP data section, as a scan found them."""

    schemas: dict[int, bytes] = field(default_factory=dict)  # id -> record body
    channels: dict[int, bytes] = field(default_factory=dict)  # id -> record body
    chunks: list[_Chunk] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)  # channel -> messages
    start_time: int = 2**64 - 1
    end_time: int = 0
    last_index: dict[int, list[tuple[int, int]]] = field(
        default_factory=dict
    )  # last chunk: channel -> (log time, offset)
    end: int = len(MCAP_MAGIC)  # where the complete records end
    cut_bytes: int = 0  # of a record cut short after them (the kill, the full disk)

    def topics(self) -> dict[int, str]:
        return {cid: _string(body, 4)[0] for cid, body in sorted(self.channels.items())}


def _string(buf: bytes, offset: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, offset)
    return buf[offset + 4 : offset + 4 + n].decode(), offset + 4 + n


def _record(opcode: int, body: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(body)) + body


def _keep_definition(opcode: int, body: bytes, layout: _Layout) -> None:
    (key,) = struct.unpack_from("<H", body)
    (layout.schemas if opcode == _SCHEMA else layout.channels)[key] = body


def _scan_chunk(file: Path, body: bytes, offset: int, end: int, layout: _Layout) -> _Chunk:
    start_time, end_time, size = struct.unpack_from("<QQQ", body)
    compression, at = _string(body, 28)
    if compression:
        raise BagError(f"{file}: cannot recover a bag with {compression!r}-compressed chunks")
    records = memoryview(body)[at + 8 : at + 8 + struct.unpack_from("<Q", body, at)[0]]
    layout.last_index = {}
    inner = 0
    while inner + 9 <= len(records):
        opcode, length = struct.unpack_from("<BQ", records, inner)
        if opcode == _MESSAGE:
            cid, _, log_time = struct.unpack_from("<HIQ", records, inner + 9)
            layout.last_index.setdefault(cid, []).append((log_time, inner))
            layout.counts[cid] = layout.counts.get(cid, 0) + 1
            layout.start_time, layout.end_time = min(layout.start_time, log_time), max(layout.end_time, log_time)
        elif opcode in (_SCHEMA, _CHANNEL):
            _keep_definition(opcode, bytes(records[inner + 9 : inner + 9 + length]), layout)
        inner += 9 + length
    return _Chunk(offset, end, start_time, end_time, size)


def _scan(file: Path, bio: BinaryIO, size: int) -> _Layout:
    """Complete records from the start of the file; stops at a record cut short or at the data end
    (an earlier finish: its index is rewritten)."""
    layout = _Layout()
    pos = len(MCAP_MAGIC)
    while pos + 9 <= size:
        bio.seek(pos)
        opcode, length = struct.unpack("<BQ", bio.read(9))
        end = pos + 9 + length
        if end > size:
            layout.cut_bytes = size - pos
            break
        if opcode == _DATA_END:
            break
        if opcode == _CHUNK:
            layout.chunks.append(_scan_chunk(file, bio.read(length), pos, end, layout))
        elif opcode == _MESSAGE_INDEX and layout.chunks:
            (cid,) = struct.unpack("<H", bio.read(2))
            layout.chunks[-1].index_offsets[cid] = pos
            layout.chunks[-1].index_end = end
        elif opcode in (_SCHEMA, _CHANNEL):
            _keep_definition(opcode, bio.read(length), layout)
        elif opcode == _MESSAGE:
            raise BagError(f"{file}: messages outside chunks (not written by this package's recorder)")
        pos = end
    layout.end = pos
    return layout


def _chunk_index(chunk: _Chunk) -> bytes:
    offsets = b"".join(struct.pack("<HQ", cid, at) for cid, at in sorted(chunk.index_offsets.items()))
    return (
        struct.pack("<QQQQI", chunk.start_time, chunk.end_time, chunk.offset, chunk.end - chunk.offset, len(offsets))
        + offsets
        + struct.pack("<QIQQ", chunk.index_end - chunk.end if chunk.index_offsets else 0, 0, chunk.size, chunk.size)
    )


def _index(layout: _Layout, at: int, bag_metadata: str) -> bytes:
    """What follows the last complete chunk, written at `at` (its end): that chunk's message
    indexes (the cut may have taken them), the embedded `rosbag2` metadata record, the data end,
    and the summary that a finished bag has (schemas, channels, chunk indexes, metadata index,
    statistics, their offsets) with the footer."""
    out = io.BytesIO()
    if layout.chunks:
        last = layout.chunks[-1]
        last.index_offsets = {}
        for cid, entries in sorted(layout.last_index.items()):
            last.index_offsets[cid] = at + out.tell()
            out.write(
                _record(
                    _MESSAGE_INDEX,
                    struct.pack("<HI", cid, 16 * len(entries))
                    + b"".join(struct.pack("<QQ", *entry) for entry in entries),
                )
            )
        last.index_end = at + out.tell()
    metadata_at = at + out.tell()
    entries = _pack_string("serialized_metadata") + _pack_string(bag_metadata)
    out.write(_record(_METADATA, _pack_string("rosbag2") + struct.pack("<I", len(entries)) + entries))
    metadata_index = struct.pack("<QQ", metadata_at, at + out.tell() - metadata_at) + _pack_string("rosbag2")
    out.write(_record(_DATA_END, struct.pack("<I", 0)))
    summary_start = at + out.tell()
    counts = {cid: layout.counts.get(cid, 0) for cid in layout.channels}
    total = sum(counts.values())
    statistics = struct.pack(
        "<QHIIIIQQI",
        total,
        len(layout.schemas),
        len(layout.channels),
        0,
        1,
        len(layout.chunks),
        layout.start_time if total else 0,
        layout.end_time,
        10 * len(counts),
    ) + b"".join(struct.pack("<HQ", cid, n) for cid, n in sorted(counts.items()))
    groups = []
    for opcode, bodies in (
        (_SCHEMA, [b for _, b in sorted(layout.schemas.items())]),
        (_CHANNEL, [b for _, b in sorted(layout.channels.items())]),
        (_CHUNK_INDEX, [_chunk_index(c) for c in layout.chunks]),
        (_METADATA_INDEX, [metadata_index]),
        (_STATISTICS, [statistics]),
    ):
        start = out.tell()
        for body in bodies:
            out.write(_record(opcode, body))
        if out.tell() > start:
            groups.append((opcode, at + start, out.tell() - start))
    offsets_start = at + out.tell()
    for group in groups:
        out.write(_record(_SUMMARY_OFFSET, struct.pack("<BQQ", *group)))
    out.write(_record(_FOOTER, struct.pack("<QQI", summary_start, offsets_start, 0)))
    out.write(MCAP_MAGIC)
    return out.getvalue()


def _free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free} bytes free there"
    except OSError as exc:
        return f"free space unknown: {exc.strerror}"


def _finish_mcap(path: Path, episode_of: Callable[[_Layout], dict[str, Any]]) -> tuple[Path, _Layout, dict[str, Any]]:
    """Ends the MCAP file in `path` after its last complete chunk, where it lies: no second copy.
    On a full disk the room for the index comes from the writer's reserve (deleted first) and from
    the record the failure cut short. Raises BagError saying why when it cannot be written; the
    file is then left as a killed writer leaves it, to be finished again once there is room."""
    (path / RESERVE_FILE).unlink(missing_ok=True)
    files = sorted(path.glob("*.mcap"))
    if len(files) != 1:
        raise BagError(f"{path}: expected one .mcap file to recover, found {len(files)}")
    file = files[0]
    with file.open("r+b", buffering=0) as bio:
        if bio.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise BagError(f"{file}: not an MCAP file (bad magic)")
        layout = _scan(file, bio, os.fstat(bio.fileno()).st_size)
        at = layout.chunks[-1].end if layout.chunks else layout.end
        episode = episode_of(layout)
        index = _index(layout, at, _yaml_text(_bag_information(file, layout, episode)).strip())
        try:
            bio.truncate(at)  # gives the cut record's blocks back
            bio.seek(at)
            view = memoryview(index)
            while view:
                view = view[bio.write(view) :]
            os.fsync(bio.fileno())
        except OSError as exc:
            with suppress(OSError):
                bio.truncate(at)
            raise BagError(
                f"{file}: cannot write its index ({len(index)} bytes) in place: {exc.strerror} "
                f"({_free_space(path)}); make room and recover it again"
            ) from exc
    return file, layout, episode


def _bag_information(file: Path, layout: _Layout, episode: dict[str, Any]) -> dict[str, Any]:
    """The bag's `rosbag2_bagfile_information` (what metadata.yaml holds and the MCAP file embeds),
    as a finished bag has it, from the scan."""
    topics = []
    for cid, body in sorted(layout.channels.items()):
        _, sid = struct.unpack_from("<HH", body)
        name, at = _string(body, 4)
        encoding, at = _string(body, at)
        metadata, end = {}, at + 4 + struct.unpack_from("<I", body, at)[0]
        at += 4
        while at < end:
            key, at = _string(body, at)
            metadata[key], at = _string(body, at)
        msgtype, _ = _string(layout.schemas[sid], 2)
        qos = YAML(typ="safe").load(metadata.get("offered_qos_profiles") or "[]") or []
        topics.append(
            {
                "topic_metadata": {
                    "name": name,
                    "type": msgtype,
                    "serialization_format": encoding,
                    "offered_qos_profiles": qos,
                    "type_description_hash": metadata.get("topic_type_hash") or typestore().hash_rihs01(msgtype),
                },
                "message_count": layout.counts.get(cid, 0),
            }
        )
    count = sum(layout.counts.values())

    def span() -> dict[str, Any]:  # new dicts each time: shared ones would be dumped as YAML aliases
        return {
            "starting_time": {"nanoseconds_since_epoch": layout.start_time if count else 0},
            "duration": {"nanoseconds": layout.end_time - layout.start_time if count else 0},
            "message_count": count,
        }

    return {
        "version": BAG_VERSION,
        "storage_identifier": "mcap",
        "relative_file_paths": [file.name],
        **span(),
        "topics_with_message_count": topics,
        "compression_format": "",
        "compression_mode": "",
        "files": [{"path": file.name, **span()}],
        "custom_data": {"wam_ros.episode": json.dumps(episode, sort_keys=True)},
        "ros_distro": ROS_DISTRO,
    }


def _write_records(path: Path, file: Path, layout: _Layout, episode: dict[str, Any]) -> None:
    """episode.json, then metadata.yaml: a bag with metadata.yaml is complete (`is_complete`)."""
    try:
        write_episode_record(path, episode)
        _replace_text(
            path / "metadata.yaml", _yaml_text({"rosbag2_bagfile_information": _bag_information(file, layout, episode)})
        )
    except OSError as exc:
        raise BagError(
            f"{exc.filename}: cannot write it: {exc.strerror} ({_free_space(path)}); make room and recover {path} again"
        ) from exc


def recover(path: Path) -> dict[str, Any]:
    """Finishes a bag whose writer was killed, or failed on a full disk, where it lies (see
    `_finish_mcap`); returns the episode record, marked `recovered` (and `partial` unless the
    episode had ended). Idempotent on a complete bag (returns its record unchanged)."""
    path = Path(path)
    if is_complete(path):
        return read_episode_record(path)
    if is_being_recorded(path):
        raise BagError(f"{path}: is being recorded (a running recorder holds it); end the episode first")

    def recovered(layout: _Layout) -> dict[str, Any]:
        episode = read_episode_record(path)
        dropped = layout.cut_bytes + (episode.get("recovered_bytes_dropped", 0) if episode.get("recovered") else 0)
        episode.update(
            recovered=True, recovered_messages=sum(layout.counts.values()), recovered_bytes_dropped=dropped
        )  # a finish done again: the first one's cut counts
        if "outcome" not in episode or episode["outcome"] == "recording":
            episode["outcome"] = "partial"
        return episode

    file, layout, episode = _finish_mcap(path, recovered)
    _write_records(path, file, layout, episode)
    (path / LOCK_FILE).unlink(missing_ok=True)  # left by the killed writer
    return episode
