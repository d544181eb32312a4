"""`wam-ros doctor`: what the robot PC needs, checked before the first bring-up (ROS-free).

Each check gives OK, WARN or FAIL with what it saw and, for a FAIL, the fix. The checks follow
the system description of the given launch arguments (robot, cameras, params_file, episodes_dir):
the cameras it would open, the CAN ports or FCI hosts its arm bridge would use.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from wam_ros.config import CAMERA_NAMES
from wam_ros.robots.agilex import DEFAULT_CAN_PORTS, PiperBackend, can_interface_problem
from wam_ros.robots.bridge import BridgeError
from wam_ros.robots.franka import DEFAULT_FCI_HOSTS, FCI_PORT, is_realtime_kernel
from wam_ros.ros.system import SAFE_DOMAIN_IDS, SystemOptions, dds_environment, describe_system

OK, WARN, FAIL = "OK", "WARN", "FAIL"
RECORDING_MIN_FREE_GB = 20.0  # about 10 min of three raw 640x480 RGB-D cameras at 30 Hz
SHM_MIN_FREE_MB = 256.0  # Fast DDS shared-memory segments for whole camera sets


@dataclass(frozen=True)
class Check:
    status: str
    name: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class CameraDevice:
    vendor: str
    serial: str
    name: str = ""
    firmware: str = ""
    usb: str = ""  # RealSense usb_type_descriptor ("3.2"), Orbbec connection type


# --- cameras ------------------------------------------------------------------------------------
def realsense_devices() -> list[CameraDevice]:
    try:
        import pyrealsense2 as rs
    except ImportError:
        return []
    from wam_ros.cameras.realsense import device_info

    out = []
    for device in rs.context().query_devices():
        info = device_info(device)
        out.append(
            CameraDevice(
                "realsense",
                info.get("serial_number", ""),
                info.get("name", ""),
                info.get("firmware_version", ""),
                info.get("usb_type_descriptor", ""),
            )
        )
    return out


def orbbec_devices() -> list[CameraDevice]:
    try:
        import pyorbbecsdk as ob
    except ImportError:
        return []
    devices = ob.Context().query_devices()
    out = []
    for k in range(devices.get_count()):
        info = devices.get_device_by_index(k).get_device_info()
        out.append(
            CameraDevice(
                "orbbec",
                info.get_serial_number(),
                info.get_name(),
                info.get_firmware_version(),
                info.get_connection_type(),
            )
        )
    return out


def check_cameras(vendor: str, wanted: dict[str, str], devices: list[CameraDevice]) -> list[Check]:
    """`wanted`: camera -> configured serial ('' = any). Every configured camera must be connected
    (by serial, or enough devices for the unnamed ones) and on USB 3."""
    serial_key = "serial_no" if vendor == "realsense" else "serial_number"
    listed = ", ".join(f"{d.serial} ({d.name}, fw {d.firmware}, USB {d.usb or '?'})" for d in devices) or "none"
    checks = [
        Check(
            OK if devices else FAIL,
            f"{vendor} cameras",
            f"connected: {listed}",
            "" if devices else "plug the cameras in (USB 3 ports), check `lsusb` and the udev rules",
        )
    ]
    by_serial = {d.serial: d for d in devices}
    unnamed = [cam for cam, serial in wanted.items() if not serial]
    for cam, serial in wanted.items():
        if serial and serial not in by_serial:
            checks.append(
                Check(
                    FAIL,
                    f"{cam} camera",
                    f"{serial_key} {serial} is not connected",
                    f"connect it, or set {cam}'s {serial_key} in config/cameras.yaml or your "
                    f"params_file to one of: {', '.join(by_serial) or 'none connected'}",
                )
            )
        elif serial:
            device = by_serial[serial]
            slow = device.usb.startswith("2")
            checks.append(
                Check(
                    WARN if slow else OK,
                    f"{cam} camera",
                    f"{serial} {device.name} fw {device.firmware} USB {device.usb or '?'}",
                    "move it to a USB 3 port and cable" if slow else "",
                )
            )
    spare = len(devices) - sum(1 for s in wanted.values() if s and s in by_serial)
    if unnamed:
        enough = spare >= len(unnamed)
        checks.append(
            Check(
                WARN if enough else FAIL,
                "camera serials",
                f"{', '.join(unnamed)} open any camera ({spare} unassigned connected)",
                f"set {serial_key} for each camera, so that views cannot swap: "
                f"{', '.join(by_serial) or 'none connected'}",
            )
        )
    return checks


# --- arms -------------------------------------------------------------------------------------
def check_pipers(ports: Iterable[str], interface: str, answer_timeout: float = 1.0) -> list[Check]:
    """Each port: the SocketCAN interface (exists, CAN, up, 1 Mbit/s), then a Piper's joint feedback."""
    checks = []
    for side, port in zip(("left", "right"), ports):
        if interface == "socketcan":
            problem, fix = can_interface_problem(port)
            if problem:
                checks.append(Check(FAIL, f"{side} CAN {port}", problem, fix))
                continue
            checks.append(Check(OK, f"{side} CAN {port}", "up, 1 Mbit/s"))
        backend = PiperBackend(side, port, interface, feedback_timeout=answer_timeout)
        try:
            backend.connect()
            state = backend.read(time.monotonic())
            checks.append(
                Check(
                    OK,
                    f"{side} Piper on {port}",
                    "answers: joints " + " ".join(f"{v:+.2f}" for v in state.positions[:6]),
                )
            )
        except (BridgeError, OSError, ValueError) as exc:
            checks.append(
                Check(
                    FAIL,
                    f"{side} Piper on {port}",
                    str(exc),
                    "power the arm, check the CAN cable and that the port is this arm's",
                )
            )
        finally:
            backend.disconnect()
    return checks


