"""Asynchronous chunk execution (ROS-free): when the next inference starts, what it inpaints, and
how its chunk takes over from the one executing.

Time is ROS time (s). A chunk's step i is meant for `obs_time + i * dt`, where `obs_time` is the
stamp of the observation it was conditioned on. Inference for the next chunk starts `execution_horizon`
(s) steps after the executing chunk's observation; it takes d steps (the delay), during which the
old chunk keeps executing, and the new chunk takes over at its first step not yet due. Nothing
starves while s + d < H: with s <= (H - 1) / 2, whenever the latency is at most s steps. How the
two chunks join:
- rtc: real-time chunking. The new chunk was sampled with guidance towards the old chunk's
  remaining steps (`inpainting`): weight 1 for the d steps that execute during inference, then
  falling linearly to 0 where the old chunk ends, so both join without a jump;
- blend: LeRobot-style weighted average of the two where they overlap;
- naive: switch to the new chunk as it is.
A chunk that could not be guided (the reactive expert's, which is not sampled), or that arrives
later than the delay its guidance assumed, gets the RTC weights for the delay that really passed
as a soft mask in rtc mode: w * old + (1 - w) * new.

With no chunk executing (the first of an episode, after a rollback or a refusal) the arm holds
where it is: in rtc mode, a caller that passes that resting position (`rest`) gets it as the old
plan, held for the whole horizon, and the soft mask always. The chunk then starts where the arm
is and joins the model's plan over its steps, instead of starting where the model expected the
arm to be by the time the chunk arrives (which the supervisor refuses beyond
max_start_deviation).

Inference runs on another thread than the resets (a rollback's resample): the scheduler is locked,
and counts resets in `epoch`. An inference takes the epoch with its observation and hands it to
`accept`, which drops the chunk if a reset came in between: after a rollback, a chunk still in
flight would otherwise become the executing chunk again, and the next chunk would be guided
towards the plan that was discarded. A chunk the supervisor refused is such a discarded plan too
(`refused`).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

MODES = ("rtc", "blend", "naive")


def default_execution_horizon(horizon: int) -> int:
    """s = (H - 1) // 2: any latency of up to s steps then leaves the old chunk running (s + d < H)."""
    return max(1, (horizon - 1) // 2)


@dataclass(frozen=True)
class ChunkingConfig:
    dt: float  # s between steps (1 / control rate)
    horizon: int  # H: steps per chunk
    execution_horizon: int  # s: steps of a chunk executed before the next inference starts
    mode: str = "rtc"
    blend_new_weight: float = 0.7  # blend: new * w + old * (1 - w) where they overlap
    delay_window: int = 8  # inference latencies remembered for the delay estimate d
    delay_margin: int = 1  # steps added to d, so the switch lands inside the fully weighted prefix

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"chunking mode {self.mode!r}: expected one of {MODES}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        if not 1 <= self.execution_horizon <= self.horizon:
            raise ValueError(f"execution_horizon must be in [1, horizon={self.horizon}], got {self.execution_horizon}")
        if not 0 < self.blend_new_weight <= 1:
            raise ValueError(f"blend_new_weight must be in (0, 1], got {self.blend_new_weight}")
        if self.delay_window < 1 or self.delay_margin < 0:
            raise ValueError("delay_window must be >= 1 and delay_margin >= 0")


@dataclass
class TimedChunk:
    chunk_id: int
    start: float  # time of step 0
    dt: float
    positions: np.ndarray  # (steps, joints) absolute targets
    obs_time: float  # stamp of the observation the chunk was conditioned on

    @property
    def end(self) -> float:
        """Time of the last step."""
        return self.start + (len(self.positions) - 1) * self.dt

    def at(self, t: float) -> np.ndarray:
        """Target at time t: linear between steps, held before the first and after the last."""
        x = (t - self.start) / self.dt
        if x <= 0:
            return self.positions[0].copy()
        if x >= len(self.positions) - 1:
            return self.positions[-1].copy()
        k = int(x)
        w = x - k
        return (1 - w) * self.positions[k] + w * self.positions[k + 1]


@dataclass(frozen=True)
class Handover:
    """What changes when a new chunk arrives."""

    chunk: TimedChunk  # the steps to execute from now on (execute_from = chunk.start)
    first_step: int  # index into the new chunk of its first executed step
    jump: float  # largest joint discontinuity at the switch: |new - old| at chunk.start
    starved_steps: int  # control steps between the old chunk's end and the new chunk's first step
    latency: float  # s from the observation to the chunk's arrival


class ChunkScheduler:
    def __init__(self, config: ChunkingConfig):
        self.config = config
        self.executing: TimedChunk | None = None
        self.epoch = 0  # resets so far
        # Reentrant: a caller that must hand an accepted chunk on before any reset (DeployedPolicy.infer)
        # holds it around accept and the hand-on.
        self.lock = threading.RLock()
        self._latencies: deque[float] = deque(maxlen=config.delay_window)

    def reset(self) -> None:
        """Forget the executing chunk (after a rollback the next chunk starts afresh) and start a new
        epoch: chunks of inferences started before are dropped."""
        with self.lock:
            self.executing = None
            self.epoch += 1

    def refused(self, chunk_id: int) -> bool:
        """The supervisor refused chunk_id. If that is the executing chunk, its plan never reached
        the arms: reset (True), so that the next chunk is conditioned afresh instead of being
        inpainted towards the refused plan, and refused in turn for the same reason. The refusal of
        an older chunk changes nothing: the executing chunk has its own verdict coming."""
        with self.lock:
            if self.executing is None or self.executing.chunk_id != chunk_id:
                return False
            self.reset()
            return True

    @property
    def delay_steps(self) -> int:
        """d: steps that pass during one inference (the largest recent latency, plus the margin),
        at most s."""
        with self.lock:  # the latencies change on the inference thread
            if not self._latencies:
                return 0
            d = math.ceil(max(self._latencies) / self.config.dt - 1e-9) + self.config.delay_margin
        return min(d, self.config.execution_horizon)

    def inference_due(self, now: float) -> bool:
        """Time to condition the next chunk on the newest observation: s steps after the executing
        chunk's own observation."""
        c, old = self.config, self.executing  # read once: the inference thread may replace it
        return old is None or now >= old.obs_time + c.execution_horizon * c.dt - 1e-9

    def _resting(self, rest: np.ndarray, obs_time: float) -> TimedChunk:
        """The plan of an arm that executes nothing: hold `rest` for a whole horizon."""
        c = self.config
        return TimedChunk(0, obs_time, c.dt, np.tile(np.asarray(rest, dtype=float), (c.horizon, 1)), obs_time)

    def inpainting(
        self, obs_time: float, delay: int | None = None, rest: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """RTC target (H, joints) and weights (H,) for a chunk conditioned at obs_time: the old
        chunk's steps at the same times; weight 1 for the first d steps (d: `delay`, else the
        estimate), falling linearly to 0 at the old chunk's end. Without an executing chunk, the
        resting position `rest` (joints,) held is the old chunk. None without either, or outside
        rtc mode."""
        c = self.config
        with self.lock:
            old = self.executing
            if old is None and rest is not None:
                old = self._resting(rest, obs_time)
            if c.mode != "rtc" or old is None:
                return None
            times = obs_time + np.arange(c.horizon) * c.dt
            target = np.stack([old.at(t) for t in times])
            remaining = int(math.floor((old.end - obs_time) / c.dt + 1e-9)) + 1  # old steps at or after obs_time
            d = min(self.delay_steps if delay is None else delay, max(remaining, 0))
        i = np.arange(c.horizon, dtype=float)
        weights = np.where(i < d, 1.0, np.clip((remaining - i) / max(remaining - d + 1, 1), 0.0, 1.0))
        weights[i >= remaining] = 0.0
        return target, weights

    def accept(
        self,
        chunk_id: int,
        obs_time: float,
        positions: np.ndarray,
        now: float,
        guided: bool = True,
        epoch: int | None = None,
        rest: np.ndarray | None = None,
    ) -> Handover | None:
        """A new chunk conditioned at obs_time arrived at `now`: it takes over at its first step
        not yet due. guided=False: it was sampled without the RTC inpainting. epoch: the epoch its
        inference started in; if a reset came since, the chunk is dropped: None, and nothing changes.
        epoch=None: the current epoch (for a caller that no reset can race). rest: where the arm
        holds (joints,), used when no chunk is executing (rtc mode)."""
        positions = np.asarray(positions, dtype=float)
        if positions.ndim != 2 or len(positions) < 1:
            raise ValueError(f"chunk positions must be (steps, joints), got {positions.shape}")
        with self.lock:
            if epoch is not None and epoch != self.epoch:
                return None
            return self._accept(chunk_id, obs_time, positions, now, guided, rest)

    def _accept(
        self, chunk_id: int, obs_time: float, positions: np.ndarray, now: float, guided: bool, rest: np.ndarray | None
    ) -> Handover:
        c = self.config
        latency = max(now - obs_time, 0.0)
        guided_delay = self.delay_steps  # the d the guidance was computed with
        self._latencies.append(latency)
        first = min(max(math.ceil((now - obs_time) / c.dt - 1e-9), 0), len(positions) - 1)
        start = obs_time + first * c.dt
        steps = positions[first:].copy()
        old = self.executing
        resting = old is None and rest is not None and c.mode == "rtc"
        plan = self._resting(rest, obs_time) if resting else old  # what the arm executes until now
        jump, starved = 0.0, 0
        if resting or (old is not None and c.mode == "rtc" and (not guided or first > guided_delay)):
            # unguided, later than the guidance assumed (a latency spike), or from rest: the RTC
            # weights for the delay that really passed, as a soft mask
            target, weights = self.inpainting(obs_time, delay=first, rest=rest)
            masked = weights[:, None] * target + (1 - weights[:, None]) * positions[: len(target)]
            steps = masked[first:].copy()
        if old is not None:
            if c.mode == "blend":
                times = start + np.arange(len(steps)) * c.dt
                overlap = times <= old.end + 1e-9
                old_steps = np.stack([old.at(t) for t in times[overlap]]) if overlap.any() else None
                if old_steps is not None:
                    w = c.blend_new_weight
                    steps[overlap] = w * steps[overlap] + (1 - w) * old_steps
            starved = max(0, int(round((start - old.end) / c.dt)) - 1)
        if plan is not None:
            jump = float(np.max(np.abs(steps[0] - plan.at(start))))
        self.executing = TimedChunk(chunk_id, start, c.dt, steps, obs_time)
        return Handover(self.executing, first, jump, starved, latency)
