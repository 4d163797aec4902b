"""The reward-code sandbox, the contract checks and the validation: hostile programs are refused or
contained with a clear message, the trainer survives, nothing outside the sandbox changes.

The attack classes of issue 18 each have a section below: hostile programs that take their worker
over (the audit hook off, ``ctypes`` and raw system calls, frames walked into the worker's
variables) against (1) the seccomp allow-list, (2) the namespaces, (3) the tie to the trainer's
life and the lifetime CPU limit, (4) the trainer's reading of the worker, (5) values and text,
(6) the static contract. The kernel classes run twice: with the trainer as root (the worker
becomes nobody) and as a normal user (an unused uid; as root the test drops to it in a child).
Layers are also switched off one at a time (``Sandbox(layers_off=...)``) to show each holds alone.
``tests/test_code_sandbox_user.py`` runs classes 4-6 under both identities too, and (``slow``) this
whole file as a normal user.
"""

from __future__ import annotations

import ast
import ctypes
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typing_extensions import override

from rewards.code.contract import check_source, clean_text
from rewards.code.sandbox import SHM_BYTES, Sandbox, SandboxError, SandboxLimits
from rewards.code.validate import Transitions, check_program

REPO = Path(__file__).resolve().parents[1]

GOOD = """
import numpy as np
def compute_reward(obs, action, next_obs):
    upright = 1.0 - np.abs(next_obs[:, 2])
    return upright, {"upright": upright, "action": action.astype(float)}
"""
OBS = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
ACT = np.arange(8) % 2
FAST = SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=2.0, memory_mb=512)


def program(body: str) -> str:
    """A compute_reward whose body is ``body`` (indented), numpy imported as np."""
    return "import numpy as np\ndef compute_reward(obs, action, next_obs):\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )


def run_program(source: str, limits: SandboxLimits = FAST) -> SandboxError | np.ndarray:
    with Sandbox(limits) as sb:
        try:
            sb.load(source, "hostile.py")
            return sb.call(OBS, ACT, OBS).reward
        except SandboxError as exc:
            return exc


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    sb = Sandbox(FAST)
    yield sb
    sb.close()


def test_good_program_matches_in_process_computation(sandbox: Sandbox) -> None:
    sandbox.load(GOOD, "good.py")
    out = sandbox.call(OBS, ACT, OBS)
    np.testing.assert_allclose(out.reward, 1.0 - np.abs(OBS[:, 2].astype(np.float64)), rtol=1e-6)
    np.testing.assert_array_equal(out.components["action"], ACT)
    assert set(out.components) == {"upright", "action"}
    assert "rlimits" in sandbox.layers


def test_batches_through_shared_memory_and_pipe_agree_across_layouts_and_sleeps() -> None:
    """Shared memory (small batches), the pipe (a batch larger than SHM_BYTES), changing batch sizes
    and component names, and a worker woken from sleep all give the in-process answer."""
    renamed = GOOD.replace('"upright": upright', '"tilt": upright')
    rng = np.random.default_rng(1)
    big = int(SHM_BYTES // (2 * 4 * 64)) + 1000  # obs + next_obs of (big, 64) float32 exceed the block
    with Sandbox(SandboxLimits(spin_s=0.0005)) as sb:
        sb.load(GOOD, "good.py")
        for n, width, pause in [(8, 4, 0), (3, 4, 0), (8, 4, 0.01), (big, 64, 0), (8, 4, 0), (8, 4, 0.01)]:
            obs = rng.normal(size=(n, width)).astype(np.float32)
            act = rng.integers(0, 2, n)
            time.sleep(pause)  # past spin_s: the worker sleeps and must be woken
            out = sb.call(obs, act, obs)
            np.testing.assert_allclose(out.reward, 1.0 - np.abs(obs[:, 2].astype(np.float64)), rtol=1e-6)
            np.testing.assert_array_equal(out.components["action"], act)
        sb.load(renamed, "renamed.py")
        out = sb.call(OBS, ACT, OBS)
        assert set(out.components) == {"tilt", "action"}
        assert sb.calls == 7


def test_strided_inputs_and_outputs_of_every_dtype_cross_shared_memory_exactly() -> None:
    """Both sides copy C-contiguous arrays as bytes and fall back to numpy for strided views: the
    values must be the in-process ones either way (strided float64 inputs and outputs, float32, bool
    and integer outputs, a scalar broadcast, and contiguous batches again after the strided ones)."""
    body = "return next_obs[:, 0], {'f32': obs[:, 1].astype(np.float32), 'mask': obs[:, 2] > 0, 'act': action, 'one': 1.0}"
    rng = np.random.default_rng(3)
    with Sandbox(FAST) as sb:
        sb.load(program(body), "strided.py")
        for strided in (True, False, True):
            wide = rng.normal(size=(8, 8))
            obs = wide[:, ::2] if strided else np.ascontiguousarray(wide[:, ::2])
            act = rng.integers(0, 5, (8, 2))[:, 1]
            act = act if strided else act.copy()
            assert obs.flags.c_contiguous is not strided and act.flags.c_contiguous is not strided
            out = sb.call(obs, act, obs[::-1])
            np.testing.assert_array_equal(out.reward, obs[::-1, 0])
            np.testing.assert_array_equal(out.components["f32"], obs[:, 1].astype(np.float32))
            np.testing.assert_array_equal(out.components["mask"], obs[:, 2] > 0)
            np.testing.assert_array_equal(out.components["act"], act)
            np.testing.assert_array_equal(out.components["one"], np.ones(8))


def test_kernel_layers_are_in_force_on_linux_x86_64(sandbox: Sandbox) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the seccomp layer is x86_64 only")
    assert "seccomp" in sandbox.layers


def test_worker_environment_is_empty(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    # the trainer's secrets never reach the worker: read its environment through numpy's builtins
    sandbox.load(
        program("""
        env = np.__builtins__["__import__"]("posix").environ
        return np.full(len(obs), float(len(env) + 1000 * any(b"SECRET" in k for k in env)))
        """),
        "env.py",
    )
    reward = sandbox.call(OBS, ACT, OBS).reward
    assert reward[0] < 10  # only the thread-count variables, no SECRET_* (set in the test below)


def test_secret_in_trainer_env_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_API_KEY", "sk-do-not-leak")
    out = run_program(
        program("""
        env = np.__builtins__["__import__"]("posix").environ
        return np.full(len(obs), float(any(b"SECRET" in k for k in env)))
        """)
    )
    assert isinstance(out, np.ndarray) and out[0] == 0.0


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("return open('/etc/passwd').read()", "NameError"),
        ("np.save('escape.npy', obs)\nreturn obs[:, 0]", "may not use open"),
        ("f = np.__builtins__['open']\nreturn f('/etc/hostname').read()", "may not use open"),
        ("s = np.__builtins__['__import__']('socket')\nreturn obs[:, 0]", "socket"),
        ("os = np.__builtins__['__import__']('posix')\nos.fork()\nreturn obs[:, 0]", "os.fork"),
        ("os = np.__builtins__['__import__']('posix')\nos.kill(os.getppid(), 9)", "os.kill"),
        ("while True:\n    pass", "CPU time"),
        ("x = np.ones((1 << 40,))\nreturn obs[:, 0]", "MemoryError"),
        ("return obs[:, 0] * np.nan", "not finite"),
        ("return obs", "shape (8, 4)"),
        ("return 'high'", "not numeric"),
        ("raise ValueError('boom')", "line 3: raise ValueError('boom')"),
    ],
)
def test_hostile_or_broken_programs_are_contained(body: str, expect: str, tmp_path: Path) -> None:
    out = run_program(program(body))
    assert isinstance(out, SandboxError), f"expected an error, got {out!r}"
    assert expect in str(out)
    assert not (tmp_path / "escape.npy").exists()


