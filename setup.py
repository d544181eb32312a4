"""pip / setuptools install of the Python package (the venv flow; colcon uses CMakeLists.txt).

Messages are not built here: `make` builds msg/ with CMake into the same prefix first.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
console_scripts = [
    line.strip() for line in (ROOT / "wam_ros" / "console_scripts.txt").read_text().splitlines() if "=" in line
]


def share(directory: str) -> list[tuple[str, list[str]]]:
    files = sorted(p for p in (ROOT / directory).rglob("*") if p.is_file())
    by_dir: dict[str, list[str]] = {}
    for p in files:
        rel = p.relative_to(ROOT)
        by_dir.setdefault(str(Path("share/wam_ros") / rel.parent), []).append(str(rel))
    return list(by_dir.items())


setup(
    name="wam_ros",
    version="0.1.0",
    description="World Action Models on real dual-arm robots (ROS 2)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["wam_ros", "wam_ros.*"]),
    package_data={"wam_ros": ["console_scripts.txt"]},
    data_files=[
        ("share/wam_ros", ["package.xml"]),
        *share("launch"),
        *share("config"),
        *share("urdf"),
        *share("models"),
    ],
    entry_points={"console_scripts": console_scripts},
    zip_safe=False,
)
