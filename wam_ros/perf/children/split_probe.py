"""The probe of `wam-ros bench split` (wam_ros.perf.split), one per side of the split deployment: on
the robot side it measures observation-to-chunk latency, the observation payload, supervisor
transitions and refusals, the policy's starved steps and chunk ages; on the policy side the arrival
times of sets and chunks, for the time on the link. Prints READY once a chunk conditioned on a set
is seen there, then its events as JSON after SECONDS more.

`python -m wam_ros.perf.children.split_probe robot|policy --startup-timeout S --seconds S`
"""

from __future__ import annotations

import argparse
import json
import time

from wam_ros.perf.children import READY


def probe(side: str, startup_timeout: float, seconds: float) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from wam_ros.msg import ActionChunk, CompressedMultiViewRGBD, MultiViewRGBD, SupervisorState
    from wam_ros.ros.conversions import from_time
    from wam_ros.ros.node_main import make_executor
    from wam_ros.ros.nodes.observation_encoder_node import NEWEST_QOS
    from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, LATCHED_QOS

    rclpy.init(args=["wam-ros-split-probe"])
    node = Node("split_probe", parameter_overrides=[Parameter("use_sim_time", value=True)])
    arrivals: dict[int, float] = {}  # observation stamp (ns) -> wall arrival on the robot side
    events: dict[str, list] = {
        "latencies": [],
        "payloads": [],
        "transitions": [],
        "starved": [],
        "chunk_ages": [],
        "refusals": [],
        "set_arrivals": [],
        "chunk_arrivals": [],
    }
    state = {"mode": None, "rejected": 0}

    def stamp_ns(stamp) -> int:
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    def on_set(msg: MultiViewRGBD) -> None:
        arrivals[stamp_ns(msg.header.stamp)] = time.time()
        events["raw_set_bytes"] = sum(len(i.data) for i in (*msg.color, *msg.depth))
        while len(arrivals) > 300:
            arrivals.pop(next(iter(arrivals)))

    def on_compressed(msg: CompressedMultiViewRGBD) -> None:
        events["set_arrivals"].append((stamp_ns(msg.header.stamp), time.time()))
        events["payloads"].append((time.time(), sum(len(i.data) for i in (*msg.color, *msg.depth))))

    def on_chunk(msg: ActionChunk) -> None:
        events["chunk_arrivals"].append((int(msg.chunk_id), time.time()))
        if side == "policy":
            return
        arrived = arrivals.get(stamp_ns(msg.header.stamp))
        age = node.get_clock().now().nanoseconds * 1e-9 - from_time(msg.header.stamp)  # ROS time, as the supervisor
        events["chunk_ages"].append((time.time(), int(msg.chunk_id), age))
        if arrived is not None:
            events["latencies"].append((time.time(), time.time() - arrived))

    def on_supervisor(msg: SupervisorState) -> None:
        now = time.time()
        if msg.state_name != state["mode"]:
            state["mode"] = msg.state_name
            events["transitions"].append((now, msg.state_name, msg.reason))
        if msg.chunks_rejected != state["rejected"]:
            state["rejected"] = msg.chunks_rejected
            events["refusals"].append((now, msg.last_rejection))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": policy"):
                values = {kv.key: kv.value for kv in status.values}
                if "starved_steps" in values:
                    events["starved"].append((time.time(), int(values["starved_steps"])))

    if side == "robot":  # the raw sets never cross the link
        node.create_subscription(MultiViewRGBD, "observations", on_set, NEWEST_QOS)
    node.create_subscription(CompressedMultiViewRGBD, "observations/compressed", on_compressed, NEWEST_QOS)
    node.create_subscription(ActionChunk, "policy/chunk", on_chunk, COMMAND_QOS)
    node.create_subscription(SupervisorState, "supervisor/state", on_supervisor, LATCHED_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, DIAGNOSTICS_QOS)
    executor = make_executor()
    executor.add_node(node)
    deadline = time.monotonic() + startup_timeout
    while not (events["latencies"] if side == "robot" else events["chunk_arrivals"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no chunk conditioned on a set seen here within {startup_timeout:.0f} s")
        executor.spin_once(timeout_sec=0.05)
    print(READY, flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return events


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="split_probe")
    parser.add_argument("side", choices=["robot", "policy"])
    parser.add_argument("--startup-timeout", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.side, args.startup_timeout, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