def test_kernel_layers_hold_without_the_audit_hook(tmp_path: Path) -> None:
    """Switch the Python audit hook off: seccomp, the namespace and the rlimits must still refuse."""
    if os.uname().machine != "x86_64":
        pytest.skip("the seccomp layer is x86_64 only")
    limits = SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=2.0, memory_mb=512, audit=False)
    target = tmp_path / "written_by_sandbox"
    os.chmod(tmp_path, 0o777)  # even a directory anyone may write to stays untouched
    cases = {
        "read": "posix.open('/etc/hostname', 0)",
        "write": f"posix.open({str(target)!r}, 65, 0o666)",  # O_WRONLY | O_CREAT
        "socket": "np.__builtins__['__import__']('ctypes').CDLL(None).socket(2, 1, 0) == -1 and 1/0",
        "fork": "posix.fork()",
        "exec": "posix.execv('/bin/sh', ['sh', '-c', 'true'])",
        "listdir": "posix.listdir('/')",
    }
    for name, stmt in cases.items():
        out = run_program(program(f"posix = np.__builtins__['__import__']('posix')\n{stmt}\nreturn obs[:, 0]"), limits)
        assert isinstance(out, SandboxError), f"{name}: not refused"
        assert "Operation not permitted" in str(out) or "ZeroDivisionError" in str(out), f"{name}: {out}"
    assert not target.exists()


def test_c_level_hang_is_killed_by_the_wall_clock_and_the_next_call_restarts() -> None:
    limits = SandboxLimits(cpu_s_per_call=30.0, wall_s_per_call=1.0, memory_mb=1024)
    slow = program("a = np.ones((3000, 3000))\nfor _ in range(200):\n    a = a @ a\nreturn obs[:, 0]")
    with Sandbox(limits) as sb:
        sb.load(slow, "slow.py")
        t = time.monotonic()
        with pytest.raises(SandboxError, match="wall time") as info:
            sb.call(OBS, ACT, OBS)
        assert info.value.kind == "wall" and time.monotonic() - t < 3.0
        assert not sb.alive
        sb.load(GOOD, "good.py")  # a fresh worker takes over
        assert sb.call(OBS, ACT, OBS).reward.shape == (8,)


def test_patching_numpy_stays_in_the_worker() -> None:
    patched = program("np.__dict__['abs'] = lambda x: x * 0\nreturn np.abs(obs[:, 0]) + 7.0")
    out = run_program(patched)
    assert isinstance(out, np.ndarray) and np.all(out == 7.0)
    assert np.abs(-1.0) == 1.0  # the trainer's numpy is untouched
    assert check_source("import numpy as np\nnp.abs = None\ndef compute_reward(o, a, n):\n    return o[:, 0]")


def test_worker_crash_is_reported_with_its_log() -> None:
    out = run_program(program("print('about to die')\nos = np.__builtins__['__import__']('posix')\nos._exit(3)"))
    assert isinstance(out, SandboxError) and out.kind == "crash"
    assert "exit code 3" in str(out) and "about to die" in str(out)


@pytest.mark.parametrize(
    ("source", "expect"),
    [
        ("import os\ndef compute_reward(o, a, n):\n    return o[:, 0]", "line 1: imports 'os'"),
        ("from subprocess import run\ndef compute_reward(o, a, n):\n    return o[:, 0]", "imports from 'subprocess'"),
        ("def compute_reward(o, a, n):\n    return eval('1')", "line 2: uses 'eval'"),
        ("def compute_reward(o, a, n):\n    return o.__class__", "dunder"),
        ("import numpy as np\nnp.sum = max\ndef compute_reward(o, a, n):\n    return o[:, 0]", "patching"),
        ("def reward(o, a, n):\n    return o[:, 0]", "no top-level function compute_reward"),
        ("def compute_reward(obs):\n    return obs[:, 0]", "must take (obs, action, next_obs)"),
        ("def compute_reward(o, a, n)\n    return 1", "line 1: syntax error"),
        ("print('hi')\ndef compute_reward(o, a, n):\n    return o[:, 0]", "top-level expr statement"),
    ],
)
def test_contract_violations_name_the_line(source: str, expect: str) -> None:
    problems = check_source(source)
    assert any(expect in str(p) for p in problems), problems


def test_contract_accepts_helpers_constants_and_docstrings() -> None:
    source = '"""doc"""\nimport math\nimport numpy as np\nSCALE = 2.0\ndef helper(x):\n    return x * SCALE\n'
    source += "def compute_reward(obs, action, next_obs):\n    r = helper(next_obs[:, 0]) + math.pi\n    return r, {}\n"
    assert check_source(source) == []


def _sample() -> Transitions:
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(100, 4))
    next_obs = obs + 0.1
    return Transitions(obs, rng.integers(0, 2, 100), next_obs, env_reward=next_obs[:, 0] * 2.0)


def test_check_program_reports_stage_and_correlation() -> None:
    sample = _sample()
    ok = check_program("def compute_reward(o, a, n):\n    return n[:, 0], {'x': n[:, 0]}", sample, FAST)
    assert ok.ok and ok.stage == "passed" and ok.components == ["x"]
    assert ok.pearson_true == pytest.approx(1.0)
    static = check_program("import os\ndef compute_reward(o, a, n):\n    return o[:, 0]", sample, FAST)
    assert (static.ok, static.stage, static.line) == (False, "static", 1)
    load = check_program("X = 1 / 0\ndef compute_reward(o, a, n):\n    return o[:, 0]", sample, FAST)
    assert load.stage == "load" and "ZeroDivisionError" in load.message and load.line == 1
    rand = "import numpy as np\nR = np.random.default_rng()\ndef compute_reward(o, a, n):\n    return R.normal(size=len(o))"
    nondet = check_program(rand, sample, FAST)
    assert nondet.stage == "smoke" and "not deterministic" in nondet.message


