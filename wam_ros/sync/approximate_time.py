"""Approximate-time matching of N streams (ROS-free), after message_filters' C++ ApproximateTime.

As in the C++ policy, the *pivot* is the latest of the streams' oldest messages: any set formed
from the queued messages must contain a message at least that late from the pivot's stream. The
emitted set is the one with the smallest spread (latest minus earliest stamp) among the sets that
contain the pivot, and it is emitted only once no future message can beat it: every other stream
either already holds a message at or after the pivot, or its next message (at least
`inter_message_lower_bound` after its newest one) would be too late to shrink the spread. Sets
wider than `max_interval` are never emitted: the oldest head is dropped instead. Messages older
than the last emitted set are dropped; within a stream, messages are kept sorted by stamp, so
moderate reordering on the wire is harmless.

Stamps are the message stamps minus a per-stream fixed delay (e.g. Orbbec depth lags color).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SyncConfig:
    streams: tuple[str, ...]
    max_interval: float = 0.010  # s: widest set ever emitted
    queue_size: int = 10  # per stream; the oldest message is dropped beyond it
    inter_message_lower_bound: tuple[float, ...] = ()  # s per stream (0: wait for the next message)
    delays: tuple[float, ...] = ()  # s per stream subtracted from the stamps

    def __post_init__(self) -> None:
        n = len(self.streams)
        if n < 1 or len(set(self.streams)) != n:
            raise ValueError(f"streams must be unique and non-empty, got {self.streams}")
        for name in ("inter_message_lower_bound", "delays"):
            value = getattr(self, name)
            if value and len(value) != n:
                raise ValueError(f"{name}: expected {n} values (one per stream), got {len(value)}")
        if not self.max_interval > 0 or self.queue_size < 1:
            raise ValueError("max_interval must be > 0 and queue_size >= 1")

    def lower_bound(self, i: int) -> float:
        return self.inter_message_lower_bound[i] if self.inter_message_lower_bound else 0.0

    def delay(self, i: int) -> float:
        return self.delays[i] if self.delays else 0.0


@dataclass
class SyncStats:
    sets: int = 0
    dropped: list[int] = field(default_factory=list)  # per stream: queue overflow, too old, too spread
    spreads: list[float] = field(default_factory=list)  # of emitted sets (s)


class ApproximateTimeSync:
    def __init__(self, config: SyncConfig):
        self.config = config
        n = len(config.streams)
        self._queues: list[list[tuple[float, Any]]] = [[] for _ in range(n)]
        self._newest = [-math.inf] * n  # newest stamp ever received per stream
        self._emitted_until = [-math.inf] * n  # stamp of the stream's message in the last set
        self.stats = SyncStats(dropped=[0] * n)

    def add(self, stream: int, stamp: float, message: Any) -> list[tuple[tuple[float, Any], ...]]:
        """Queue a message; return the sets (one (stamp, message) per stream) that are now final."""
        t = stamp - self.config.delay(stream)
        if t <= self._emitted_until[stream]:
            self.stats.dropped[stream] += 1  # older than what was already matched
            return []
        queue = self._queues[stream]
        bisect.insort(queue, (t, message), key=lambda entry: entry[0])
        if len(queue) > self.config.queue_size:
            queue.pop(0)
            self.stats.dropped[stream] += 1
        self._newest[stream] = max(self._newest[stream], t)
        return self._process()

    def pending(self) -> list[int]:
        return [len(q) for q in self._queues]

    def regrouped(self, config: SyncConfig) -> "ApproximateTimeSync":
        """A sync over `config`'s streams that keeps what this one holds of the streams both have
        (their queued messages, newest stamps, matched-until stamps and drop counts): a camera that
        leaves or comes back does not cost the other cameras their queued frames."""
        other = ApproximateTimeSync(config)
        for j, name in enumerate(config.streams):
            if name in self.config.streams:
                i = self.config.streams.index(name)
                shift = self.config.delay(i) - config.delay(j)  # queued stamps have this sync's delay removed
                other._queues[j] = [(t + shift, m) for t, m in self._queues[i]]
                other._newest[j] = self._newest[i] + shift
                other._emitted_until[j] = self._emitted_until[i] + shift
                other.stats.dropped[j] = self.stats.dropped[i]
        other.stats.sets, other.stats.spreads = self.stats.sets, list(self.stats.spreads)
        return other

    def _process(self) -> list[tuple[tuple[float, Any], ...]]:
        out = []
        while all(self._queues):
            heads = [q[0][0] for q in self._queues]
            pivot = max(range(len(heads)), key=lambda i: heads[i])
            best = self._best_set(pivot)
            if best is None:
                return out  # not final yet: a future message could still improve it
            indices, spread = best
            if spread > self.config.max_interval:
                oldest = min(range(len(heads)), key=lambda i: heads[i])
                self._queues[oldest].pop(0)
                self.stats.dropped[oldest] += 1
                continue
            chosen = tuple(self._queues[i][k] for i, k in enumerate(indices))
            for i, k in enumerate(indices):
                self._emitted_until[i] = self._queues[i][k][0]
                self.stats.dropped[i] += k  # skipped older messages of this stream
                del self._queues[i][: k + 1]
            self.stats.sets += 1
            self.stats.spreads.append(spread)
            out.append(chosen)
        return out

    def _best_set(self, pivot: int) -> tuple[list[int], float] | None:
        """Smallest-spread set containing the pivot's head, or None while it may still improve."""
        p = self._queues[pivot][0][0]
        options = []
        for i, queue in enumerate(self._queues):
            if i == pivot:
                options.append([0])
                continue
            stamps = [entry[0] for entry in queue]
            k = bisect.bisect_left(stamps, p)  # first at or after the pivot
            options.append(sorted({j for j in (k - 1, k) if 0 <= j < len(queue)}))
        best, best_spread = None, math.inf
        for combo in itertools.product(*options):
            stamps = [self._queues[i][k][0] for i, k in enumerate(combo)]
            spread = max(stamps) - min(stamps)
            if spread < best_spread:
                best, best_spread = list(combo), spread
        # final only if no stream's next message could make a smaller set
        for i, queue in enumerate(self._queues):
            if i == pivot or queue[-1][0] >= p:
                continue
            earliest_next = self._newest[i] + self.config.lower_bound(i)
            if earliest_next - p < best_spread:
                return None
        return best, best_spread
