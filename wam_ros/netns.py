"""Two hosts on one machine: Linux network namespaces joined by a shaped veth pair (ROS-free).

The split deployment (robot PC + policy workstation) is tested and benchmarked with the robot side
in one namespace and the policy side in the other, so that everything between them crosses a real
network link: the kernel's IP stack, a rate limit (tc htb), random loss (a classic-BPF classifier),
and where the kernel has sch_netem, delay. Fast DDS cannot take a shared-memory shortcut between namespaces (their host ids
differ), so the link carries every byte, and the veth counters measure it. Needs root (or
CAP_NET_ADMIN) and iproute2; `unavailable()` says why not where it cannot run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

UNSHAPED_MBIT = 10000.0  # the rate class of a link without a rate limit
SKF_AD_RANDOM = 2**32 - 4096 + 56  # classic BPF's ancillary load of a random u32 (SKF_AD_OFF + 56), as u32


class NetnsError(RuntimeError):
    """A namespace, link or qdisc operation failed; the message has the command and its error."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    name = f"wam_probe_{os.getpid()}"
    done = _ip("netns", "add", name, check=False)
    if done.returncode:
        return f"cannot create a network namespace (root or CAP_NET_ADMIN needed): {done.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass(frozen=True)
class LinkShape:
    """The link between the hosts, both directions: rate (Mbit/s; 0 = unlimited), random loss (%),
    and where the kernel has sch_netem, one-way delay (ms)."""

    rate_mbit: float = 0.0
    delay_ms: float = 0.0
    loss_percent: float = 0.0

    @property
    def label(self) -> str:
        parts = [f"{self.rate_mbit:g} Mbit/s" if self.rate_mbit else "unshaped"]
        parts += [f"{self.delay_ms:g} ms delay"] if self.delay_ms else []
        parts += [f"{self.loss_percent:g} % loss"] if self.loss_percent else []
        return ", ".join(parts)