# --- hostile programs that take their worker over ---------------------------------------------------
# The audit hook is off and the contract is not applied: these programs reach ctypes, raw system
# calls and the worker's own frames, as one that slipped past both would. What holds is the kernel.

HOSTILE = SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=2.0, memory_mb=512, audit=False)
PRELUDE = """
import numpy as np
def compute_reward(obs, action, next_obs):
    imp = np.__builtins__["__import__"]
    ctypes, posix, sys, signal, time = (imp(m) for m in ("ctypes", "posix", "sys", "signal", "time"))
    builtins = imp("builtins")  # the real ones: repr, bytes, OSError, ...
    repr, bytes, OSError = builtins.repr, builtins.bytes, builtins.OSError
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf, mask = ctypes.create_string_buffer(512), ctypes.create_string_buffer(b"\\xff" * 8)
    def sc(nr, *args):  # a raw system call: (result, errno)
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
        return r, ctypes.get_errno()
    main = sys._getframe(2).f_locals  # the worker's main(): its shared memory, its pipe to the trainer
"""
EPERM, ESRCH, ENOENT = 1, 3, 2
# the worker's allow-list, written out here so that adding a system call to it is a reviewed change
ALLOWED = {0, 1, 3, 7, 9, 10, 11, 12, 13, 14, 15, 19, 20, 23, 24, 25, 28, 35, 39, 60, 96, 110, 131, 186}
ALLOWED |= {201, 202, 219, 228, 229, 230, 231, 270, 271, 318}
UNSAFE_WITH_ZEROS = {34, 56, 57, 58, 60, 130, 231}  # pause, clone, fork, vfork, exit, rt_sigsuspend, exit_group
# uretprobe and uprobe: the kernel lets them past seccomp by design; outside a probe they only fail
# (uprobe) or kill the caller itself (uretprobe: SIGILL)
PAST_SECCOMP = {335, 336}


def hostile(body: str) -> str:
    """A compute_reward that runs ``body`` after PRELUDE (``sc``: raw system calls, ``main``: the worker's frame)."""
    return PRELUDE + textwrap.indent(textwrap.dedent(body), "    ")


def report(result: str) -> str:
    """Program text that hands ``result`` (a Python literal expression) back through its error message."""
    return f"raise ValueError('RESULT ' + repr({result}))\n"


def attack(sb: Sandbox, body: str) -> Any:
    """Load a hostile program, call it once: what it reported, or how it ended ({"error", "kind"})."""
    try:
        sb.load(hostile(body), "hostile.py")
        return {"returned": sb.call(OBS, ACT, OBS).reward.tolist()}
    except SandboxError as exc:
        found = re.search(r"RESULT (.*) \(line \d+: ", str(exc), re.S)
        return ast.literal_eval(found[1]) if found else {"error": str(exc), "kind": exc.kind}


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    kids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                kids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            pass
    return kids


# --- the trainer as root and as a normal user ---------------------------------------------------------

# A root process becomes an unused uid in a child. The interpreter may live under a directory only
# root may enter (/root/.pyenv here): in a private mount namespace of that child only, a tmpfs
# with mode 755 covers that directory and the interpreter's prefix is bound back into it.
AS_USER = r"""
import ctypes, os, sys, tempfile
uid, code = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
def need(ok, what):
    if not ok:
        print(f"SKIP cannot {what}: {os.strerror(ctypes.get_errno())}", flush=True)
        sys.exit(77)
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
need(libc.unshare(0x00020000) == 0, "make a mount namespace")
need(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0, "make mounts private")
prefix = os.path.realpath(sys.base_prefix)
parts = prefix.split("/")
closed = [p for p in ("/".join(parts[:i]) for i in range(2, len(parts) + 1)) if not os.stat(p).st_mode & 0o001]
if closed:
    keep = tempfile.mkdtemp()
    need(libc.mount(prefix.encode(), keep.encode(), None, MS_BIND | MS_REC, None) == 0, "bind the interpreter")
    need(libc.mount(b"tmpfs", closed[0].encode(), b"tmpfs", 0, b"mode=755") == 0, f"open {closed[0]}")
    os.makedirs(prefix, exist_ok=True)
    need(libc.mount(keep.encode(), prefix.encode(), None, MS_BIND | MS_REC, None) == 0, "bind it back")
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
os.execv(sys.executable, [sys.executable, "-c", code, *sys.argv[3:]])
"""


