"""The reward-code sandbox, the contract checks and the validation: hostile programs are refused or
contained with a clear message, the trainer survives, nothing outside the sandbox changes."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rewards.code.contract import check_source
from rewards.code.sandbox import Sandbox, SandboxError, SandboxLimits
from rewards.code.validate import Transitions, check_program

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
    from rewards.code.sandbox import SHM_BYTES

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
