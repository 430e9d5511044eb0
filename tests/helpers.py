"""Helpers the test modules share (no test module imports another)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

VIDMEM = Path(sys.executable).parent / "vidmem"
"""The console script of the environment running the tests."""


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDMEM_")}
    env["VIDMEM_HOME"] = str(home)
    env.update(extra or {})
    return env


def cli(
    home: Path, *args: str | Path, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script; with ok=True, fail the test unless it exits 0 without a traceback."""
    proc = subprocess.run(
        [str(VIDMEM), *map(str, args)], env=_env(home, env), capture_output=True, text=True, timeout=600
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, f"vidmem {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stderr}"
    return proc


def cli_json(home: Path, *args: str | Path, env: dict[str, str] | None = None) -> Any:
    return json.loads(cli(home, *args, "--json", env=env).stdout)