def free_uid() -> int:
    """An unused uid (no passwd entry) for the normal-user runs."""
    import pwd

    for uid in range(61234, 62000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise RuntimeError("no free uid in 61234..61999")


def as_user(
    code: str, *args: str, uid: int | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code *args`` as ``uid`` (default: an unused one; this process must be root), from the repository."""
    return subprocess.run(
        [sys.executable, "-c", AS_USER, str(free_uid() if uid is None else uid), code, *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def run_as(identity: str, helper: Callable[..., Any], *args: Any) -> Any:
    """``helper(*args)`` (a module-level function of a test module) in a trainer running as ``identity``
    ("root" or "user"); its result goes through JSON."""
    root = os.geteuid() == 0
    if identity == "root" and not root:
        pytest.skip("the trainer-as-root case needs root (the worker then becomes nobody)")
    if identity == "root" or not root:  # this process already is that trainer
        return json.loads(json.dumps(helper(*args)))
    code = (
        f"import json, sys\nfrom {helper.__module__} import {helper.__name__} as helper\n"
        f"print('RESULT', json.dumps(helper(*json.loads(sys.argv[1]))), flush=True)"
    )
    proc = as_user(code, json.dumps(args))
    if proc.returncode == 77:
        pytest.skip(f"cannot run as a normal user here: {proc.stdout.strip()}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"the normal-user run failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


IDENTITIES = ["root", "user"]


# --- (1) system calls: an allow-list ---------------------------------------------------------------


def syscall_sweep() -> dict[str, Any]:
    """From a taken-over worker: every x86_64 system call number below 1024 off the allow-list (today's
    calls end at 471: the rest stands for calls later kernels add), with zero arguments; and which
    descriptors it holds (``poll``, an allowed call, marks the others POLLNVAL)."""
    import resource

    from rewards.code._worker import ALLOWED_SYSCALLS_X86_64

    skip = sorted(set(ALLOWED_SYSCALLS_X86_64.values()) | UNSAFE_WITH_ZEROS | PAST_SECCOMP)
    nfds = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 4096)  # the worker's limit too (inherited)
    body = f"""
    bad = []
    for nr in range(1024):
        if nr not in {skip}:
            r, e = sc(nr, 0, 0, 0, 0, 0, 0)
            if (r, e) != (-1, 1):
                bad.append((nr, r, e))
    polled = (ctypes.c_int32 * (2 * {nfds}))()  # struct pollfd: int fd; short events, revents
    for fd in range({nfds}):
        polled[2 * fd] = fd
    r, e = sc(7, polled, {nfds}, 0)
    held = [fd for fd in range({nfds}) if not (polled[2 * fd + 1] >> 16) & 0x20]  # not POLLNVAL
    pipes = sorted([main['read_fd'], main['write_fd']])
    """
    with Sandbox(HOSTILE) as sb:
        swept = attack(sb, body + report("{'bad': bad, 'poll': (r, e), 'held': held, 'pipes': pipes}"))
        x32 = attack(sb, "sc(0x40000000 | 39)\n" + report("'survived'"))  # getpid through the x32 ABI
        return {"layers": sb.layers, "swept": swept, "x32": x32, "allowed": sorted(ALLOWED_SYSCALLS_X86_64.values())}


@pytest.mark.parametrize("identity", IDENTITIES)
def test_syscalls_off_the_allow_list_fail_with_eperm(identity: str) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the seccomp layer is x86_64 only")
    out = run_as(identity, syscall_sweep)
    assert "seccomp" in out["layers"]
    assert set(out["allowed"]) == ALLOWED, "the allow-list changed: review each added call, then update ALLOWED"
    swept = out["swept"]
    assert swept.get("bad") == [], f"system calls that reached the kernel: {swept}"
    assert swept["poll"][0] >= 0, swept  # descriptors: only stdin (/dev/null), the log twice, its two pipes
    assert swept["held"] == [0, 1, 2, *swept["pipes"]], f"descriptors the worker holds: {swept}"
    assert out["x32"]["kind"] == "crash" and "SIGSYS" in out["x32"]["error"], out["x32"]


def syscall_effects(layers_off: list[str]) -> dict[str, Any]:
    """The calls that reached the kernel under the old deny-list, aimed at real targets; what came of them."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="rewardlab-test-"))
    folder.chmod(0o755)
    target = folder / "theirs.txt"
    target.write_text("not yours")
    target.chmod(0o644)
    if os.geteuid() == 0:
        os.chown(target, 65534, 65534)  # the worker's user: without the filter, it could chmod this
    path = repr(str(target).encode())
    body = f"""
    r = {{}}
    r["fchmodat2"] = sc(452, -100, {path}, 0o777, 0)
    r["chmod"] = sc(90, {path}, 0o777)
    r["setxattr"] = sc(188, {path}, b"user.rewardlab", b"x", 1, 0)
    r["fallocate"] = sc(285, 1, 0, 0, 32 << 20)  # its log, past RLIMIT_FSIZE
    r["statfs"] = sc(137, b"/", buf)
    r["shmget"] = sc(29, 0, 1 << 20, 0o1600)
    r["msgget"] = sc(68, 0, 0o1600)
    r["semget"] = sc(64, 0, 1, 0o1600)
    r["mq_open"] = sc(240, b"rewardlab", 0o102, 0o600, None)
    r["prlimit64"] = sc(302, 0, 0, None, buf)
    r["setpriority"] = sc(141, 0, 0, 19)
    r["sched_setscheduler"] = sc(144, 0, 5, buf)
    r["sched_setaffinity"] = sc(203, 0, 8, mask)
    r["ioprio_set"] = sc(251, 1, 0, 3 << 13)
    r["timer_create"] = sc(222, 1, None, buf)
    r["inotify_init1"] = sc(294, 0)
    r["rt_sigqueueinfo"] = sc(129, posix.getpid(), 0, buf)
    r["rt_tgsigqueueinfo"] = sc(297, posix.getpid(), posix.getpid(), 0, buf)
    r["kill"] = sc(62, posix.getpid(), 0)
    r["listmount"] = sc(458, buf, buf, 0, 0)
    r["memfd_create"] = sc(319, b"x", 0)
    r["io_uring_setup"] = sc(425, 1, buf)
    for call, remove in (("shmget", 31), ("msgget", 71), ("semget", 66)):  # should the filter fail: leave nothing
        if r[call][0] >= 0:
            sc(remove, r[call][0], 0, 0)  # shmctl / msgctl / semctl (..., IPC_RMID)
    if r["mq_open"][0] >= 0:
        sc(241, b"rewardlab")  # mq_unlink
    """
    try:
        with Sandbox(HOSTILE, layers_off=tuple(layers_off)) as sb:
            calls = attack(sb, body + report("r"))
            log_bytes = sb.log_path.stat().st_size
            layers = sb.layers
        return {
            "layers": layers,
            "calls": calls,
            "log_bytes": log_bytes,
            "mode": oct(target.stat().st_mode & 0o777),
            "xattrs": os.listxattr(target),
        }
    finally:
        target.unlink()
        folder.rmdir()


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize("layers_off", [[], ["namespaces"]], ids=["all-layers", "seccomp-alone"])
def test_calls_that_escaped_the_deny_list_are_refused_and_change_nothing(identity: str, layers_off: list[str]) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the seccomp layer is x86_64 only")
    out = run_as(identity, syscall_effects, layers_off)
    assert "seccomp" in out["layers"] and ("pidns" in out["layers"]) == (not layers_off)
    refused = {name: tuple(result) == (-1, EPERM) for name, result in out["calls"].items()}
    assert all(refused.values()), f"reached the kernel: {out['calls']}"
    assert out["mode"] == "0o644" and out["xattrs"] == [] and out["log_bytes"] < 1 << 20, out


# --- (2) namespaces: no other process, no shared IPC, no network ----------------------------------------


def namespace_attacks(layers_off: list[str]) -> dict[str, Any]:
    """With the filter off (the namespaces alone): reach the trainer, another run's worker, the user's
    processes, the trainer's IPC objects, the network."""
    libc = ctypes.CDLL(None, use_errno=True)
    key, size = 0x52657764, 1234567  # the trainer's message queue and segment; a SysV segment size to look for
    queue = libc.msgget(key, 0o1666)  # IPC_CREAT | 0666: anyone in this IPC namespace may use them
    segment = libc.shmget(key, 4096, 0o1666)
    other = Sandbox(HOSTILE, layers_off=tuple(layers_off))  # another run's worker (the same user: nobody, or yours)
    assert other._proc is not None
    others = [other._proc.pid, *children(other._proc.pid)]  # its keeper and its worker
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    address = b"\x02\x00" + listener.getsockname()[1].to_bytes(2, "big") + bytes([127, 0, 0, 1]) + bytes(8)
    body = f"""
    r = {{"pid": posix.getpid(), "ppid": posix.getppid()}}
    r["kill_trainer"] = sc(62, {os.getpid()}, 0)
    r["prlimit_trainer"] = sc(302, {os.getpid()}, 0, None, buf)
    r["setpriority_trainer"] = sc(141, 0, {os.getpid()}, 19)
    r["kill_everyone"] = sc(62, -1, 0)
    r["setpriority_my_user"] = sc(141, 2, 0, 19)
    r["kill_other_run"] = [sc(62, pid, 0) for pid in {others}]
    r["trainer_queue"] = sc(68, {key}, 0)
    r["trainer_segment"] = sc(29, {key}, 0, 0)
    r["segment_left_behind"] = sc(29, 0, {size}, 0o1600)
    fd, _ = sc(41, 2, 1, 0)  # socket(AF_INET, SOCK_STREAM): the filter is off
    r["connect"] = sc(42, fd, {address!r}, 16)  # to the trainer's listening socket on 127.0.0.1
    """
    try:
        with Sandbox(HOSTILE, layers_off=tuple(layers_off)) as sb:
            out = attack(sb, body + report("r"))
            layers = sb.layers
        segments = Path("/proc/sysvipc/shm").read_text().split("\n")[1:]
        left = [line.split()[1] for line in segments if line.split()[3:4] == [str(size)]]
        for shmid in left:  # clean up after a failing run
            libc.shmctl(int(shmid), 0, None)
        return {"layers": layers, "worker": out, "left": left, "nice": os.getpriority(os.PRIO_PROCESS, 0) - nice}
    finally:
        libc.msgctl(queue, 0, None)  # IPC_RMID
        libc.shmctl(segment, 0, None)
        listener.close()
        other.close()


@pytest.mark.parametrize("identity", IDENTITIES)
def test_namespaces_alone_hide_every_other_process_ipc_object_and_network(identity: str) -> None:
    out = run_as(identity, namespace_attacks, ["seccomp"])
    assert {"pidns", "ipcns", "netns"} <= set(out["layers"]) and "seccomp" not in out["layers"]
    w = out["worker"]
    assert (w["pid"], w["ppid"]) == (1, 0), w  # PID 1 of its own namespace; its parent is outside
    for call in ("kill_trainer", "prlimit_trainer", "setpriority_trainer", "kill_everyone"):
        assert tuple(w[call]) == (-1, ESRCH), (call, w)  # no such process, as far as it can see
    assert len(w["kill_other_run"]) == 2 and all(tuple(x) == (-1, ESRCH) for x in w["kill_other_run"]), w
    assert out["nice"] == 0  # setpriority(PRIO_USER) reached only itself
    for call in ("trainer_queue", "trainer_segment"):
        assert tuple(w[call]) == (-1, ENOENT), (call, w)  # its own IPC namespace
    assert w["segment_left_behind"][0] >= 0 and out["left"] == []  # made, and gone with the worker
    assert w["connect"][0] == -1, w  # its own network namespace, without the trainer's loopback


# --- (3) the worker dies with the trainer; its lifetime CPU is bounded -------------------------------------

TRAINER = """
import json, sys
from rewards.code.sandbox import Sandbox, SandboxLimits
sb = Sandbox(SandboxLimits(cpu_s_per_call=1.0, wall_s_per_call=300.0, audit=False))
sb.load(sys.argv[1], "orphan.py")
print(json.dumps({"keeper": sb._proc.pid}), flush=True)
sb.call(*[__import__("numpy").ones((4, 2))] * 3)  # never returns: the program sleeps
"""


def orphans() -> dict[str, Any]:
    """Kill a trainer (SIGKILL) while its worker runs a call that ignores everything; which processes remain."""
    program = hostile("signal.signal(signal.SIGPROF, signal.SIG_IGN)\ntime.sleep(3600)\n")
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, program], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        keeper = json.loads(trainer.stdout.readline())["keeper"]  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while not (workers := children(keeper)) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the call is in flight
    finally:
        trainer.kill()
        trainer.wait()
    deadline = time.monotonic() + 5
    while any(running(pid) for pid in (keeper, *workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in (keeper, *workers) if running(pid)]
    for pid in left:  # clean up after a failing run
        os.kill(pid, signal.SIGKILL)
    return {"workers": workers, "left": left}


@pytest.mark.parametrize("identity", IDENTITIES)
def test_the_worker_dies_with_a_killed_trainer(identity: str) -> None:
    out = run_as(identity, orphans)
    assert out["workers"], "the worker process was not found"
    assert out["left"] == [], f"outlived the trainer: {out}"


def test_a_worker_that_ignores_the_exit_message_is_killed_by_close() -> None:
    """The program replaces the worker's message loop with one that never reads: close() still ends
    the worker (and its keeper) within its deadlines."""
    body = """
    def deaf(self, shm):  # the worker's _Reader.wait, from now on
        while True:
            time.sleep(3600)
    sys.modules['__main__']._Reader.wait = deaf
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
    return np.zeros(len(obs))
    """
    sb, pids = Sandbox(HOSTILE), []
    try:
        sb.load(hostile(body), "deaf.py")
        assert np.all(sb.call(OBS, ACT, OBS).reward == 0.0)
        assert sb._proc is not None
        pids = [sb._proc.pid, *children(sb._proc.pid)]
        t = time.monotonic()
        in_time(sb.close, 10, sb)
        assert time.monotonic() - t < 3
        while any(running(pid) for pid in pids) and time.monotonic() - t < 5:  # SIGKILL takes effect
            time.sleep(0.02)
        assert len(pids) == 2 and not any(running(pid) for pid in pids), pids
    finally:
        sb.close()
        for pid in pids:  # clean up after a failing run
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_runs_give_the_worker_a_lifetime_cpu_limit_of_minutes() -> None:
    """``reward=code`` runs use ``experiments/conf/reward/code.yaml``'s limits: the sandbox's defaults,
    whose lifetime CPU limit (replace the worker, then the kernel's kill) is minutes, not days."""
    from omegaconf import OmegaConf

    from rewards.code.provider import sandbox_limits

    limits = sandbox_limits(OmegaConf.to_container(OmegaConf.load(REPO / "experiments/conf/reward/code.yaml").limits))
    assert SandboxLimits().lifetime_cpu_s <= 3600
    assert limits == SandboxLimits(), f"experiments/conf/reward/code.yaml: {limits} (defaults: {SandboxLimits()})"


def test_a_worker_past_its_lifetime_cpu_is_replaced_between_calls() -> None:
    burn = program("s = 0\nfor i in range(10_000_000):\n    s += i\nreturn obs[:, 0] * 0 + 1.0")  # ~0.3 s CPU
    with Sandbox(SandboxLimits(lifetime_cpu_s=1, cpu_s_per_call=2.0, wall_s_per_call=10.0)) as sb:
        sb.load(burn, "burn.py")
        for _ in range(6):
            assert np.all(sb.call(OBS, ACT, OBS).reward == 1.0)
        assert sb.restarts >= 1 and sb.alive


def test_a_worker_that_ignores_its_lifetime_cpu_limit_is_killed_by_the_kernel() -> None:
    spin = hostile("signal.signal(signal.SIGPROF, signal.SIG_IGN)\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n")
    limits = SandboxLimits(lifetime_cpu_s=1, cpu_s_per_call=0.2, wall_s_per_call=30.0, audit=False)
    with Sandbox(limits) as sb:
        sb.load(spin, "spin.py")
        t = time.monotonic()
        with pytest.raises(SandboxError, match="lifetime CPU limit") as info:
            sb.call(OBS, ACT, OBS)
        assert info.value.kind == "crash" and time.monotonic() - t < 10


# --- (4) the trainer trusts nothing the worker sends -------------------------------------------------------


def in_time(fn: Any, seconds: float, sb: Sandbox) -> Any:
    """``fn()`` in a thread; its result or exception. Fails (and kills the worker) when it hangs."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as exc:
            box["out"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if sb._proc is not None:
            sb._proc.kill()  # unblocks the trainer
        thread.join(5)
        pytest.fail(f"the trainer hung for {seconds} s")
    return box["out"]


FRAME_OK = {"ok": True, "outputs": [["reward", [8]]]}


def frame(header: Any, payload: bytes = b"", head: bytes | None = None) -> bytes:
    head = json.dumps(header).encode() if head is None else head
    return len(head).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + head + payload


FORGED = {
    "wrong types": frame({"ok": True, "outputs": [[1, "x"]]}),
    "deep nesting": frame(None, head=b'{"ok": true, "outputs": ' + b"[" * 30000 + b"]" * 30000 + b"}"),
    "not json": frame(None, head=b"\xff\xfe{{{"),
    "not an object": frame([1, 2, 3]),
    "oversized header": (1 << 30).to_bytes(4, "little") + bytes(4),
    "oversized payload": frame(FRAME_OK)[:4] + (1 << 30).to_bytes(4, "little") + frame(FRAME_OK)[8:],
    "short payload": frame(FRAME_OK, bytes(8)),
    "bad error kind": frame({"ok": False, "kind": ["call"], "error": "x"}),
    "bad error text": frame({"ok": False, "kind": "call", "error": {"a": 1}}),
    "escape-code name": frame({"ok": True, "outputs": [["reward", [8]], ["\x1b[2J", [8]]]}, bytes(128)),
    "two replies": frame(FRAME_OK, bytes(64)) * 2,
}


@pytest.mark.parametrize("cut", [12, -10], ids=["in-the-header", "in-the-payload"])
def test_a_reply_cut_short_ends_at_the_deadline(cut: int) -> None:
    """A frame that announces more than it sends, then silence: the trainer's read deadline ends it."""
    partial = frame(FRAME_OK, bytes(64))[:cut]
    body = f"posix.write(main['write_fd'], {partial!r})\nmain['shm'].done(2)\ntime.sleep(60)\n"
    with Sandbox(SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=1.0, audit=False)) as sb:
        sb.load(hostile(body), "staller.py")
        t = time.monotonic()
        out = in_time(lambda: sb.call(OBS, ACT, OBS), 10, sb)
        assert isinstance(out, SandboxError) and out.kind == "wall" and "wall time" in str(out), repr(out)
        assert time.monotonic() - t < 3 and not sb.alive


@pytest.mark.parametrize("name", sorted(FORGED))
def test_a_forged_reply_ends_as_one_protocol_error(name: str) -> None:
    body = f"posix.write(main['write_fd'], {FORGED[name]!r})\nmain['shm'].done(2)\ntime.sleep(60)\n"
    with Sandbox(HOSTILE) as sb:
        sb.load(hostile(body), "forger.py")
        out = in_time(lambda: sb.call(OBS, ACT, OBS), 10, sb)
    assert isinstance(out, SandboxError) and out.kind == "protocol", repr(out)
    assert "it was stopped" in str(out) and not sb.alive
    assert ("an oversized reply" in str(out)) == name.startswith("oversized"), str(out)  # refused before reading it


SHM_FORGED = {  # control slots (int64 indices, as in _worker.py): STATUS 24, N_OUT 32, NAMES_VERSION 40, NAMES_LEN 48
    "deeply nested names": "names(b'[' * 1000 + b']' * 1000)",
    "names not a list": "names(b'{\"reward\": 1}')",
    "names too long": "names(b'[]'); shm.ctrl[48] = 1 << 40",
    "names no program can return": "names(b'[\"reward\"]'); shm.ctrl[32] = 2",
    "impossible output count": "shm.ctrl[32] = 1 << 50",
    "unknown status": "shm.ctrl[32] = 1; shm.done(7)",
}


@pytest.mark.parametrize("name", sorted(SHM_FORGED))
def test_a_forged_shared_memory_reply_ends_as_one_protocol_error(name: str) -> None:
    body = f"""
    shm = main['shm']
    def names(text):
        shm.mm[2048 : 2048 + len(text)] = text
        shm.ctrl[48], shm.ctrl[40], shm.ctrl[32] = len(text), shm.ctrl[40] + 1, 1
    {SHM_FORGED[name]}
    if shm.ctrl[24] != 7:
        shm.done(1)
    time.sleep(60)
    """
    with Sandbox(HOSTILE) as sb:
        sb.load(hostile(body), "forger.py")
        out = in_time(lambda: sb.call(OBS, ACT, OBS), 10, sb)
    assert isinstance(out, SandboxError) and out.kind == "protocol", repr(out)


def test_a_worker_that_stops_reading_cannot_block_the_trainer() -> None:
    body = """
    main['shm'].reply([('reward', np.zeros(len(obs)))])
    main['shm'].done(1)  # answers this call itself, then never reads its pipe again
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
    time.sleep(60)
    """
    big = np.zeros((SHM_BYTES // 64 + 100, 8))  # too large for the shared memory: goes over the pipe
    limits = SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=1.0, audit=False)
    with Sandbox(limits) as sb:
        sb.load(hostile(body), "staller.py")
        assert np.all(sb.call(OBS, ACT, OBS).reward == 0.0)
        t = time.monotonic()
        out = in_time(lambda: sb.call(big, np.zeros(len(big)), big), 10, sb)
    assert isinstance(out, SandboxError) and out.kind == "wall" and "stopped reading" in str(out), repr(out)
    assert time.monotonic() - t < 3


def test_a_flood_on_the_reply_pipe_is_cut_off_without_growing_the_trainer() -> None:
    body = "signal.signal(signal.SIGPROF, signal.SIG_IGN)\nwhile True:\n    posix.write(main['write_fd'], bytes(1 << 16))\n"
    with Sandbox(SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=10.0, audit=False)) as sb:
        sb.load(hostile(body), "flood.py")
        t = time.monotonic()
        out = in_time(lambda: sb.call(OBS, ACT, OBS), 20, sb)
        assert isinstance(out, SandboxError) and out.kind == "protocol" and "more data than a reply" in str(out)
        assert time.monotonic() - t < 2 and len(sb._buf) == 0


def test_a_worker_that_always_asks_for_wake_ups_and_never_reads_them_cannot_block_the_trainer() -> None:
    body = """
    shm = main['shm']
    zeros = [('reward', np.zeros(len(obs)))]
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
    while True:  # serves every batch from here, says it sleeps, and never reads the wake-ups
        if shm.pending():
            shm.reply(zeros)
            shm.done(1)
        shm.ctrl[16] = 1
    """
    with Sandbox(SandboxLimits(cpu_s_per_call=0.5, wall_s_per_call=2.0, audit=False)) as sb:
        sb.load(hostile(body), "sleepy.py")
        fcntl.fcntl(sb._w, fcntl.F_SETPIPE_SZ, 4096)  # a small pipe: fewer calls fill it with wake-ups
        out = in_time(lambda: [sb.call(OBS, ACT, OBS) for _ in range(250)], 30, sb)  # 250 x 22 bytes > 4096
    assert isinstance(out, list) and len(out) == 250, repr(out)[:300]


def test_a_worker_that_closes_its_pipe_but_runs_on_is_stopped() -> None:
    body = "posix.close(main['write_fd'])\nsignal.signal(signal.SIGPROF, signal.SIG_IGN)\ntime.sleep(60)\n"
    with Sandbox(HOSTILE) as sb:
        sb.load(hostile(body), "closer.py")
        out = in_time(lambda: sb.call(OBS, ACT, OBS), 10, sb)
    assert isinstance(out, SandboxError) and out.kind == "protocol" and "closed its pipe" in str(out), repr(out)


def test_a_worker_killed_by_a_signal_without_a_name_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake_worker.py"  # greets like a worker, then dies of real-time signal 40
    fake.write_text(
        "import json, os, struct, sys\nhead = json.dumps({'ok': True, 'layers': []}).encode()\n"
        "os.write(int(sys.argv[2]), struct.pack('<II', len(head), 0) + head)\nos.kill(os.getpid(), 40)\n"
    )
    monkeypatch.setattr("rewards.code.sandbox.WORKER", fake)
    with Sandbox(FAST) as sb, pytest.raises(SandboxError, match="killed by signal 40") as info:
        sb.load(GOOD, "good.py")
    assert info.value.kind == "crash"


# --- (5) values bounded, text cleaned ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("return obs[:, 0], {'big': np.zeros(len(obs)) + 1e308}", "component 'big' is out of range"),
        ("return np.zeros(len(obs)) - 1e39", "the reward is out of range"),
        ("return obs[:, 0], {'x': obs[:, 0] * np.inf}", "component 'x' is not finite"),
        ("return obs[:, 0], {'\\x1b[2J': obs[:, 0]}", "component name '\\x1b[2J' is not allowed"),
        ("return obs[:, 0], {str(i): obs[:, 0] for i in range(40)}", "at most 32"),
    ],
)
def test_components_must_be_finite_bounded_and_well_named(body: str, expect: str) -> None:
    out = run_program(program(body))
    assert isinstance(out, SandboxError) and out.kind == "output", out
    assert expect in str(out)


