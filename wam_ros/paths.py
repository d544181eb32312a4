"""Where the package's data (config/, urdf/, launch/) lives: ament index, then the install prefix."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "wam_ros"


def share_dir() -> Path:
    """The package's share directory (colcon install, pip install into a venv, or the checkout)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError, ValueError):
        pass
    for candidate in (Path(sys.prefix) / "share" / PACKAGE, Path(__file__).resolve().parents[1]):
        if (candidate / "config").is_dir() and (candidate / "urdf").is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} share directory (config/, urdf/): "
        "source a ROS workspace or install the package with `make install`"
    )
