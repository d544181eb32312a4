"""ruff (ruff.toml): the lint rules pass and the tree is formatted. `make format` fixes both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize(
    "command", [["check", "--output-format", "concise"], ["format", "--check"]], ids=["lint", "format"]
)
def test_ruff(command):
    assert RUFF.exists(), f"{RUFF}: not installed (requirements/venv.txt lists ruff; run make setup)"
    result = subprocess.run([str(RUFF), *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"ruff {' '.join(command)} (make format fixes it):\n{result.stdout}{result.stderr}"
