"""What the policy node does between its messages and DeployedPolicy (ROS-free).

Which observation an inference uses (the newest checked set, not degraded, not stale), when an
inference starts (the chunk scheduler, a resample, not while the supervisor rolls back or is
e-stopped), the chunk ids, the noise seeds, the state a resample restores, and what a refusal by
the supervisor does to the executing plan. policy_node feeds it from topics and runs `infer` on a
worker thread; the in-process benchmark feeds it from the simulator with simulated time, so both
measure the same logic.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from wam_ros.model.deploy import ChunkReady, DeployedPolicy, UnusableJointState
from wam_ros.model.policy import Observation, Prediction

# cameras -> arrays, as conversions.multiview_arrays gives them: images, depths, (K, (h, w)) intrinsics
Views = tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray], Mapping[str, tuple]]
# supervisor modes in which a new chunk would be refused unseen: no inference is started
PAUSING_MODES = ("ROLLING_BACK", "ESTOP")


@dataclass(frozen=True)
class InferenceJob:
    obs: Observation
    stamp: float  # time of the observation the chunk is conditioned on
    views: Views
    epoch: int  # the scheduler's epoch at the observation: a later resample discards the chunk
    chunk_id: int
    seed: int | None  # None: fresh random noise


@dataclass(frozen=True)
class ResampleReply:
    accepted: bool
    chunk_id: int  # the chunk that will be sampled from the restored state
    message: str


class PolicyLoop:
    """Between the inputs (observation sets, joint states, the supervisor's state, resample requests)
    and DeployedPolicy. `on_problem(cause, detail)` hears why an observation or a tick was not used."""

    def __init__(
        self,
        deployed: DeployedPolicy,
        instruction: str,
        max_observation_age: float,
        seed: int = -1,
        on_problem: Callable[[str, str], None] = lambda cause, detail: None,
    ):
        self.deployed, self.instruction = deployed, instruction
        self.max_observation_age = max_observation_age
        self._on_problem = on_problem
        # a seed makes the whole sequence of noise reproducible; -1 draws fresh noise every time
        self._seeds = np.random.default_rng(seed) if seed >= 0 else None
        self._first_seed = seed if seed >= 0 else None
        self._latest: tuple[float, Views | None, str] | None = None  # (stamp, views, degraded status)
        self._joints: dict[str, float] = {}
        self._joints_lock = threading.Lock()
        self._restored: dict[str, float] | None = None
        self._supervisor_mode = ""
        self.next_chunk_id = 1
        self.refusals = 0  # executing chunks the supervisor refused (each dropped its plan)

    # --- inputs ------------------------------------------------------------------------------
    def observe(self, stamp: float, views: Views) -> None:
        """The newest set, its views already checked."""
        self._latest = (stamp, views, "")

    def observe_degraded(self, stamp: float, status: str) -> None:
        """A set the sync node marked degraded (a camera dropped out): nothing to act on."""
        self._latest = (stamp, None, status)

    def reject_observation(self, cause: str, detail: str) -> None:
        """A set that could not be used: an older one is not acted on in its place."""
        self._latest = None
        self._on_problem(cause, detail)

    def update_joints(self, names: list[str], positions: list[float]) -> None:
        if len(names) != len(positions):
            return self._on_problem("joint_states malformed", f"{len(names)} names, {len(positions)} positions")
        with self._joints_lock:
            self._joints.update(zip(names, positions))

    def supervisor_state(self, mode: str, last_rejected_chunk_id: int) -> bool:
        """The supervisor's mode and its last refusal (each state report names it, so a lost report
        loses nothing). True when that refusal hit the executing chunk: its plan is dropped, and the
        next chunk is sampled afresh rather than inpainted towards it."""
        self._supervisor_mode = mode
        if last_rejected_chunk_id and self.deployed.scheduler.refused(last_rejected_chunk_id):
            self.refusals += 1
            return True
        return False

    def resample(self, names: list[str], positions: list[float]) -> ResampleReply:
        """After a rollback: forget the executing chunk, and condition the next chunk on the state
        the rollback restored."""
        unknown = [n for n in names if n not in self.deployed.policy.meta.state_names]
        if len(names) != len(positions) or unknown or not all(math.isfinite(x) for x in positions):
            return ResampleReply(
                False,
                0,
                f"bad restored state: {len(names)} names, {len(positions)} positions"
                + (f", unknown joints {unknown}" if unknown else "")
                + " (or non-finite values)",
            )
        # a new epoch: the chunk of an inference in flight is neither accepted (it would guide the
        # next chunk towards the discarded plan) nor published
        self.deployed.scheduler.reset()
        self._restored = dict(zip(names, positions))
        return ResampleReply(
            True, self.next_chunk_id, f"chunk {self.next_chunk_id} will be sampled from the restored state"
        )

    # --- inference ---------------------------------------------------------------------------
    def due(self, now: float) -> bool:
        if self._supervisor_mode in PAUSING_MODES:
            return False
        return self._restored is not None or self.deployed.scheduler.inference_due(now)

    def job(self, now: float) -> InferenceJob | None:
        """The inputs of the next inference, or None (and the reason to on_problem) when there is
        nothing to act on."""
        if self._latest is None:
            return None
        stamp, views, degraded = self._latest
        if views is None:
            return self._on_problem("observation degraded", f"sync_node marked the set degraded: {degraded}")
        if now - stamp > self.max_observation_age:
            return self._on_problem(
                "observation stale",
                f"newest set is {now - stamp:.3f} s old (max_observation_age {self.max_observation_age} s)",
            )
        with self._joints_lock:
            joints = dict(self._joints)
        restored, epoch = self._restored, self.deployed.scheduler.epoch
        if restored is not None:
            joints.update(restored)
        try:
            obs = self.deployed.observation(views[0], views[1], joints, self.instruction)
        except UnusableJointState as exc:
            return self._on_problem("joint state missing, NaN or out of range", str(exc))
        except ValueError as exc:  # ObservationError included
            return self._on_problem("observation rejected", str(exc))
        self._restored = None
        chunk_id, self.next_chunk_id = self.next_chunk_id, self.next_chunk_id + 1
        return InferenceJob(obs, stamp, views, epoch, chunk_id, self._next_seed())

    def infer(
        self, job: InferenceJob, clock: Callable[[], float], on_chunk: Callable[[ChunkReady], None]
    ) -> Prediction:
        """Samples the job's chunk; on_chunk gets it as soon as its actions are final, unless a
        resample since the job discarded it."""
        return self.deployed.infer(job.obs, job.stamp, clock, on_chunk, job.chunk_id, job.seed, job.epoch)

    def current(self, job: InferenceJob) -> bool:
        """No resample since the job: its plan is the one executing."""
        return job.epoch == self.deployed.scheduler.epoch

    def _next_seed(self) -> int | None:
        if self._seeds is None:
            return None
        if self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
            return seed
        return int(self._seeds.integers(2**31))
