"""Shared fixtures: headless rendering, one torch thread, a runner for the CLI entry points."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``heavy`` run first (the others keep their order): with ``-n 2`` the short tests
    then fill in at the end, so both workers finish together instead of one waiting on a long test."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


class _Zygote:
    """The client of ``tests/zygote.py``: one warm interpreter per pytest worker (started on first use)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "zygote.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            assert json.loads(self._read(120)) == {"ready": True}
        return self.proc

    def _read(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/zygote.py exited with code {self.proc.wait()}")
        return line

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        proc = self._start()
        assert proc.stdin is not None
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"script": argv[1], "args": argv[2:], "cwd": str(cwd), "env": env}
            proc.stdin.write(json.dumps({**request, "stdout": str(out), "stderr": str(err)}) + "\n")
            proc.stdin.flush()
            pid = json.loads(self._read(60))["pid"]
            try:
                returncode = json.loads(self._read(timeout))["returncode"]
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                json.loads(self._read(60))
                raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(argv, returncode, out.read_text(), err.read_text())

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


_ZYGOTE = _Zygote()
atexit.register(_ZYGOTE.close)


def _run(
    script: str, args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python experiments/<script> *args`` in ``cwd``: a child forked from a warm interpreter
    (``tests/zygote.py``), or a fresh interpreter with ``REWARDLAB_TEST_FRESH_PROCESS=1``."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    env.pop("REWARDLAB_TRACEBACK", None)
    argv = [sys.executable, str(REPO / "experiments" / script), *args]
    if os.environ.get("REWARDLAB_TEST_FRESH_PROCESS") != "1":
        return _ZYGOTE.run(argv, cwd, env, timeout)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli("run.py", [...])`` runs an entry point in its own process with ``cwd=tmp_path`` (see :func:`_run`)."""

    def call(script: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run(script, args, tmp_path, timeout)

    return call
