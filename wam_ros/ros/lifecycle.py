"""The base of the package's lifecycle nodes (the supervisor, the arm bridge)."""

from __future__ import annotations

from lifecycle_msgs.srv import ChangeState
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode


class SafeLifecycleNode(LifecycleNode):
    """A LifecycleNode whose ~/change_state refuses a transition its current state does not have
    (success=False, and a warning). rclpy (Jazzy) raises RCLError from that service callback out of
    the executor instead, so one mistyped `ros2 lifecycle set supervisor activate` ended the node."""

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        service = getattr(self, "_service_change_state", None)  # rclpy's own, absent without the services
        if service is not None:
            service.callback = self._refusing_unknown_transitions(service.callback)

    def _refusing_unknown_transitions(self, change_state):
        def guarded(request: ChangeState.Request, response: ChangeState.Response) -> ChangeState.Response:
            state = self._state_machine.current_state
            try:
                return change_state(request, response)
            except _rclpy.RCLError as exc:
                self.get_logger().warn(
                    f"lifecycle transition {request.transition.id} {request.transition.label!r} refused: not "
                    f"available in state {state[1]!r} ({str(exc).strip()})"
                )
                response.success = False
                return response

        return guarded
