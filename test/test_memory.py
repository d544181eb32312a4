"""wam_ros.memory: image-sized buffers reuse the same pages instead of faulting in new ones."""

import os
import subprocess
import sys

from wam_ros.memory import DISABLE_VARIABLE, keep_freed_memory

FAULTS_PER_FRAME = """
import resource, sys
import numpy as np
from wam_ros.memory import keep_freed_memory
tuned = keep_freed_memory()
frames = 50
def frame():  # one 3-camera RGB-D set's worth of fresh buffers, touched and freed
    return [np.ones(size, np.uint8) for size in (921600, 614400) * 3]
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(frames):
    frame()
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / frames)
"""


def _faults_per_frame(tuning: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_FRAME],
        env={**os.environ, DISABLE_VARIABLE: tuning},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", float(out[1])


def test_tuned_malloc_reuses_image_pages():
    tuned, faults = _faults_per_frame("1")
    assert tuned
    pages_per_frame = 3 * (921600 + 614400) / 4096
    # a fresh set would fault in 1,125 pages; reused heap pages fault in none
    assert faults < 0.05 * pages_per_frame, f"{faults:.0f} page faults per set with the tuning"


def test_the_tuning_can_be_switched_off():
    tuned, _ = _faults_per_frame("0")
    assert not tuned
    os.environ[DISABLE_VARIABLE] = "0"
    try:
        assert keep_freed_memory() is False
    finally:
        del os.environ[DISABLE_VARIABLE]
