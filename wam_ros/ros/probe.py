"""A node in its own rclpy context (and optionally domain), spun by hand: for benchmarks and tests
that observe other processes over DDS."""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable

import rclpy
from rclpy.client import Client
from rclpy.executors import Executor, SingleThreadedExecutor


class ServiceCallError(RuntimeError):
    """A service that never appeared or never answered."""


# Clients whose server has had time to discover their response reader (see call_service).
_SETTLED_CLIENTS: "weakref.WeakSet[Client]" = weakref.WeakSet()


def call_service(
    executor: Executor, client: Client, request: Any, timeout: float = 10.0, attempts: int = 1, settle: float = 1.0
) -> Any:
    """Call a service and return its response, spinning `executor` (which holds the client's node).

    `wait_for_service` says the client has discovered the server, not that the server has
    discovered the client's response reader; a request sent in between is served and its response
    dropped ("failed to send response (timeout)" in the server's log; on a loaded 2-core machine
    the gap exceeded rmw_fastrtps's wait). So a new client first spins for `settle` seconds.
    `attempts` > 1 re-sends the request after a timeout: only for requests that are safe to repeat.
    """
    if not client.wait_for_service(timeout_sec=30.0):
        raise ServiceCallError(f"{client.srv_name} never appeared")
    if client not in _SETTLED_CLIENTS:
        end = time.monotonic() + settle
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        _SETTLED_CLIENTS.add(client)
    for _ in range(attempts):
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=timeout)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
    raise ServiceCallError(f"{client.srv_name} did not answer within {timeout} s ({attempts} attempt(s))")


class ProbeNode:
    def __init__(self, name: str, domain_id: int | None = None):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not condition():
            self.executor.spin_once(timeout_sec=0.005)
        return bool(condition())

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call_service(self, client: Client, request: Any, timeout: float = 10.0, attempts: int = 1) -> Any:
        return call_service(self.executor, client, request, timeout, attempts)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
