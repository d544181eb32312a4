"""Flow-matching samplers: one stream (video latents, or actions + value) integrated from noise to data.

Convention (wam_ros everywhere): x_t = (1 - t) x0 + t x1 with x1 ~ N(0, I), velocity v = x1 - x0,
t from 1 (noise) to 0 (data). That is diffusers' flow-matching convention with sigma = t, so the
UniPC scheduler takes our velocities as `flow_prediction` model outputs unchanged
(its x0 estimate is x_t - sigma v).

Both samplers walk the same time grid, t_i = shift(1 - i / steps) for i = 0..steps with
shift(t) = s t / (1 + (s - 1) t) (Wan's flow shift; s = 1 is the plain linear grid), so a stream
with T steps has made its last model evaluation at pass T - 1 and is at t = 0 after pass T. The
session runs two streams side by side: video over T_O steps and actions over T_a <= T_O steps
(ANS), each with its own sampler instance, because a multistep solver keeps a history per stream.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from wam_ros.model.model_config import SAMPLERS


def shifted_times(steps: int, shift: float) -> np.ndarray:
    """The time grid t_0 = 1 > t_1 > ... > t_steps = 0 (float64), with Wan's flow shift."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"flow shift must be > 0, got {shift}")
    t = 1.0 - np.arange(steps + 1) / steps
    return shift * t / (1.0 + (shift - 1.0) * t)


class FlowSampler:
    """Integrates dx/dt = v(x, t) from t = 1 to 0 in a fixed number of model evaluations."""

    def __init__(self, steps: int):
        self.steps = steps
        self.index = 0

    @property
    def t(self) -> float:
        """The time of the next model evaluation (0.0 once done)."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.index >= self.steps

    def step(self, x: Tensor, velocity: Tensor) -> Tensor:
        """x at the current t and the model's velocity there -> x at the next t."""
        if self.done:
            raise RuntimeError("the sampler has made all its steps")
        self.index += 1
        return self._update(x, velocity, self.index - 1)

    def _update(self, x: Tensor, velocity: Tensor, i: int) -> Tensor:
        raise NotImplementedError


class EulerSampler(FlowSampler):
    """First order: x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)."""

    def __init__(self, steps: int, shift: float = 1.0):
        super().__init__(steps)
        self.times = shifted_times(steps, shift)

    @property
    def t(self) -> float:
        return float(self.times[self.index])

    def _update(self, x: Tensor, velocity: Tensor, i: int) -> Tensor:
        return x + (self.times[i + 1] - self.times[i]) * velocity


class UniPCSampler(FlowSampler):
    """diffusers' UniPCMultistepScheduler (bh2 predictor-corrector, order 2, data prediction) for flow
    matching, on the grid of shifted_times. Its first step is the order-1 (DDIM = Euler) step; later
    steps reuse the previous model outputs, so one instance serves exactly one stream."""

    def __init__(self, steps: int, shift: float = 1.0):
        from diffusers import UniPCMultistepScheduler  # diffusers is needed only when UniPC is chosen

        super().__init__(steps)
        # the shift is applied by the scheduler, to the unshifted grid passed as `sigmas`
        self.scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            solver_order=2,
            final_sigmas_type="zero",
        )
        self.scheduler.set_timesteps(sigmas=shifted_times(steps, 1.0)[:-1].copy())
        # walk the schedule by position: its integer timesteps (sigma * 1000) repeat beyond 1000 steps
        self.scheduler.set_begin_index(0)

    @property
    def t(self) -> float:
        # the scheduler's own sigma (float32; the first is 1 - 1e-6), so that the model is evaluated
        # exactly where the scheduler's update assumes it was
        return float(self.scheduler.sigmas[self.index])

    def _update(self, x: Tensor, velocity: Tensor, i: int) -> Tensor:
        # the scheduler's arithmetic runs in the sample's dtype: fp32 keeps bf16 models' updates exact
        out = self.scheduler.step(velocity.float(), self.scheduler.timesteps[i], x.float(), return_dict=False)[0]
        return out.to(x.dtype)


def make_sampler(kind: str, steps: int, shift: float = 1.0) -> FlowSampler:
    if kind == "euler":
        return EulerSampler(steps, shift)
    if kind == "unipc":
        return UniPCSampler(steps, shift)
    raise ValueError(f"sampler {kind!r}: expected one of {SAMPLERS}")


def sample(
    kind: str, steps: int, x1: Tensor, velocity_fn: Callable[[Tensor, Tensor], Tensor], shift: float = 1.0
) -> Tensor:
    """x0 from noise x1 with velocity_fn(x, t: Tensor (batch,)) -> v: the whole integration in one call."""
    sampler = make_sampler(kind, steps, shift)
    x = x1
    while not sampler.done:
        t = torch.full((x.shape[0],), sampler.t, dtype=x.dtype, device=x.device)
        x = sampler.step(x, velocity_fn(x, t))
    return x