def test_component_names_are_checked_again_whenever_they_change() -> None:
    """The worker checks a program's names once while they stay the same: a name that changes is checked."""
    source = program("CALLS.append(1)\nname = 'ok' if len(CALLS) == 1 else 'not ok'\nreturn obs[:, 0], {name: obs[:, 0]}")
    with Sandbox(FAST) as sb:
        sb.load("CALLS = []\n" + source, "renamer.py")
        assert set(sb.call(OBS, ACT, OBS).components) == {"ok"}
        with pytest.raises(SandboxError, match="component name 'not ok' is not allowed") as info:
            sb.call(OBS, ACT, OBS)
    assert info.value.kind == "output"


def test_values_up_to_float32s_largest_are_accepted() -> None:
    out = run_program(program("return np.zeros(len(obs)) + 3.4e38, {'small': np.zeros(len(obs)) - 3.4e38}"))
    assert isinstance(out, np.ndarray) and np.all(out == 3.4e38)


ESCAPES = "\\x1b[2K\\r\\x1b[32mACCEPTED\\x1b[0m \\x1b]52;c;cm0gLXJmIH4=\\x07 \\u202e"


def test_the_programs_messages_are_cleaned_and_cut() -> None:
    raiser = program(f"raise ValueError('{ESCAPES}' + 'A' * 900_000)")
    printer = program(
        f"print('{ESCAPES}' * 50_000)\nos = np.__builtins__['__import__']('posix')\nos._exit(3)"
    )  # its prints come back as the tail of its log
    for source in (raiser, printer):
        out = run_program(source)
        assert isinstance(out, SandboxError)
        text = str(out)
        assert len(text) < 5000 and "\x1b" not in text and "\r" not in text and "\u202e" not in text, text[:300]
        assert "\\x1b[2K" in text  # shown, not obeyed
    assert "characters cut" in str(run_program(raiser))


