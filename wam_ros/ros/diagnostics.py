"""Small helpers for /diagnostics: rate meters and DiagnosticStatus construction."""

from __future__ import annotations

from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


class RateMeter:
    """Event rate over a sliding window of timestamps (seconds, any clock)."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._stamps: deque[float] = deque()
        self.count = 0

    def tick(self, now: float) -> None:
        self.count += 1
        self._stamps.append(now)
        while self._stamps and self._stamps[0] < now - self.window:
            self._stamps.popleft()

    def rate(self, now: float) -> float:
        while self._stamps and self._stamps[0] < now - self.window:
            self._stamps.popleft()
        if len(self._stamps) < 2:
            return 0.0
        return (len(self._stamps) - 1) / max(self._stamps[-1] - self._stamps[0], 1e-9)


def status(name: str, hardware_id: str, level: bytes, message: str, values: dict[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def array_msg(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg


OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE)