def fci_handshake(host: str, timeout: float = 1.0) -> str:
    """libfranka's Connect request on the FCI command port; the server's protocol version, or
    raises OSError saying what answered instead (a TCP accept alone proves nothing: a proxy or
    another service may accept). Message layout: header {u32 command (0: Connect), u32 id,
    u32 size}, then request {u16 version, u16 udp_port}; response {header, u8 status, u16 version}."""
    with socket.create_connection((host, FCI_PORT), timeout=timeout) as connection:
        connection.settimeout(timeout)
        connection.sendall(struct.pack("<IIIHH", 0, 1, 16, 0, 1338))
        answer = b""
        while len(answer) < 15:
            chunk = connection.recv(64)
            if not chunk:
                break
            answer += chunk
    if len(answer) < 15 or struct.unpack_from("<II", answer) != (0, 1):
        shown = answer[:40].decode("ascii", "replace").splitlines()[0] if answer else "nothing"
        raise OSError(f"not an FCI server (answered {shown!r})")
    return f"protocol version {struct.unpack_from('<H', answer, 13)[0]}"


def check_fci(hosts: Iterable[str], realtime: bool, timeout: float = 1.0) -> list[Check]:
    checks = []
    if realtime:
        rt = is_realtime_kernel()
        checks.append(
            Check(
                OK if rt else FAIL,
                "real-time kernel",
                os.uname().release + (" PREEMPT_RT" if rt else ""),
                "" if rt else "boot a PREEMPT_RT kernel (Franka FCI), or franka.realtime:=false for franky-sim",
            )
        )
    for side, host in zip(("left", "right"), hosts):
        try:
            checks.append(Check(OK, f"{side} FR3 FCI {host}", f"answers ({fci_handshake(host, timeout)})"))
        except OSError as exc:
            checks.append(
                Check(
                    FAIL,
                    f"{side} FR3 FCI {host}",
                    f"no FCI on TCP {FCI_PORT}: {exc}",
                    "check franka.hosts, the cable to the Control box, and that FCI is enabled in Desk",
                )
            )
    return checks