def test_clean_text_escapes_every_control_and_format_character() -> None:
    nasty = "".join(chr(c) for c in range(0x20)) + "\x7f\x85\u200b\u202e\u2028\ud800\ue000"
    cleaned = clean_text("ok\n\tok" + nasty)
    assert cleaned.startswith("ok\n\tok") and all(c.isprintable() or c in "\n\t" for c in cleaned)
    assert clean_text("x" * 50, limit=10) == "x" * 10 + " [... 40 characters cut]"


def hostile_check(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make every check fail with a raw hostile message (what a check that forgot to clean would give)."""
    from rewards.code import validate

    raw = f"ValueError: {ESCAPES.encode().decode('unicode_escape')}\nACCEPTED cartpole.py (a line of its own)\n" * 2000
    monkeypatch.setattr(validate, "check_program", lambda *a, **k: validate.CheckResult(False, "smoke", raw))
    monkeypatch.setattr(validate, "sample_transitions", lambda *a, **k: _sample())
    return raw


def test_the_check_cli_shows_a_hostile_message_inert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rewards.code.__main__ import main

    hostile_check(monkeypatch)
    path = tmp_path / "hostile.py"
    path.write_text("def compute_reward(obs, action, next_obs):\n    return obs[:, 0]\n")
    assert main(["check", "--env", "cartpole", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("REJECTED at the smoke check:"), out[:500]
    assert "\x1b" not in out and "\r" not in out and len(out) < 6000
    assert all(line.startswith("  | ") for line in out.splitlines()[1:])  # the program's text, set apart


def test_the_feedback_sent_back_to_the_model_is_cleaned(monkeypatch: pytest.MonkeyPatch) -> None:
    from rewards.code import generate
    from rewards.code.llm import Completion, LLMBackend, Sampling

    raw = hostile_check(monkeypatch)
    monkeypatch.setattr(generate, "check_program", lambda *a, **k: generate.CheckResult(False, "smoke", raw))

    class Scripted(LLMBackend):
        name, model = "scripted", "scripted"

        def __init__(self) -> None:
            self.prompts: list[str] = []

        @override
        def complete(self, messages: Any, sampling: Sampling, sample_index: int = 0) -> Completion:
            self.prompts.append(messages[-1]["content"])
            answer = "```python\ndef compute_reward(obs, action, next_obs):\n    return obs[:, 0]\n```"
            return Completion(answer, self.name, self.model, False, 0.0, str(sample_index))

    backend = Scripted()
    generate.propose(backend, "balance", "an env", _sample(), Sampling(0.0, 1.0, 64), 0, attempts=2, limits=FAST)
    feedback = backend.prompts[1]
    assert "ValueError" in feedback and "\x1b" not in feedback and "\r" not in feedback
    assert len(feedback) < len(backend.prompts[0]) + 6000


def test_a_checks_message_quoting_the_program_is_cleaned_end_to_end() -> None:
    """The real path: the worker's error, through the sandbox and the check, as the model and the CLI get it."""
    raising = f"def compute_reward(obs, action, next_obs):\n    raise ValueError('{ESCAPES}' * 10000)\n"
    result = check_program(raising, _sample(), FAST)
    assert result.stage == "smoke" and "\\x1b[2K" in result.message
    assert all(c.isprintable() or c in "\n\t" for c in result.message) and len(result.message) < 5000


# --- (6) the contract: named public numpy modules, numpy's own objects ---------------------------------


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("from numpy._core.multiarray import normalize_axis_index", "imports from 'numpy._core.multiarray'"),
        ("from numpy._core import umath", "imports from 'numpy._core'"),
        ("import numpy._core.numeric as nc", "imports 'numpy._core.numeric'"),
        ("from numpy import _core", "numpy._core is private"),
        ("from numpy import lib", "the module numpy.lib"),
        ("from numpy import ctypeslib", "imports 'ctypeslib' from numpy"),  # (lazily loaded: no public name)
        ("from numpy import load", "reads or writes files"),
        ("from numpy import ScalarType", "tuple, not one of numpy's"),
        ("from numpy import *", "import the names you use one by one"),
        ("from numpy.random import mtrand", "the module numpy.random.mtrand"),
        ("import numpy as np\nX = np._core", "private attributes"),
        ("import numpy as np\nX = np.lib.format", "numpy.lib is the module numpy.lib"),
        ("import numpy as np\nX = np.testing", "uses np.testing"),
        ("import numpy as np\nX = np", "uses the module 'np' as a value"),
        ("import numpy as np\ndef f(np):\n    return 1", "rebinds 'np'"),
        ("X = (1).ctypes", "leads out of numpy"),
    ],
)
def test_contract_allows_only_named_public_numpy_modules_and_numpys_own_names(line: str, expect: str) -> None:
    source = f"{line}\ndef compute_reward(obs, action, next_obs):\n    return obs[:, 0]\n"
    problems = check_source(source)
    assert any(expect in str(p) for p in problems), problems


