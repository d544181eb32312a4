"""Helpers the tests share: `from support.ros import ProbeNode, stop_process, SPARE_DOMAIN_IDS`,
`from support.model_data import tiny_config`, ...

test/ is on sys.path because test/conftest.py sits there without an __init__.py (pytest's
default "prepend" import mode), so `support` is importable from every test module; conftest.py
keeps only the session's environment and fixtures. Some modules here are not imported but run
as processes by path (injectable_bridge.py, heartbeat_standin.py, tienkung_peer.py,
franky_bridge_probe.py, and lerobot_side.py in the LeRobot venv): they import only wam_ros.
"""
