"""Shared `main()` for node console scripts: init, spin, clean shutdown on Ctrl-C / SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from wam_ros.config import ConfigError
from wam_ros.memory import keep_freed_memory


def make_executor() -> SingleThreadedExecutor:
    """The executor every wam_ros process spins.

    Single-threaded on purpose: callbacks here are short, and heavy work (physics, rendering,
    inference) runs in dedicated threads. rclpy's MultiThreadedExecutor re-polls in a tight
    loop while a callback of a busy group is pending, and that loop took the GIL from the
    simulator thread: with it the sim ran at 0.03x real time, with this executor at 0.98x.
    """
    return SingleThreadedExecutor()


_stop_requested = threading.Event()
_spinning = threading.Event()


def _interrupt(signum: int, frame) -> None:
    """While spinning, only note the request: an exception raised here lands wherever the main
    thread is, and inside take_message's conversion of a message pybind11 turns it into a
    RuntimeError that ends the process with exit code 1. Before that (constructing nodes) there
    is nothing to finish, so it interrupts at once."""
    _stop_requested.set()
    if not _spinning.is_set():
        raise KeyboardInterrupt


def init_without_signal_handlers(args: list[str]) -> None:
    """rclpy.init with our own SIGINT/SIGTERM handling instead of rclpy's: rclpy's handler
    invalidates the context first, so a node could no longer send its last commands (a bridge's
    hold), and an executor inside take_message then fails instead of returning.
    Also tunes malloc for image traffic (wam_ros.memory), before any image is allocated."""
    keep_freed_memory()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def spin_until_interrupted(nodes: list[Node]) -> None:
    """Spins the nodes until Ctrl-C / SIGTERM or an external shutdown."""
    executor = make_executor()
    for node in nodes:
        executor.add_node(node)
    _spinning.set()
    try:
        while rclpy.ok() and not _stop_requested.is_set():
            executor.spin_once(timeout_sec=0.1)  # returns to Python often enough to see the request
    except ExternalShutdownException:
        pass
    finally:
        _spinning.clear()


def startup_failures(nodes: list[Node]) -> tuple[list[str], list[str]]:
    """(fatal, tolerated): "<node>: NOT OPERATIONAL: <why, with the fix>" for each node whose start-up
    failed (its `failure`), split by its `exit_on_failure` parameter."""
    fatal, tolerated = [], []
    for node in nodes:
        failure = getattr(node, "failure", "")
        if failure:
            line = f"{node.get_fully_qualified_name()}: NOT OPERATIONAL: {failure}"
            exits = node.has_parameter("exit_on_failure") and node.get_parameter("exit_on_failure").value
            (fatal if exits else tolerated).append(line)
    return fatal, tolerated


def report_startup_failures(nodes: list[Node], prefix: str) -> bool:
    """Prints the start-up failures; True when one of them must end the process (exit code 3)."""
    fatal, tolerated = startup_failures(nodes)
    for line in fatal:
        print(f"[{prefix}] {line}", file=sys.stderr)
    for line in tolerated:
        print(f"[{prefix}] {line} (staying up: exit_on_failure is false)", file=sys.stderr)
    return bool(fatal)


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    init_without_signal_handlers(args if args is not None else sys.argv)
    node = None
    try:
        node = factory()
        if report_startup_failures([node], node.get_name()):
            return 3
        spin_until_interrupted([node])
    except ConfigError as exc:
        print(f"[{getattr(node, 'get_name', lambda: 'wam_ros')()}] configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # during node construction
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
