"""Progress lines: rate, elapsed and ETA from the clock (a fake one here)."""

from __future__ import annotations

import io

from wam_ros.progress import Progress, duration_text


def test_progress_lines_give_rate_elapsed_and_eta():
    now = [100.0]
    stream = io.StringIO()
    progress = Progress("train", 1000, "step", first=200, stream=stream, clock=lambda: now[0])
    now[0] += 80.0  # 400 steps in 80 s: 5 steps/s, 400 left
    progress.update(600, "[joint] action 0.0123")
    assert stream.getvalue() == "train 600/1000 | [joint] action 0.0123 | 5.00 step/s | elapsed 1m20s | ETA 1m20s\n"
    slow = Progress("demonstrations", 10, "episode", stream=stream, clock=lambda: now[0])
    now[0] += 120.0
    assert slow.line(2) == "demonstrations 2/10 | 60.0 s/episode | elapsed 2m00s | ETA 8m00s"
    assert Progress("x", 5, stream=stream, clock=lambda: 0.0).line(0).endswith("ETA ?")
    assert (duration_text(7), duration_text(185), duration_text(3725)) == ("7s", "3m05s", "1h02m")