def test_contract_accepts_everyday_numpy_and_every_shipped_program() -> None:
    from rewards.code.programs import PROGRAMS, program_path

    everyday = """
import math
import numpy as np
import numpy.linalg as la
from numpy import pi, float64, newaxis
from numpy.random import default_rng
from numpy.fft import rfft
def compute_reward(obs, action, next_obs):
    x = np.clip(la.norm(next_obs, axis=1), 0.0, np.inf) + np.random.default_rng(0).normal(size=len(obs)) * 0
    y = rfft(obs, axis=1).real[:, 0] + np.linalg.norm(obs[:, newaxis], axis=-1)[:, 0] * math.cos(pi)
    return x.astype(float64) + y, {"x": x, "angle": np.arctan2(obs[:, 0], obs[:, 1])}
"""
    assert check_source(everyday) == []
    for name in PROGRAMS:
        assert check_source(program_path(name).read_text()) == [], name


def test_the_workers_import_hook_refuses_private_numpy_modules_at_run_time_too() -> None:
    out = run_program(program("from numpy._core.multiarray import normalize_axis_index\nreturn obs[:, 0]"))
    assert isinstance(out, SandboxError) and "only numpy, numpy.linalg" in str(out), out
    out = run_program(program("from numpy import lib\nreturn obs[:, 0]"))
    assert isinstance(out, SandboxError) and "numpy.lib is not a public numpy name" in str(out), out


