"""The approximate-time policy against a brute-force optimum on random jittered streams."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from wam_ros.sync.approximate_time import ApproximateTimeSync, SyncConfig

PERIOD = 1 / 30


def make_streams(rng, n: int, frames: int, jitter: float, drop: float, offsets: np.ndarray) -> list[list[float]]:
    streams = []
    for i in range(n):
        t = np.arange(frames) * PERIOD + offsets[i] + rng.uniform(-jitter, jitter, frames)
        keep = rng.random(frames) >= drop
        streams.append(sorted(t[keep].tolist()))
    return streams


def arrival_order(
    rng, streams: list[list[float]], latency: float, reorder: float, in_order: bool = False
) -> list[tuple[int, float]]:
    """(stream, stamp) in the order they reach the sync node: stamp + random transport latency;
    with `in_order`, each stream's own messages still arrive in stamp order."""
    events = []
    for i, stamps in enumerate(streams):
        arrivals = np.array(stamps) + rng.uniform(0.0, latency, len(stamps))
        if in_order:
            arrivals = np.maximum.accumulate(arrivals)
        events += [(a, i, t) for a, t in zip(arrivals, stamps)]
    events.sort()
    order = [(i, t) for _, i, t in events]
    for k in range(len(order) - 1):  # swap some neighbours: out-of-order delivery
        if rng.random() < reorder:
            order[k], order[k + 1] = order[k + 1], order[k]
    return order


def brute_force(streams: list[list[float]], max_interval: float) -> list[tuple[float, ...]]:
    """The same definition with full knowledge of every stream: pivot = latest of the heads,
    the smallest-spread set containing it over all combinations, or drop the oldest head."""
    queues = [list(s) for s in streams]
    out = []
    while all(queues):
        heads = [q[0] for q in queues]
        pivot = max(range(len(heads)), key=lambda i: heads[i])
        p = heads[pivot]
        candidates = [
            [0] if i == pivot else [k for k, t in enumerate(q) if abs(t - p) <= max_interval]
            for i, q in enumerate(queues)
        ]
        best, best_spread = None, math.inf
        for combo in itertools.product(*candidates):
            stamps = [queues[i][k] for i, k in enumerate(combo)]
            if max(stamps) - min(stamps) < best_spread:
                best, best_spread = combo, max(stamps) - min(stamps)
        if best is None or best_spread > max_interval:
            oldest = min(range(len(heads)), key=lambda i: heads[i])
            queues[oldest].pop(0)
            continue
        out.append(tuple(queues[i][k] for i, k in enumerate(best)))
        for i, k in enumerate(best):
            del queues[i][: k + 1]
    return out


def run(streams, order, config) -> list[tuple[float, ...]]:
    sync = ApproximateTimeSync(config)
    out = []
    for i, t in order:
        for matched in sync.add(i, t, (i, t)):
            out.append(tuple(stamp for stamp, _ in matched))
    return out


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 6),
    jitter=st.sampled_from([0.0, 0.001, 0.004, 0.008]),
    drop=st.sampled_from([0.0, 0.05, 0.2]),
    max_interval=st.sampled_from([0.005, 0.010, 0.020]),
    skew=st.sampled_from([0.003, PERIOD / 2]),
)
def test_matches_the_brute_force_optimum_on_in_order_streams(seed, n, jitter, drop, max_interval, skew):
    """Hardware-synced cameras (a few ms apart) and free-running ones (up to half a period)."""
    rng = np.random.default_rng(seed)
    streams = make_streams(rng, n, 60, jitter, drop, rng.uniform(0.0, skew, n))
    order = arrival_order(rng, streams, latency=0.05, reorder=0.0, in_order=True)
    config = SyncConfig(
        tuple(f"s{i}" for i in range(n)),
        max_interval=max_interval,
        queue_size=1000,
        inter_message_lower_bound=(PERIOD / 2,) * n,
    )
    online, optimum = run(streams, order, config), brute_force(streams, max_interval)
    # identical, except that the last set may still wait for a message that never comes
    assert online == optimum[: len(online)] and len(optimum) - len(online) <= 1


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 6),
    drop=st.sampled_from([0.0, 0.1, 0.3]),
    reorder=st.sampled_from([0.0, 0.1, 0.3]),
    queue=st.sampled_from([3, 10]),
)
def test_never_emits_a_set_wider_than_max_interval_or_reuses_a_message(seed, n, drop, reorder, queue):
    rng = np.random.default_rng(seed)
    streams = make_streams(rng, n, 80, 0.006, drop, rng.uniform(0.0, 0.01, n))
    config = SyncConfig(
        tuple(f"s{i}" for i in range(n)),
        max_interval=0.008,
        queue_size=queue,
        inter_message_lower_bound=(PERIOD / 2,) * n,
    )
    sets = run(streams, arrival_order(rng, streams, 0.03, reorder), config)
    for matched in sets:
        assert max(matched) - min(matched) <= 0.008 + 1e-12
    for i in range(n):
        column = [matched[i] for matched in sets]
        assert column == sorted(set(column)), "a message used twice, or sets out of order"


def test_synchronized_cameras_are_matched_as_soon_as_the_last_frame_arrives():
    n = 6
    config = SyncConfig(
        tuple(f"s{i}" for i in range(n)), max_interval=0.005, inter_message_lower_bound=(PERIOD / 2,) * n
    )
    sync = ApproximateTimeSync(config)
    for frame in range(5):
        t = frame * PERIOD
        for i in range(n):
            out = sync.add(i, t + 0.0001 * i, None)
            assert bool(out) == (i == n - 1), "a set must be emitted exactly when its last frame arrives"
    assert sync.stats.sets == 5 and max(sync.stats.spreads) < 0.001


def test_per_stream_delay_offsets_pair_a_lagging_depth_with_its_color():
    config = SyncConfig(("color", "depth"), max_interval=0.004, delays=(0.0, 0.015))
    sync = ApproximateTimeSync(config)
    sets = []
    for frame in range(10):
        t = frame * PERIOD
        sets += sync.add(0, t, ("color", frame))
        sets += sync.add(1, t + 0.015, ("depth", frame))  # depth stamped 15 ms late
    assert [(c[1][1], d[1][1]) for c, d in sets] == [(k, k) for k in range(len(sets))] and len(sets) >= 9


def test_regrouping_keeps_the_queued_messages_of_the_streams_that_stay():
    """A camera leaving or coming back: the other streams keep their queues, with the delays of
    the new grouping applied to their stamps."""
    both = ApproximateTimeSync(SyncConfig(("a", "b"), max_interval=0.005, delays=(0.0, 0.010)))
    assert both.add(0, 1.000, "a0") == [] and both.add(0, 1.033, "a1") == []
    assert both.pending() == [2, 0]
    three = both.regrouped(SyncConfig(("a", "b", "c"), max_interval=0.005, delays=(0.0, 0.010, 0.0)))
    assert three.pending() == [2, 0, 0]
    assert three.add(1, 1.011, "b0") == []
    sets = three.add(2, 1.001, "c0")
    assert [[m for _, m in s] for s in sets] == [["a0", "b0", "c0"]]  # a0 was kept through the regrouping
