"""Chunk hand-over (control/chunking.py): timing, RTC inpainting prefix and weights, blending,
starvation and jumps, on hand-made chunks; epochs and the lock against an inference in flight
during a rollback."""

import threading

import numpy as np
import pytest

from wam_ros.control.chunking import ChunkingConfig, ChunkScheduler

DT = 0.1


def ramp(start: float, steps: int = 16, joints: int = 2, slope: float = 1.0) -> np.ndarray:
    """A chunk whose step i holds start + slope * i in every joint."""
    return np.repeat((start + slope * np.arange(steps))[:, None], joints, axis=1)


def scheduler(mode: str = "rtc", **kw) -> ChunkScheduler:
    return ChunkScheduler(ChunkingConfig(dt=DT, horizon=16, execution_horizon=8, mode=mode, **kw))


def test_a_chunk_takes_over_at_its_first_step_not_yet_due():
    s = scheduler("naive")
    assert s.inference_due(0.0) and s.delay_steps == 0
    first = s.accept(1, obs_time=0.0, positions=ramp(0.0), now=0.25)
    # 0.25 s after its observation: steps 0..2 are past, step 3 executes from 0.3 s
    assert first.first_step == 3 and first.chunk.start == pytest.approx(0.3) and len(first.chunk.positions) == 13
    assert first.jump == 0.0 and first.starved_steps == 0 and first.latency == pytest.approx(0.25)
    assert s.delay_steps == 3 + 1  # ceil(0.25 / 0.1) plus the default margin of one step
    assert not s.inference_due(0.79) and s.inference_due(0.8)  # s = 8 steps after its observation
    # the next chunk, conditioned at 0.8 s, arrives at 1.05 s: it disagrees with the old by 0.5
    second = s.accept(2, obs_time=0.8, positions=ramp(8.5), now=1.05)
    assert second.first_step == 3 and second.chunk.start == pytest.approx(1.1)
    assert second.jump == pytest.approx(0.5)  # old at 1.1 s: 11, new: 11.5
    assert second.starved_steps == 0  # s + d = 11 < H = 16


def test_starvation_counts_the_steps_without_a_target():
    s = scheduler("naive")
    s.accept(1, 0.0, ramp(0.0), now=0.0)  # last step at 1.5 s
    late = s.accept(2, 1.0, ramp(10.0), now=2.05)  # first executed step at 2.1 s
    assert late.starved_steps == 5  # 1.6, 1.7, 1.8, 1.9, 2.0 had no fresh target
    assert late.jump == pytest.approx(abs(21.0 - 15.0))  # against the old chunk's held last target


def test_rtc_inpainting_targets_the_old_chunk_with_the_paper_weights():
    s = scheduler("rtc", delay_margin=0)
    s.accept(1, 0.0, ramp(0.0), now=0.0)
    s.accept(2, 0.0, ramp(0.0), now=0.25)  # a latency of 2.5 steps: d = 3; executes 0.3 .. 1.5 s
    assert s.delay_steps == 3
    assert s.inference_due(8 * DT)
    target, weights = s.inpainting(8 * DT)  # the next observation, s = 8 steps after the chunk's
    # the old chunk's steps at the same times: 8, 9, ... 15, then held at 15
    assert np.allclose(target[:8, 0], np.arange(8, 16)) and np.allclose(target[8:, 0], 15)
    # remaining old steps: 8 = H - s; weight 1 for i < d, then linear to 0 at i = H - s (RTC)
    assert np.allclose(weights, [1, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6] + [0] * 8)
    assert scheduler("naive").inpainting(0.0) is None and scheduler("rtc").inpainting(0.0) is None