def test_the_contract_and_the_worker_give_the_same_builtins() -> None:
    from rewards.code import _worker, contract

    assert contract.SAFE_BUILTINS == _worker.SAFE_BUILTINS


def test_kernel_layers_hold_after_the_program_rewrites_the_workers_own_variables(tmp_path: Path) -> None:
    """The audit hook off, then the worker's limits, CPU tick and audit list rewritten from the program:
    files and sockets stay refused and the trainer's wall clock still stops it."""
    os.chmod(tmp_path, 0o777)
    target = tmp_path / "written_by_sandbox"
    body = f"""
    worker = sys.modules['__main__']
    worker._AUDIT_DENIED = ()
    worker._calling['on'] = False
    main['limits']['memory_mb'] = 1 << 20
    worker.TICKS_PER_LIMIT = 1 << 60
    r = {{}}
    try:
        posix.open({str(target)!r}, 65, 0o666)
        r['file'] = 'opened'
    except OSError as exc:
        r['file'] = exc.errno
    r['socket'] = sc(41, 2, 1, 0)
    if r['file'] != 'opened' and tuple(r['socket']) == (-1, 1):
        while True:  # contained: now just burn until the trainer's wall clock stops it
            pass
    """
    with Sandbox(SandboxLimits(cpu_s_per_call=0.3, wall_s_per_call=1.5, audit=False)) as sb:
        out = attack(sb, body + report("r"))
    assert out.get("kind") == "wall", out
    assert not target.exists()