class HostPair:
    """Two namespaces, `<prefix>_robot` (10.<n>.0.1) and `<prefix>_policy` (10.<n>.0.2), joined by a
    veth pair; a context manager that removes them again."""

    SIDES = ("robot", "policy")

    def __init__(self, prefix: str | None = None, subnet: int | None = None):
        pid = os.getpid()
        self.prefix = prefix or f"wam{pid % 100000}"
        self.subnet = subnet if subnet is not None else 100 + pid % 150
        self.namespaces = {side: f"{self.prefix}_{side}" for side in self.SIDES}
        self.devices = {side: f"{self.prefix}{side[0]}" for side in self.SIDES}  # <= 15 characters
        self.addresses = {"robot": f"10.{self.subnet}.0.1", "policy": f"10.{self.subnet}.0.2"}
        self.notes: list[str] = []  # shaping that this kernel could not apply

    def __enter__(self) -> "HostPair":
        try:
            for side in self.SIDES:
                _ip("netns", "add", self.namespaces[side])
                _ip("-n", self.namespaces[side], "link", "set", "lo", "up")
            _ip("link", "add", self.devices["robot"], "type", "veth", "peer", "name", self.devices["policy"])
            for side in self.SIDES:
                ns, dev = self.namespaces[side], self.devices[side]
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{self.addresses[side]}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for ns in self.namespaces.values():  # deleting a namespace deletes its end of the veth pair
            if Path("/run/netns", ns).exists():
                _ip("netns", "del", ns, check=False)

    def prefix_command(self, side: str) -> list[str]:
        """What to put before a command to run it on `side`."""
        return ["ip", "netns", "exec", self.namespaces[side]]

    def peer(self, side: str) -> str:
        """The other side's address (ROS_STATIC_PEERS of a process on `side`)."""
        return self.addresses["policy" if side == "robot" else "robot"]

    def shape(self, shape: LinkShape) -> LinkShape:
        """Apply `shape` to both directions (each side's egress), replacing earlier shaping. Returns
        the shape applied: without sch_netem, no delay (`notes` says so).

        An htb class limits the rate. Loss needs no netem: a classic-BPF classifier draws a random
        number per packet (the kernel's SKF_AD_RANDOM) and sends the chosen share to a class whose
        queue holds nothing (pfifo limit 0), so they are dropped. Delay needs sch_netem, as the leaf
        of the rate class."""
        self.notes = []
        applied = shape
        for side in self.SIDES:
            ns, dev = self.namespaces[side], self.devices[side]
            self._tc(ns, "qdisc", "del", "dev", dev, "root")
            rate = f"{shape.rate_mbit or UNSHAPED_MBIT:g}mbit"
            burst = max(int((shape.rate_mbit or UNSHAPED_MBIT) * 1e6 / 8 / 100), 32 * 1024)  # 10 ms of the rate
            self._tc_checked(ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1")
            self._tc_checked(
                ns,
                "class",
                "add",
                "dev",
                dev,
                "parent",
                "1:",
                "classid",
                "1:1",
                "htb",
                "rate",
                rate,
                "burst",
                str(burst),
                "quantum",
                "60000",
            )
            if shape.loss_percent:
                threshold = min(int(round(shape.loss_percent / 100 * 2**32)), 2**32 - 1)
                # A = random u32; A >= threshold: class 1:1 (sent), else class 1:2 (dropped)
                program = f"4,32 0 0 {SKF_AD_RANDOM},53 1 0 {threshold},6 0 0 {0x10002},6 0 0 {0x10001}"
                self._tc_checked(
                    ns,
                    "class",
                    "add",
                    "dev",
                    dev,
                    "parent",
                    "1:",
                    "classid",
                    "1:2",
                    "htb",
                    "rate",
                    rate,
                    "quantum",
                    "60000",
                )
                self._tc_checked(
                    ns, "qdisc", "add", "dev", dev, "parent", "1:2", "handle", "20:", "pfifo", "limit", "0"
                )
                self._tc_checked(ns, "filter", "add", "dev", dev, "parent", "1:", "bpf", "bytecode", program)
            if shape.delay_ms:
                done = self._tc(
                    ns,
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "parent",
                    "1:1",
                    "handle",
                    "10:",
                    "netem",
                    "delay",
                    f"{shape.delay_ms}ms",
                    "limit",
                    "100000",
                )
                if done.returncode:
                    applied = LinkShape(shape.rate_mbit, 0.0, shape.loss_percent)
                    if side == "robot":  # the same for both ends: say it once
                        self.notes.append(
                            f"delay {shape.delay_ms:g} ms not applied: {done.stderr.strip()} (this "
                            "kernel has no sch_netem)"
                        )
        return applied

    def packet_counts(self) -> dict[str, tuple[int, int]]:
        """(packets sent, packets dropped) by each side's shaping so far (emulated loss, full queues)."""
        out = {}
        for side in self.SIDES:
            done = self._tc(self.namespaces[side], "-s", "qdisc", "show", "dev", self.devices[side])
            match = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", done.stdout)  # the root qdisc's totals
            out[side] = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        return out

    @staticmethod
    def _tc(ns: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True)

    @classmethod
    def _tc_checked(cls, ns: str, *args: str) -> None:
        done = cls._tc(ns, *args)
        if done.returncode:
            raise NetnsError(f"tc {' '.join(args)} (in {ns}): {done.stderr.strip()}")

    def set_link(self, up: bool) -> None:
        """Pull the cable (both ends down) or plug it back in."""
        for side in self.SIDES:
            _ip("-n", self.namespaces[side], "link", "set", self.devices[side], "up" if up else "down")

    def bytes_sent(self) -> dict[str, int]:
        """Bytes each side has sent on the link so far."""
        out = {}
        for side in self.SIDES:
            done = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.namespaces[side],
                    "cat",
                    f"/sys/class/net/{self.devices[side]}/statistics/tx_bytes",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            out[side] = int(done.stdout)
        return out