def test_blending_averages_where_the_chunks_overlap():
    s = scheduler("blend", blend_new_weight=0.7)
    s.accept(1, 0.0, ramp(0.0), now=0.0)
    h = s.accept(2, 0.8, ramp(18.0), now=0.8)  # disagrees by +10 over the overlap (0.8 .. 1.5 s)
    overlap = h.chunk.positions[:8, 0]
    assert np.allclose(overlap, 0.7 * ramp(18.0)[:8, 0] + 0.3 * ramp(8.0)[:8, 0])
    assert np.allclose(h.chunk.positions[8:, 0], ramp(18.0)[8:, 0])  # beyond the old chunk: the new one
    assert h.jump == pytest.approx(7.0)
    # rtc soft-masks a chunk that could not be guided (the reactive expert's) with its RTC weights
    r = scheduler("rtc", delay_margin=0)
    r.accept(1, 0.0, ramp(0.0), now=0.1)  # d = 1; executes 0.1 .. 1.5 s
    target, weights = r.inpainting(0.8)
    h = r.accept(2, 0.8, ramp(18.0), now=0.9, guided=False)
    assert h.first_step == 1 and weights[1] == pytest.approx(7 / 8)  # 8 old steps remain after 0.8 s
    expected = weights[:, None] * target + (1 - weights[:, None]) * ramp(18.0)
    assert np.allclose(h.chunk.positions, expected[1:]) and h.jump == pytest.approx(10 / 8)
    assert scheduler("rtc").accept(1, 0.0, ramp(0.0), now=0.0).jump == 0.0
    # a guided chunk arriving later than its guidance assumed (d = 1, but 3 steps passed): soft mask for d = 3
    late = scheduler("rtc", delay_margin=0)
    late.accept(1, 0.0, ramp(0.0), now=0.1)
    h = late.accept(2, 0.8, ramp(18.0), now=1.1)
    assert h.first_step == 3 and h.jump == pytest.approx(10 / 6)  # weight 5/6 on the old chunk at step 3


def test_delay_estimate_is_the_largest_recent_latency_capped_at_s():
    s = scheduler("rtc", delay_window=3)
    for latency in (0.05, 0.42, 0.12, 0.11, 0.13):
        s.accept(1, 0.0, ramp(0.0), now=latency)
    assert s.delay_steps == 2 + 1  # the 0.42 s latency has left the window of 3
    s.accept(1, 0.0, ramp(0.0), now=5.0)
    assert s.delay_steps == 8  # never more than the execution horizon
    s.reset()
    assert s.executing is None and s.inference_due(123.0)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="chunking mode 'smooth'"):
        ChunkingConfig(dt=DT, horizon=16, execution_horizon=8, mode="smooth")
    with pytest.raises(ValueError, match="execution_horizon must be in"):
        ChunkingConfig(dt=DT, horizon=16, execution_horizon=17)
    with pytest.raises(ValueError, match="positions must be"):
        scheduler().accept(1, 0.0, np.zeros(16), now=0.0)


def test_a_reset_starts_a_new_epoch_whose_chunks_alone_are_accepted():
    s = scheduler("rtc")
    assert s.accept(1, 0.0, ramp(0.0), now=0.1, epoch=s.epoch) is not None
    started = s.epoch  # an inference takes the epoch with its observation
    s.reset()
    assert s.epoch == started + 1 and s.executing is None
    assert s.accept(2, 0.8, ramp(18.0), now=1.5, epoch=started) is None  # stale: dropped
    assert s.executing is None and s.inpainting(1.5) is None and s.delay_steps == 2  # nor its 0.7 s latency counted
    fresh = s.accept(3, 1.0, ramp(5.0), now=1.1, epoch=s.epoch)
    assert fresh is not None and fresh.jump == 0.0 and s.executing.chunk_id == 3


def test_an_inference_in_flight_during_a_rollback_does_not_guide_the_next_chunk():
    """The policy node's race on threads: an inference (its predict) still runs when the resample
    resets the scheduler, then hands its chunk in."""
    s = scheduler("rtc", delay_margin=0)
    s.accept(1, 0.0, ramp(0.0), now=0.1)
    resampled = threading.Event()
    handed_in: list = []

    def inference() -> None:
        epoch = s.epoch  # taken with the observation (policy_node._job)
        assert s.inpainting(0.8) is not None  # guided towards chunk 1, the plan about to be discarded
        assert resampled.wait(10.0)  # predict blocks until the resample has run
        with s.lock:  # as DeployedPolicy.infer hands a chunk on
            handed_in.append(s.accept(2, 0.8, ramp(18.0), now=0.9, epoch=epoch))

    worker = threading.Thread(target=inference)
    worker.start()
    s.reset()  # the resample service, on the executor thread
    resampled.set()
    worker.join(10.0)
    assert not worker.is_alive() and handed_in == [None]
    # the chunk sampled from the restored state starts afresh, without guidance towards chunk 2 (or 1)
    assert s.executing is None and s.inpainting(1.0) is None


