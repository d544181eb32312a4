"""Episode recorder (ROS-free): serialized messages in, one MCAP bag per episode out.

The ROS thread only hands over (topic, stamp, CDR bytes) and never waits for the disk; a writer
thread owns the bag, compresses images when asked, flushes once a second (a crash loses at most
that second) and watches the free disk space. Every message of a recording episode is either
written or counted as dropped (queue over its byte budget); none disappears silently.

A failed write (a full disk: ENOSPC, EDQUOT; or EIO, EFBIG, ...) ends the episode: the bag is
finished where it lies, readable up to the last flush, and its record says why. When even the record
cannot be written it is kept in memory, reported, and written once there is room again.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from wam_ros import __version__
from wam_ros.data.bag import EpisodeBagWriter, typestore
from wam_ros.data.images import check_jpeg_quality, depth_to_millimetres, encode_color, encode_depth, image_array

COMPRESSION_MODES = ("none", "jpeg", "png")
OUTCOMES = ("success", "failure", "partial", "disk_full", "disk_error", "error")
IMAGE_TYPE = "sensor_msgs/msg/Image"
EVENTS_TOPIC = "/wam_ros/episode_events"  # std_msgs/String JSON: start and stop of the episode, in the bag
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


class RecorderError(RuntimeError):
    """A request the recorder cannot honour now (already recording, too little disk, ...)."""


@dataclass(frozen=True)
class RecorderConfig:
    directory: Path
    compression: str = "none"  # images: none, jpeg (color) or png (color); depth is always PNG when compressed
    jpeg_quality: int = 90
    min_free_mb: float = 1024.0  # refuse to start / end the episode below this
    queue_mb: float = 1024.0  # images waiting for the disk; beyond it they are dropped (and counted)
    compression_threads: int = 0  # 0: one per core but one
    flush_period: float = 1.0  # seconds (wall clock) between flushes to the disk
    disk_check_period: float = 1.0

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSION_MODES:
            raise ValueError(f"compression {self.compression!r}: expected one of {', '.join(COMPRESSION_MODES)}")
        check_jpeg_quality(self.jpeg_quality)


@dataclass
class TopicStats:
    received: int = 0
    written: int = 0
    dropped: int = 0


# Messages this small (joint states, commands, camera_info) are queued even over the byte budget:
# they cost nothing next to the images the budget is for, and a demonstration without its joint
# states is worthless.
SMALL_MESSAGE_BYTES = 64 * 1024


@dataclass
class _Message:
    topic: str
    stamp_ns: int
    data: bytes | memoryview
    compressed: Future | None = None  # compression runs on the pool; the writer keeps the order


@dataclass
class _Control:
    action: str  # start | stop
    payload: Any = None
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None


def free_mb(directory: Path) -> float:
    return shutil.disk_usage(directory).free / 2**20


def failure_outcome(error: Exception) -> str:
    """The outcome of an episode that a failed write ended."""
    if isinstance(error, OSError):
        return "disk_full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "disk_error"
    return "error"


def describe_failure(error: Exception) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return f"{errno.errorcode.get(error.errno, error.errno)} ({error.strerror})"
    return f"{type(error).__name__} ({error})"


def next_episode_index(directory: Path) -> int:
    indices = [int(p.name.split("_")[-1]) for p in Path(directory).glob("episode_*") if p.name.split("_")[-1].isdigit()]
    return max(indices, default=-1) + 1


class Recorder:
    """`topics` maps each recorded topic to its message type (rosbags names, e.g.
    sensor_msgs/msg/JointState). With compression on, Image topics are stored as
    `<topic>/compressed` CompressedImage (the image_transport convention)."""

    def __init__(
        self,
        config: RecorderConfig,
        topics: dict[str, str],
        metadata: dict[str, Any] | None = None,
        on_event: Callable[[str, dict], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.topics = dict(topics)
        self.metadata = dict(metadata or {})
        self.on_event = on_event or (lambda kind, info: None)
        self._clock = clock
        Path(config.directory).mkdir(parents=True, exist_ok=True)
        self.stats = {topic: TopicStats() for topic in self.topics}
        self._queue: queue.Queue = queue.Queue()
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._recording = False
        self._bag: EpisodeBagWriter | None = None
        self.episodes_written = 0
        self.last_episode: dict[str, Any] = {}
        self.bytes_written = 0
        self.error = ""  # the write failure that ended the last episode, with its path
        self._unsaved: list[EpisodeBagWriter] = []  # ended bags whose records the disk refused
        self._unsaved_free = 0  # bytes free when they were last tried
        self._last_stamp_ns = 0
        self._pool = (
            ThreadPoolExecutor(
                config.compression_threads or max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="recorder-compress"
            )
            if config.compression != "none"
            else None
        )
        self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._thread.start()

    # --- called from the ROS thread ------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._recording

    @property
    def episode_path(self) -> Path | None:
        return self._bag.path if self._bag else None

    def submit(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> bool:
        """Queues one serialized message; False when not recording or dropped (counted)."""
        if not self._recording:
            return False
        stats = self.stats[topic]
        stats.received += 1
        size = len(data)
        with self._lock:
            if size > SMALL_MESSAGE_BYTES and self._queued_bytes + size > self.config.queue_mb * 2**20:
                stats.dropped += 1
                return False
            self._queued_bytes += size
        compressed = None
        if self._pool is not None and self.topics[topic] == IMAGE_TYPE:
            compressed = self._pool.submit(self._compress, data)
        self._queue.put(_Message(topic, int(stamp_ns), data, compressed))
        return True

    def start_episode(
        self,
        stamp_ns: int,
        task: str,
        teleop: str,
        offered_qos: dict[str, list[dict]] | None = None,
        timeout: float = 10.0,
    ) -> Path:
        """`offered_qos`: per recorded topic, its publishers' QoS profiles (see EpisodeBagWriter.add_topic)."""
        if self._recording:
            raise RecorderError(f"already recording {self.episode_path}")
        available = free_mb(self.config.directory)
        if available < self.config.min_free_mb:
            raise RecorderError(
                f"only {available:.0f} MB free in {self.config.directory}; "
                f"need {self.config.min_free_mb:.0f} MB (min_free_mb)"
            )
        index = next_episode_index(self.config.directory)
        episode = {
            **self.metadata,
            "index": index,
            "name": f"episode_{index:06d}",
            "task": task,
            "teleop": teleop,
            "software": f"wam_ros {__version__}",
            "compression": self.config.compression,
            "start_stamp_ns": int(stamp_ns),
            "outcome": "recording",
        }
        for stats in self.stats.values():
            stats.received = stats.written = stats.dropped = 0
        path = self._control("start", (episode, dict(offered_qos or {})), timeout)
        self._recording = True
        self.error = ""
        return path

    def stop_episode(self, stamp_ns: int, outcome: str, timeout: float = 60.0) -> dict[str, Any]:
        """Ends the episode once everything queued before this call is on the disk."""
        if outcome not in OUTCOMES:
            raise RecorderError(f"outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
        if not self._recording:
            ended = self.last_episode
            reason = f" ({ended['name']} ended {ended['outcome']}: {ended['error']})" if ended.get("error") else ""
            raise RecorderError(f"no episode is being recorded{reason}")
        self._recording = False
        return self._control("stop", {"outcome": outcome, "stop_stamp_ns": int(stamp_ns)}, timeout)

    def close(self, stamp_ns: int = 0) -> None:
        """Shutdown: an episode still open is kept and marked partial."""
        if self._recording:
            with suppress(RecorderError):  # a failed write may have ended it meanwhile
                self.stop_episode(stamp_ns, "partial")
        self._queue.put(None)
        self._thread.join(timeout=60.0)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def status(self) -> dict[str, Any]:
        """`free_mb` is None when the directory cannot be read (a disk that went away)."""
        try:
            free: float | None = round(free_mb(self.config.directory), 1)
        except OSError:
            free = None
        return {
            "recording": self._recording,
            "episode": str(self.episode_path or ""),
            "episodes_written": self.episodes_written,
            "queued_mb": round(self._queued_bytes / 2**20, 2),
            "mb_written": round(self.bytes_written / 2**20, 1),
            "dropped": sum(s.dropped for s in self.stats.values()),
            "free_mb": free,
            "error": self.error,
            "unsaved": [str(bag.path) for bag in self._unsaved],
        }

    def _control(self, action: str, payload: Any, timeout: float) -> Any:
        item = _Control(action, payload)
        self._queue.put(item)
        deadline = time.monotonic() + timeout
        while not item.done.wait(0.1):
            if not self._thread.is_alive():
                raise RecorderError(f"{action}: the writer thread has ended")
            if time.monotonic() > deadline:
                raise RecorderError(f"{action}: the writer did not answer within {timeout:.0f} s")
        if isinstance(item.result, Exception):
            raise RecorderError(f"{action}: {item.result}") from item.result
        return item.result

    # --- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        next_flush = next_check = self._clock()
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                item = False  # nothing arrived: still flush and check the disk below
            if item is None:
                self._retry_unsaved(final=True)
                return
            if isinstance(item, _Control):
                try:
                    item.result = self._handle(item)
                except Exception as exc:  # reported to the caller, the thread lives on
                    item.result = exc
                item.done.set()
            try:
                if isinstance(item, _Message):
                    with self._lock:
                        self._queued_bytes -= len(item.data)
                    self._write(item)
                now = self._clock()
                if self._bag is not None and now >= next_flush:
                    self._bag.flush()
                    next_flush = now + self.config.flush_period
                if now >= next_check:
                    next_check = now + self.config.disk_check_period
                    self._retry_unsaved()
                    if self._bag is not None and free_mb(self.config.directory) < self.config.min_free_mb:
                        self._finish(
                            {
                                "outcome": "disk_full",
                                "detail": f"free space fell below {self.config.min_free_mb:.0f} MB",
                            }
                        )
            except Exception as exc:  # a failed write (full disk) ends the episode; the thread lives on
                if self._bag is None:
                    raise
                self._finish({}, error=exc)

    def _handle(self, item: _Control) -> Any:
        if item.action == "start":
            episode, offered_qos = item.payload
            bag = EpisodeBagWriter(Path(self.config.directory) / episode["name"], episode)
            for topic, msgtype in self.topics.items():
                bag.add_topic(*self._stored_as(topic, msgtype), offered_qos.get(topic, []))
            bag.add_topic(EVENTS_TOPIC, "std_msgs/msg/String")
            self._bag = bag
            self._last_stamp_ns = max(episode["start_stamp_ns"], 0)
            self._event(self._last_stamp_ns, {"event": "start", "task": episode["task"], "teleop": episode["teleop"]})
            self.on_event("started", bag.episode)
            return bag.path
        if item.action == "stop":
            if self._bag is None:  # ended by the writer already (disk full)
                return self.last_episode
            return self._finish(item.payload)
        raise RecorderError(f"unknown control {item.action!r}")

    def _finish(self, outcome: dict[str, Any], error: Exception | None = None) -> dict[str, Any]:
        """Ends the episode: closes the bag, or after a failed write (`error`, or one while closing)
        finishes it where it lies, its outcome saying why."""
        self._recording = False
        outcome = {"stop_stamp_ns": self._last_stamp_ns, **outcome}
        # messages that were queued before the stop request are already written (FIFO)
        counts = {
            t: {"received": s.received, "written": s.written, "dropped": s.dropped} for t, s in self.stats.items()
        }
        bag = self._bag
        if error is None:
            try:
                self._event(outcome["stop_stamp_ns"], {"event": "stop", **outcome})
                episode = bag.close(**outcome, messages=counts, bytes=bag.bytes)
            except Exception as exc:
                error = exc
        self._bag = None
        if error is not None:
            episode = self._finish_in_place(bag, {**outcome, "messages": counts, "bytes": bag.bytes}, error)
        self.episodes_written += 1
        self.last_episode = episode
        self.on_event("stopped", episode)
        return episode

    def _finish_in_place(self, bag: EpisodeBagWriter, outcome: dict[str, Any], error: Exception) -> dict[str, Any]:
        failure = {
            **outcome,
            "outcome": failure_outcome(error),
            "error": f"{describe_failure(error)} writing {bag.path}",
        }
        if "outcome" in outcome:
            failure["requested_outcome"] = outcome["outcome"]
        self.error = f"{failure['outcome']}: {failure['error']}"
        self.on_event("failed", {"path": str(bag.path), "error": self.error})
        try:
            return bag.finish_in_place(**failure)
        except Exception as exc:  # even the record: kept in memory, reported, retried (_retry_unsaved)
            self._unsaved.append(bag)
            self._unsaved_free = self._free_bytes()
            self.on_event("unsaved", {"path": str(bag.path), "error": str(exc), "episode": bag.episode})
            return bag.episode

    def _retry_unsaved(self, final: bool = False) -> None:
        """Writes the records a full disk refused, once it has more room than at the last try (a try
        scans the whole file again). On shutdown whatever is still unsaved is left to `recover`."""
        if not self._unsaved or not (final or self._free_bytes() > self._unsaved_free):
            return
        for bag in list(self._unsaved):
            try:
                bag.finish_in_place()
            except Exception as exc:
                if final:
                    bag.release()
                    self.on_event("unsaved", {"path": str(bag.path), "error": str(exc), "episode": bag.episode})
                continue
            self._unsaved.remove(bag)
            self.on_event("saved", bag.episode)
        self._unsaved_free = self._free_bytes()

    def _free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.config.directory).free
        except OSError:
            return 0

    def _event(self, stamp_ns: int, event: dict[str, Any]) -> None:
        store = typestore()
        msg = store.types["std_msgs/msg/String"](data=json.dumps(event, sort_keys=True))
        self._bag.write(EVENTS_TOPIC, max(int(stamp_ns), 0), bytes(store.serialize_cdr(msg, "std_msgs/msg/String")))

    def _stored_as(self, topic: str, msgtype: str) -> tuple[str, str]:
        if msgtype == IMAGE_TYPE and self.config.compression != "none":
            return f"{topic}/compressed", COMPRESSED_TYPE
        return topic, msgtype

    def _write(self, item: _Message) -> None:
        if self._bag is None:
            return  # arrived after a disk-full stop: counted as received, not written
        stats = self.stats[item.topic]
        topic, _ = self._stored_as(item.topic, self.topics[item.topic])
        try:
            data = item.compressed.result() if item.compressed is not None else item.data
        except Exception as exc:  # a malformed image is dropped and counted, never the episode
            stats.dropped += 1
            self.on_event("dropped", {"topic": item.topic, "error": str(exc)})
            return
        self._bag.write(topic, item.stamp_ns, data)  # a failed write ends the episode (_run)
        self._last_stamp_ns = max(self._last_stamp_ns, item.stamp_ns)
        stats.written += 1
        self.bytes_written += len(data)

    def _compress(self, data: bytes | memoryview) -> bytes:
        store = typestore()
        msg = store.deserialize_cdr(data, IMAGE_TYPE)
        array = image_array(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
        if array.dtype == np.uint16:
            fmt, payload = encode_depth(array)
        elif array.dtype == np.float32:
            fmt, payload = encode_depth(depth_to_millimetres(array))
        else:
            rgb = array[..., ::-1] if msg.encoding == "bgr8" else array
            fmt, payload = encode_color(rgb, self.config.compression, self.config.jpeg_quality)
        cls = store.types[COMPRESSED_TYPE]
        compressed = cls(header=msg.header, format=fmt, data=np.frombuffer(payload, np.uint8))
        return bytes(store.serialize_cdr(compressed, COMPRESSED_TYPE))
