"""A warm interpreter for the tests' CLI calls: it imports the heavy third-party libraries once and
forks one child per call, so each ``run_cli("run.py", ...)`` skips about 3 s of imports (torch alone
takes 1.2 s, and its first optimizer imports ``torch._dynamo``, another 1.2 s).

The child is a separate process like ``subprocess.run([python, script, *args])``: its own working
directory, environment, ``sys.argv``, stdin from ``/dev/null``, stdout and stderr to files, exit code
from ``SystemExit`` (a traceback and exit 1 on an uncaught exception), and the interpreter's shutdown
(non-daemon threads joined, ``atexit`` handlers run). What it shares with the zygote is the already
imported third-party modules (:data:`PRELOAD`), never the project's: those are imported fresh by the
child. Set ``REWARDLAB_TEST_FRESH_PROCESS=1`` to run every call in a new interpreter instead.

Protocol (one JSON object per line): the zygote reads ``{"script", "args", "cwd", "env", "stdout",
"stderr"}`` on stdin and answers ``{"pid": ...}`` when the child starts and ``{"returncode": ...}``
when it ends (``-signal`` for a child killed by a signal, as :mod:`subprocess` reports it). The child
leads its own process group, so a caller that times out can kill it with everything it started. The
zygote exits when its stdin closes.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
import threading
import traceback
from typing import Any

#: Imported once by the zygote: third-party only, the slowest first-imports of a run.
PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",
    "stable_baselines3",
    "gymnasium",
    "omegaconf",
    "hydra",
    "hydra.core.override_parser.overrides_parser",
    "matplotlib.pyplot",
    "imageio.v2",
    "pygame",
)
#: Preloaded where installed (the ``text`` extra): transformers alone takes about 5 s to import.
PRELOAD_IF_INSTALLED = ("transformers", "sentence_transformers", "peft")


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _child(request: dict[str, Any], protocol: tuple[int, int]) -> None:
    """Become ``python script *args`` (never returns)."""
    code = 1
    try:
        os.setpgid(0, 0)
        for fd in protocol:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.close(stdin)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
        script = request["script"]
        sys.argv = [script, *request["args"]]
        sys.path[0] = os.path.dirname(script)
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:
            traceback.print_exc()
            code = 1
        try:
            threading._shutdown()  # type: ignore[attr-defined]
            import atexit

            atexit._run_exitfuncs()
        except BaseException:
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    """Preload, then serve requests from stdin until it closes."""
    # The protocol gets its own descriptors (0 and 1 are the children's to replace), before anything
    # imported can print to stdout.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    for name in PRELOAD:
        importlib.import_module(name)
    for name in PRELOAD_IF_INSTALLED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    requests = os.fdopen(proto_in, "r")
    answers = os.fdopen(proto_out, "w", buffering=1)
    print(json.dumps({"ready": True}), file=answers)
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request, (proto_in, proto_out))
        print(json.dumps({"pid": pid}), file=answers)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=answers)


if __name__ == "__main__":
    main()