def test_a_reset_waits_until_an_accepted_chunk_is_handed_on():
    """accept and the hand-on (publishing) under the lock: a rollback's reset cannot fall between
    them, so no chunk of the old epoch is published after the resample's reply."""
    s = scheduler("rtc")
    publishing, published = threading.Event(), threading.Event()

    def hand_on() -> None:
        with s.lock:
            assert s.accept(1, 0.0, ramp(0.0), now=0.1, epoch=s.epoch) is not None
            publishing.set()
            published.wait(10.0)

    worker = threading.Thread(target=hand_on)
    worker.start()
    assert publishing.wait(10.0)
    resetter = threading.Thread(target=s.reset)
    resetter.start()
    resetter.join(0.3)
    assert resetter.is_alive() and s.epoch == 0 and s.executing is not None  # the reset waits
    published.set()
    worker.join(10.0)
    resetter.join(10.0)
    assert not resetter.is_alive() and s.epoch == 1 and s.executing is None


def test_a_refusal_of_the_executing_chunk_drops_its_plan_and_nothing_else_does():
    """The supervisor refused chunk 2: the next chunk must not be inpainted towards it (it would start
    where chunk 2 does and be refused for the same reason), nor take chunk 2's inference in flight."""
    s = scheduler("rtc")
    s.accept(1, 0.0, ramp(0.0), now=0.1)
    s.accept(2, 0.8, ramp(8.0), now=0.9)
    assert not s.refused(1) and s.executing.chunk_id == 2  # an older chunk: chunk 2 has its own verdict
    in_flight = s.epoch
    assert s.refused(2)
    assert s.executing is None and s.inpainting(1.6) is None and s.inference_due(1.0)
    assert s.accept(3, 1.6, ramp(16.0), now=1.7, epoch=in_flight) is None  # guided towards chunk 2: dropped
    assert s.accept(4, 1.7, ramp(17.0), now=1.8, epoch=s.epoch).jump == 0.0
    assert not s.refused(2) and s.executing.chunk_id == 4  # a repeated report of the same refusal


def test_a_chunk_from_rest_starts_where_the_arm_holds_and_joins_the_model_plan():
    """Nothing executing (episode start, after a rollback or a refusal): the arm holds at 0.5, the
    model's chunk starts at 1.2 (where it expected the arm once the chunk arrives). From rest the
    chunk is masked towards the hold: its first executed step lies next to the arm, and it reaches
    the model's plan by its end, monotonically."""
    s = scheduler("rtc", delay_margin=0)
    rest = np.full(2, 0.5)
    target, weights = s.inpainting(0.0, rest=rest)
    assert np.allclose(target, 0.5) and weights[0] == pytest.approx(16 / 17) and weights[-1] == pytest.approx(1 / 17)
    model = np.full((16, 2), 1.2)
    handover = s.accept(1, 0.0, model, now=0.25, rest=rest)
    steps = handover.chunk.positions[:, 0]
    assert handover.first_step == 3 and handover.jump == pytest.approx(0.7 / 14)  # weight 13/14 on the hold
    assert np.all(np.diff(steps) > 0) and steps[-1] == pytest.approx(0.5 + 0.7 * 13 / 14)
    # a guided chunk while one executes is taken as sampled; rest only matters without one
    s.accept(2, 0.8, ramp(8.0), now=0.85, rest=rest)
    assert s.executing.positions[0, 0] == pytest.approx(9.0)
    # outside rtc mode, and without a resting position, a chunk from rest is taken as it is
    for other, kwargs in ((scheduler("naive"), {"rest": rest}), (scheduler("rtc"), {})):
        assert other.inpainting(0.0, **kwargs) is None
        assert other.accept(1, 0.0, model, now=0.25, **kwargs).chunk.positions[0, 0] == pytest.approx(1.2)