# --- this PC ----------------------------------------------------------------------------------------
def check_dds(environ: dict[str, str]) -> list[Check]:
    checks = []
    domain = environ.get("ROS_DOMAIN_ID", "0")
    try:
        ok = int(domain) == 0 or int(domain) in SAFE_DOMAIN_IDS
    except ValueError:
        ok = False
    checks.append(
        Check(
            OK if ok else FAIL,
            "ROS_DOMAIN_ID",
            domain,
            "" if ok else f"use 0..{SAFE_DOMAIN_IDS[-1]} (higher ids collide with ephemeral ports)",
        )
    )
    profile = next(
        (environ[k] for k in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE") if environ.get(k)), ""
    )
    if profile and not Path(profile).is_file():
        checks.append(Check(FAIL, "Fast DDS profile", f"{profile} does not exist", "fix or unset the variable"))
    else:
        ours = dds_environment(environ)
        checks.append(
            Check(
                OK,
                "Fast DDS profile",
                profile or f"the package's ({ours['FASTRTPS_DEFAULT_PROFILES_FILE']}), set by bring-up",
            )
        )
    try:
        free_mb = shutil.disk_usage("/dev/shm").free / 2**20
        checks.append(
            Check(
                OK if free_mb >= SHM_MIN_FREE_MB else FAIL,
                "shared memory /dev/shm",
                f"{free_mb:.0f} MB free",
                ""
                if free_mb >= SHM_MIN_FREE_MB
                else "enlarge it (e.g. `sudo mount -o remount,size=1G /dev/shm`; docker: --shm-size=1g)",
            )
        )
    except OSError as exc:
        checks.append(Check(FAIL, "shared memory /dev/shm", str(exc), "Fast DDS needs /dev/shm"))
    return checks


def check_disk(directory: Path, min_free_gb: float = RECORDING_MIN_FREE_GB) -> Check:
    where = Path(directory).expanduser()
    probe = next((p for p in (where, *where.resolve().parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 2**30
    return Check(
        OK if free >= min_free_gb else FAIL,
        f"free disk for {where}",
        f"{free:.1f} GB on {probe}",
        ""
        if free >= min_free_gb
        else "free space or record elsewhere (episodes_dir:=...; about 2 GB per minute of three raw cameras)",
    )


def check_torch() -> Check:
    try:
        import torch
    except ImportError:
        return Check(FAIL, "torch", "not installed", "make setup (installs the CPU build)")
    if torch.cuda.is_available():
        return Check(OK, "torch device", f"cuda: {torch.cuda.get_device_name(0)} (torch {torch.__version__})")
    return Check(
        WARN,
        "torch device",
        f"CPU only (torch {torch.__version__}): the small configs run; paper-scale policies need a GPU",
        "install a CUDA build of torch on the policy PC",
    )


# --- the whole report -------------------------------------------------------------------------
def run_checks(
    opts: SystemOptions,
    environ: dict[str, str] | None = None,
    camera_lister: Callable[[str], list[CameraDevice]] | None = None,
) -> list[Check]:
    environ = dict(os.environ if environ is None else environ)
    specs = describe_system(opts)
    checks: list[Check] = []
    if opts.cameras in ("realsense", "orbbec"):
        devices = (
            camera_lister
            or {"realsense": lambda _: realsense_devices(), "orbbec": lambda _: orbbec_devices()}[opts.cameras]
        )(opts.cameras)
        key = "serial_no" if opts.cameras == "realsense" else "serial_number"
        wanted = {
            cam: str(
                next(
                    s.parameters.get(key, "")
                    for s in specs
                    if s.name == "camera" and s.namespace.strip("/").endswith(cam)
                )
            )
            for cam in CAMERA_NAMES
        }
        checks += check_cameras(opts.cameras, wanted, devices)
    if not opts.sim:
        bridge = next(s.parameters for s in specs if s.name == "arm_bridge")
        if opts.robot == "agilex":
            if bridge.get("agilex.emulate"):
                checks.append(Check(OK, "AgileX arms", "emulated (agilex.emulate): no CAN hardware checked"))
            else:
                checks += check_pipers(
                    bridge.get("agilex.can_ports", DEFAULT_CAN_PORTS), bridge.get("agilex.can_interface", "socketcan")
                )
        elif opts.robot == "franka":
            checks += check_fci(
                bridge.get("franka.hosts", DEFAULT_FCI_HOSTS), bool(bridge.get("franka.realtime", True))
            )
    checks += check_dds(environ)
    if opts.record:
        checks.append(check_disk(Path(opts.episodes_dir)))
    checks.append(check_torch())
    return checks


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    lines.append(f"{len(checks)} checks: {failed} FAIL, {sum(c.status == WARN for c in checks)} WARN")
    return "\n".join(lines)
