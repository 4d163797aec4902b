"""Shared fixtures: headless rendering, one torch thread, a runner for the CLI entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _run(
    script: str, args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    env.pop("REWARDLAB_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli("run.py", [...])`` runs an entry point in a subprocess with ``cwd=tmp_path``."""

    def call(script: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run(script, args, tmp_path, timeout)

    return call
