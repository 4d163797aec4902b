"""Issue 18's trainer-side classes (4: the trainer's reading of the worker, 5: values and text,
6: the contract, with the kernel holding when the audit hook is off) with the trainer running as
root and as a normal user; and the whole sandbox suite run as a normal user (slow).

The kernel classes (1-3) run under both identities in ``tests/test_code_sandbox.py``. A normal
user here is an unused uid with no passwd entry, made in the test: a root process becomes it in a
child (:func:`tests.test_code_sandbox.run_as`); run as a normal user, this process already is one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pytest

from rewards.code.contract import check_source
from rewards.code.sandbox import SHM_BYTES, Sandbox, SandboxError, SandboxLimits
from tests.test_code_sandbox import (
    ACT,
    ESCAPES,
    FRAME_OK,
    IDENTITIES,
    OBS,
    as_user,
    frame,
    free_uid,
    hostile,
    program,
    run_as,
)

QUICK = SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=1.0, memory_mb=512, audit=False)


def outcome(limits: SandboxLimits, source: str) -> dict[str, Any]:
    """Load ``source`` in a fresh sandbox and call it once: how it ended, how long the call took."""
    with Sandbox(limits) as sb:
        sb.load(source, "attack.py")
        t = time.monotonic()
        try:
            reward: Any = sb.call(OBS, ACT, OBS).reward.tolist()[:3]
            kind, text = None, ""
        except SandboxError as exc:
            reward, kind, text = None, exc.kind, str(exc)
        return {"kind": kind, "text": text, "s": time.monotonic() - t, "alive": sb.alive, "reward": reward}


# --- (4) the trainer trusts nothing the worker sends -----------------------------------------------------


def protocol_attacks() -> dict[str, Any]:
    """A taken-over worker forges a reply, cuts one short, floods its pipe, and stops reading."""
    nested = frame(None, head=b'{"ok": true, "outputs": ' + b"[" * 30000 + b"]" * 30000 + b"}")
    flood = "signal.signal(signal.SIGPROF, signal.SIG_IGN)\nwhile True:\n    posix.write(main['write_fd'], bytes(1 << 16))\n"
    stop = "main['shm'].reply([('reward', np.zeros(len(obs)))])\nmain['shm'].done(1)\nsignal.signal(signal.SIGPROF, signal.SIG_IGN)\ntime.sleep(60)\n"
    big = np.zeros((SHM_BYTES // 64 + 100, 8))  # too large for the shared memory: goes over the pipe
    with Sandbox(QUICK) as sb:  # answers its first call itself, then never reads its pipe again
        sb.load(hostile(stop), "staller.py")
        sb.call(OBS, ACT, OBS)
        t = time.monotonic()
        try:
            sb.call(big, np.zeros(len(big)), big)
            stopped: dict[str, Any] = {"kind": None}
        except SandboxError as exc:
            stopped = {"kind": exc.kind, "text": str(exc), "s": time.monotonic() - t, "alive": sb.alive}
    return {
        "nested": outcome(QUICK, hostile(f"posix.write(main['write_fd'], {nested!r})\nmain['shm'].done(2)\ntime.sleep(60)\n")),
        "cut short": outcome(QUICK, hostile(f"posix.write(main['write_fd'], {frame(FRAME_OK, bytes(64))[:-10]!r})\nmain['shm'].done(2)\ntime.sleep(60)\n")),
        "flood": outcome(QUICK, hostile(flood)),
        "stops reading": stopped,
    }  # fmt: skip


@pytest.mark.parametrize("identity", IDENTITIES)
def test_the_trainer_survives_a_hostile_worker(identity: str) -> None:
    out = run_as(identity, protocol_attacks)
    expect = {"nested": "protocol", "cut short": "wall", "flood": "protocol", "stops reading": "wall"}
    for name, kind in expect.items():
        r = out[name]
        assert r["kind"] == kind and not r["alive"] and r["s"] < 3, (name, r)  # one SandboxError, in time
    assert "it was stopped" in out["nested"]["text"] and "more data than a reply" in out["flood"]["text"]
    assert "stopped reading" in out["stops reading"]["text"]


# --- (5) values bounded, text cleaned; (6) the contract, and the kernel without the audit hook --------------


def value_text_and_contract_attacks(scratch: str) -> dict[str, Any]:
    """Out-of-range outputs, hostile text, private numpy modules, and a program that turns the audit
    hook off (and the worker's own checks) and then tries files and sockets."""
    from rewards.code.validate import Transitions, check_program

    target = os.path.join(scratch, "written_by_sandbox")
    escapes = program(f"raise ValueError('{ESCAPES}' + 'A' * 900_000)")
    printed = program(f"print('{ESCAPES}' * 50_000)\nos = np.__builtins__['__import__']('posix')\nos._exit(3)")
    private = "from numpy._core.multiarray import normalize_axis_index\n"
    rng = np.random.default_rng(0)
    sample = Transitions(rng.normal(size=(32, 4)), rng.integers(0, 2, 32), rng.normal(size=(32, 4)), np.zeros(32))
    takeover = program(f"""
    imp = np.__builtins__['__import__']
    builtins, posix, ctypes = imp('builtins'), imp('posix'), imp('ctypes')
    imp('sys').modules['__main__']._AUDIT_DENIED = ()  # the worker's audit hook now refuses nothing
    libc = ctypes.CDLL(None, use_errno=True)
    r = {{}}
    try:
        posix.open({target!r}, 65, 0o666)  # O_WRONLY | O_CREAT
        r['file'] = 'opened'
    except builtins.OSError as exc:
        r['file'] = exc.errno
    ctypes.set_errno(0)
    r['socket'] = [libc.socket(2, 1, 0), ctypes.get_errno()]
    raise ValueError('RESULT ' + builtins.repr(r))
    """)
    limits = SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=2.0, memory_mb=512)
    return {
        "huge component": outcome(limits, program("return obs[:, 0], {'big': np.zeros(len(obs)) + 1e308}")),
        "infinite reward": outcome(limits, program("return obs[:, 0] * np.inf")),
        "escape codes": outcome(limits, escapes),
        "printed escape codes": outcome(limits, printed),
        "check of escape codes": check_program(escapes, sample, limits).message,
        "contract": [str(p) for p in check_source(private + "def compute_reward(obs, action, next_obs):\n    return obs[:, 0]\n")],
        "import at run time": outcome(limits, program(private + "return obs[:, 0]")),
        "audit off": outcome(limits, takeover),
        "target written": os.path.exists(target),
    }  # fmt: skip


