"""The tests' warm interpreter (tests/zygote.py): a forked call must look like a fresh ``python script``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import _ZYGOTE

SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys, threading, time

    mode = sys.argv[1]
    print("cwd", os.getcwd(), "argv", sys.argv[1:], "env", os.environ.get("ZYGOTE_PROBE"), "torch" in sys.modules)
    print("to stderr", file=sys.stderr)
    atexit.register(lambda: print("atexit ran"))
    def late():
        time.sleep(0.3)
        print("thread joined")
    threading.Thread(target=late).start()
    if mode == "raise":
        raise ValueError("boom")
    if mode == "exit":
        sys.exit(3)
    if mode == "message":
        sys.exit("a message")
    if mode == "sleep":
        time.sleep(60)
    """
)


def _both(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, ZYGOTE_PROBE="yes")
    argv = [sys.executable, str(script), mode]
    forked = _ZYGOTE.run(argv, tmp_path, env, timeout=60)
    fresh = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    return forked, fresh


@pytest.mark.parametrize("mode,code", [("ok", 0), ("exit", 3), ("message", 1), ("raise", 1)])
def test_a_forked_call_gives_what_a_fresh_interpreter_gives(tmp_path: Path, mode: str, code: int) -> None:
    forked, fresh = _both(tmp_path, mode)
    assert forked.returncode == fresh.returncode == code, (forked.stderr, fresh.stderr)
    # torch is imported in the zygote only; everything else is the same
    assert forked.stdout == fresh.stdout.replace(" False\n", " True\n", 1)
    assert f"cwd {tmp_path} argv ['{mode}'] env yes" in forked.stdout
    assert forked.stdout.rstrip().endswith("thread joined\natexit ran")
    if mode == "raise":
        assert "Traceback" in forked.stderr and forked.stderr.strip().endswith("ValueError: boom")
    else:
        assert forked.stderr == fresh.stderr


def test_a_call_past_its_timeout_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    with pytest.raises(subprocess.TimeoutExpired):
        _ZYGOTE.run([sys.executable, str(script), "sleep"], tmp_path, dict(os.environ), timeout=1.0)
    after = _ZYGOTE.run([sys.executable, str(script), "ok"], tmp_path, dict(os.environ), timeout=60)
    assert after.returncode == 0  # the zygote serves the next call
