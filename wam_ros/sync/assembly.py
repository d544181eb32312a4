"""How sync_node assembles a multi-view RGB-D set (ROS-free): which cameras a set holds, the
CameraInfo that goes with each image, and the checks a set must pass before it is published.

The active cameras' color and depth streams are matched by the approximate-time policy
(wam_ros.sync.approximate_time). Each matched image is paired with the CameraInfo of its stamp,
else with the newest one of its stream, to be given the image's stamp: waiting for an info that
drivers publish after the image would add its transit time to every set, and a camera's
intrinsics do not change from frame to frame. A set that lacks a CameraInfo waits for the next
one, once (drivers publish it right after the image); a newer set that has to wait too drops it.
A set with an image whose size is not its CameraInfo's is dropped.

A camera silent for `camera_timeout` is left out: the sets of the other cameras are marked
degraded, naming it; its next image re-admits it, and the other cameras keep what they had queued.
A camera never heard from gets the same grace, counted from the first image of any camera. When
every camera is silent no set is made.

Images and CameraInfos come in as records of the fields assembly needs; their messages travel in
the records untouched, so that the node can publish them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

from wam_ros.data.images import ImageError, camera_matrix
from wam_ros.sync.approximate_time import ApproximateTimeSync, SyncConfig, SyncStats

KINDS = ("color", "depth")
Stream = tuple[str, str]  # (camera, kind)


@dataclass(frozen=True)
class AssemblyConfig:
    cameras: tuple[str, ...]
    max_interval: float = 0.010  # s: widest set
    queue_size: int = 10  # queued images per stream
    inter_message_lower_bound: float = 0.0  # s between two images of one stream, at least (0: wait for the next)
    color_delays: tuple[float, ...] = ()  # s per camera, subtracted from its color stamps
    depth_delays: tuple[float, ...] = ()  # s per camera, e.g. Orbbec depth lags color
    camera_timeout: float = 0.5  # s: a camera silent this long is left out
    infos_kept: int = 10  # CameraInfos kept per stream, to find the one of an image's stamp

    def __post_init__(self) -> None:
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be unique and non-empty, got {self.cameras}")
        if any(delays and len(delays) != len(self.cameras) for delays in (self.color_delays, self.depth_delays)):
            raise ValueError("color_delays and depth_delays need one value per camera")
        if not self.camera_timeout > 0 or self.infos_kept < 1:
            raise ValueError("camera_timeout must be > 0 and infos_kept >= 1")

    def delay(self, stream: Stream) -> float:
        delays = self.color_delays if stream[1] == "color" else self.depth_delays
        return delays[self.cameras.index(stream[0])] if delays else 0.0


@dataclass(frozen=True)
class ImageRecord:
    stamp_ns: int  # header stamp: an image and its CameraInfo have the same one
    width: int
    height: int
    message: Any = None  # the image itself, handed back in the set


@dataclass(frozen=True)
class CameraInfoRecord:
    stamp_ns: int
    width: int
    height: int
    k: Sequence[float]  # 3x3 intrinsics, row-major
    message: Any = None


@dataclass(frozen=True)
class PairedView:
    image: ImageRecord
    info: CameraInfoRecord
    restamp: bool  # the info is the newest one of another stamp: it is to carry the image's stamp


@dataclass(frozen=True)
class CameraViews:
    color: PairedView
    depth: PairedView
    stamp: float  # the color stamp less the color delay (s)


@dataclass(frozen=True)
class AssembledSet:
    views: dict[str, CameraViews | None]  # every camera, in the configured order; None: left out
    stamp: float  # the newest color stamp (s)
    spread: float  # newest minus oldest stamp of the set's images (s)
    arrived: float  # when the set's last image arrived (the `now` it was added with)

    @property
    def missing(self) -> list[str]:
        return [cam for cam, views in self.views.items() if views is None]

    @property
    def degraded(self) -> bool:
        return bool(self.missing)

    @property
    def status(self) -> str:
        return f"missing {self.missing}" if self.missing else "ok"


@dataclass(frozen=True)
class Rejection:
    cause: str  # "<camera>/<kind> <check>": what /diagnostics counts
    detail: str


@dataclass(frozen=True)
class CameraCheck:
    fell_silent: bool = False  # every camera has just gone silent: no sets until one comes back
    left_out: tuple[str, ...] = ()  # the active cameras just changed, and these are left out


@dataclass
class Outcome:
    sets: list[AssembledSet] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)  # sets dropped, and why
    cameras: CameraCheck = CameraCheck()  # a camera coming back changes the active cameras


def check_size(image: ImageRecord, info: CameraInfoRecord) -> None:
    """Raises ImageError ("size") unless the CameraInfo describes images of this one's size."""
    if (info.width, info.height) != (image.width, image.height):
        raise ImageError(f"image {image.width}x{image.height} but CameraInfo {info.width}x{info.height}", "size")