@pytest.mark.parametrize("identity", IDENTITIES)
def test_values_text_and_contract_hold(identity: str) -> None:
    scratch = tempfile.mkdtemp(prefix="rewardlab-test-")
    os.chmod(scratch, 0o777)  # a folder anyone may write to: only the sandbox keeps the program out
    try:
        out = run_as(identity, value_text_and_contract_attacks, scratch)
    finally:
        shutil.rmtree(scratch)
    huge, infinite = out["huge component"], out["infinite reward"]
    assert huge["kind"] == "output" and "component 'big' is out of range" in huge["text"], huge
    assert infinite["kind"] == "output" and "the reward is not finite" in infinite["text"], infinite
    for name in ("escape codes", "printed escape codes", "check of escape codes"):
        text = out[name] if isinstance(out[name], str) else out[name]["text"]
        assert "\\x1b[2K" in text and len(text) < 5000, (name, text[:300])  # shown, not obeyed; cut
        assert all(c.isprintable() or c in "\n\t" for c in text), (name, text[:300])
    assert any("imports from 'numpy._core.multiarray'" in p for p in out["contract"]), out["contract"]
    assert out["import at run time"]["kind"] == "call" and "only numpy" in out["import at run time"]["text"]
    assert "RESULT {'file': 1, 'socket': [-1, 1]}" in out["audit off"]["text"], out["audit off"]  # EPERM twice
    assert not out["target written"]


# --- every sandbox test, as a normal user ---------------------------------------------------------------


@pytest.mark.slow
def test_every_sandbox_test_passes_as_a_normal_user() -> None:
    """``tests/test_code_sandbox*.py`` (the default selection) in a pytest run as an unused uid."""
    if os.geteuid() != 0:
        pytest.skip("this run already is a normal user's: every sandbox test here ran as one")
    home = tempfile.mkdtemp(prefix="rewardlab-user-")  # its HOME and pytest's base temp, owned by it
    uid = free_uid()
    os.chown(home, uid, uid)
    files = ["tests/test_code_sandbox.py", "tests/test_code_sandbox_user.py"]
    code = "import sys, pytest\nsys.exit(pytest.main(sys.argv[1:]))"
    args = ["-q", "-rfEs", "-n", "0", "-p", "no:cacheprovider", "-m", "not slow", f"--basetemp={home}/pytest", *files]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XDG_"))}
    env |= {"HOME": home, "USER": f"uid{uid}", "LOGNAME": f"uid{uid}", "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = as_user(code, *args, uid=uid, timeout=900, env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode == 77:
        pytest.skip(f"cannot run as a normal user here: {proc.stdout.strip()}")
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert proc.returncode == 0 and " passed" in proc.stdout, "\n".join(failed) or (proc.stdout + proc.stderr)[-4000:]
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("needs root" in line for line in skips), skips  # only the trainer-as-root cases
    print(proc.stdout.strip().splitlines()[-1], file=sys.stderr)