class SetAssembler:
    def __init__(self, config: AssemblyConfig):
        self.config = config
        self.streams: list[Stream] = [(cam, kind) for cam in config.cameras for kind in KINDS]
        self.last_seen: dict[str, float] = {}  # camera -> `now` of its last accepted image
        self.all_silent = False
        self.active: tuple[str, ...] = ()
        self.active_streams: list[Stream] = []
        self._infos: dict[Stream, deque[CameraInfoRecord]] = {s: deque(maxlen=config.infos_kept) for s in self.streams}
        self._last_stamp: dict[Stream, int] = {}
        self._first_image: float | None = None  # `now` of the first image of any camera
        self._sync: ApproximateTimeSync | None = None
        self._waiting: dict[Stream, tuple] | None = None  # a matched set, by stream, that lacks a CameraInfo
        self._regroup(config.cameras)

    @property
    def stats(self) -> SyncStats:
        """Matching statistics; `dropped` is indexed like `active_streams`."""
        return self._sync.stats

    def has_info(self, stream: Stream) -> bool:
        return bool(self._infos[stream])

    def camera_ages(self, now: float) -> str:
        return ", ".join(
            f"{c} {now - self.last_seen[c]:.1f} s" if c in self.last_seen else f"{c} never" for c in self.config.cameras
        )

    def add_info(self, camera: str, kind: str, info: CameraInfoRecord) -> Outcome:
        """Keep a CameraInfo; a set that waited for one is assembled again. Raises ImageError
        ("camera_info") unless it describes a calibrated camera."""
        camera_matrix(info.k, info.width, info.height)
        self._infos[(camera, kind)].append(info)
        outcome = Outcome()
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            self._assemble(waiting, outcome)
        return outcome

    def add_image(self, camera: str, kind: str, image: ImageRecord, now: float) -> Outcome:
        """Match an image (arrived at `now`, s on any monotonic clock) into sets; a camera left out
        comes back with it. Raises ImageError ("stamp went backwards") for a stamp older than its
        stream's previous one."""
        stream = (camera, kind)
        last = self._last_stamp.get(stream)
        if last is not None and image.stamp_ns < last:
            raise ImageError(f"{image.stamp_ns / 1e9:.6f} after {last / 1e9:.6f}", "stamp went backwards")
        self._last_stamp[stream] = image.stamp_ns
        self.last_seen[camera] = now
        if self._first_image is None:
            self._first_image = now
        outcome = Outcome(cameras=self.check_cameras(now) if camera not in self.active else CameraCheck())
        stamp = image.stamp_ns / 1_000_000_000
        for matched in self._sync.add(self.active_streams.index(stream), stamp, (image, now)):
            self._assemble(dict(zip(self.active_streams, matched)), outcome)
        return outcome

    def check_cameras(self, now: float) -> CameraCheck:
        """Leave out the cameras silent for camera_timeout, and re-admit those heard from again."""
        if self._first_image is None:
            return CameraCheck()  # nothing received yet
        timeout = self.config.camera_timeout
        fresh = tuple(c for c in self.config.cameras if now - self.last_seen.get(c, self._first_image) <= timeout)
        fell_silent = not fresh and not self.all_silent
        self.all_silent = not fresh
        if not fresh or fresh == self.active:
            return CameraCheck(fell_silent)  # with every camera silent, the last group waits for them
        self._regroup(fresh)
        return CameraCheck(left_out=tuple(c for c in self.config.cameras if c not in fresh))

    def _regroup(self, active: tuple[str, ...]) -> None:
        self.active = active
        self.active_streams = [s for s in self.streams if s[0] in active]
        n = len(self.active_streams)
        config = SyncConfig(
            tuple(f"{c}/{k}" for c, k in self.active_streams),
            self.config.max_interval,
            self.config.queue_size,
            (self.config.inter_message_lower_bound,) * n,
            tuple(self.config.delay(s) for s in self.active_streams),
        )
        self._sync = ApproximateTimeSync(config) if self._sync is None else self._sync.regrouped(config)

    def _pair(self, stream: Stream, image: ImageRecord) -> PairedView | None:
        infos = self._infos[stream]
        for info in reversed(infos):
            if info.stamp_ns == image.stamp_ns:
                return PairedView(image, info, restamp=False)
        return PairedView(image, infos[-1], restamp=True) if infos else None

    def _assemble(self, matched: dict[Stream, tuple[float, tuple[ImageRecord, float]]], outcome: Outcome) -> None:
        """Add the set of these matched images to `outcome`, or why it was dropped; or keep it
        waiting for a CameraInfo. The set's cameras are those it was matched over."""
        views: dict[str, CameraViews | None] = {}
        for cam in self.config.cameras:
            if (cam, "color") not in matched:
                views[cam] = None
                continue
            paired = []
            for kind in KINDS:
                image = matched[(cam, kind)][1][0]
                view = self._pair((cam, kind), image)
                if view is None:
                    if self._waiting is not None:
                        outcome.rejections.append(
                            Rejection(f"{cam}/{kind} camera_info missing", "no CameraInfo; set dropped")
                        )
                    self._waiting = matched
                    return
                try:
                    check_size(image, view.info)
                except ImageError as exc:
                    outcome.rejections.append(Rejection(f"{cam}/{kind} {exc.check}", f"{exc}; set dropped"))
                    return
                paired.append(view)
            views[cam] = CameraViews(*paired, stamp=matched[(cam, "color")][0])
        stamps = [t for t, _ in matched.values()]
        outcome.sets.append(
            AssembledSet(
                views,
                max(v.stamp for v in views.values() if v is not None),
                max(stamps) - min(stamps),
                max(arrival for _, (_, arrival) in matched.values()),
            )
        )
