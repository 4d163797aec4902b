"""The sandbox worker: runs one untrusted reward program, locked down (see :mod:`rewards.code.sandbox`).

Started by :class:`rewards.code.sandbox.Sandbox` as ``python -I -u _worker.py READ_FD WRITE_FD SHM_FD LIMITS_JSON``
with an empty environment, inside a fresh scratch directory. It imports only the standard
library and numpy, so it starts fast and never loads the trainer's code. Order matters:

1. import numpy (and the submodules a program may use) while files can still be opened, then
   ask to be killed when the trainer dies (``PR_SET_PDEATHSIG``; it exits at once if it already has);
2. drop to the ``nobody`` user when started as root; enter new network, IPC and PID namespaces
   (through a new user namespace when not root). A PID namespace only applies to children, so
   this process forks: the child, PID 1 there, is the worker, and this process stays outside as
   its *keeper*: it runs no program code, waits for the worker and exits as the worker did;
3. in the worker: die with the keeper, close every file descriptor but the two pipes and the
   log, set resource limits (address space, CPU seconds, file size, processes, core dumps);
4. install the seccomp filter: an allow-list of the system calls a running numpy program needs
   (read/write/close on its descriptors, memory mapping, futex, select/poll, clocks and sleeps,
   its own signal handling, exit); every other call fails with EPERM, other ABIs are killed;
5. say "ready", then receive the program's source and only now run it (its top level included).

Messages, both ways over the pipes: ``<II`` (header length, payload length), a JSON header, raw
bytes. Batches go through shared memory (``SHM_FD``, a memfd the trainer made; -1 for none): the
trainer writes the arrays where a ``layout`` message said, bumps a request counter, and this
worker, polling the counter, writes the reward and components back and bumps a reply counter;
errors and unusual outputs still go over the pipe. The trainer never unpickles anything from
here; it parses JSON and reads float64 arrays, and checks both: it trusts nothing this process
sends, since a program that takes the process over can send anything.
"""

from __future__ import annotations

import ctypes
import json
import math
import mmap
import os
import re
import resource
import select
import signal
import struct
import sys
import time
import traceback

import numpy as np
import numpy.fft
import numpy.linalg
import numpy.random

FRAME = struct.Struct("<II")
NOBODY = 65534
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWPID = 0x10000000, 0x40000000, 0x08000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
EPERM = 1

# The only x86_64 system calls the worker may make once locked down (the busiest first: the filter
# compares in this order). Everything else fails with EPERM: files by path or by new descriptor,
# sockets, processes, signals to any process, IPC objects, namespaces, resource limits,
# priorities, timers, extended attributes, io_uring, ... Each entry acts on this process only
# (its memory, its signal handlers, its clocks) or on descriptors it already holds.
ALLOWED_SYSCALLS_X86_64 = {
    "pselect6": 270, "read": 0, "sched_yield": 24, "write": 1, "futex": 202, "rt_sigreturn": 15,
    "select": 23, "poll": 7, "ppoll": 271, "readv": 19, "writev": 20, "close": 3,
    "mmap": 9, "munmap": 11, "mremap": 25, "mprotect": 10, "brk": 12, "madvise": 28,
    "rt_sigaction": 13, "rt_sigprocmask": 14, "sigaltstack": 131, "restart_syscall": 219,
    "clock_gettime": 228, "clock_getres": 229, "gettimeofday": 96, "time": 201,
    "clock_nanosleep": 230, "nanosleep": 35, "getrandom": 318,
    "getpid": 39, "getppid": 110, "gettid": 186, "exit": 60, "exit_group": 231,
}  # fmt: skip

SAFE_BUILTINS = (
    "abs all any bool dict divmod enumerate filter float frozenset int isinstance len list map max min "
    "print range reversed round set slice sorted str sum tuple zip ArithmeticError AssertionError "
    "Exception IndexError KeyError TypeError ValueError ZeroDivisionError FloatingPointError True False None"
).split()  # the same list as rewards.code.contract.SAFE_BUILTINS (a test checks)
ALLOWED_MODULES = {"numpy": np, "numpy.linalg": np.linalg, "numpy.fft": np.fft, "numpy.random": np.random}
ALLOWED_MODULES["math"] = math
MAX_COMPONENTS = 32
COMPONENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # as rewards.code.sandbox.COMPONENT_NAME
MAX_ERROR_CHARS = 2000


# --- wire --------------------------------------------------------------------------------------


class _Reader:
    """Reads whole frames from the (non-blocking) pipe, and waits for the next message or batch.

    After a reply the next batch usually follows within a vector-env step, so :meth:`wait` polls
    (the shared-memory request counter, and the pipe) for up to ``spin_s`` before sleeping in
    ``select``: a sleeping process pays a scheduler wake-up per batch, which costs more than the
    reward itself. While asleep it sets the shared ``SLEEPING`` flag, so the trainer knows to send
    a ``wake`` message with its next batch.
    """

    def __init__(self, fd: int, spin_s: float) -> None:
        self.fd, self.buf, self.spin_s = fd, b"", spin_s
        os.set_blocking(fd, False)

    def _fill(self) -> bool:
        """One non-blocking read; False when nothing was there. EOFError when the trainer is gone."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            raise EOFError
        self.buf += chunk
        return True

    def _frame(self) -> tuple[dict, bytes] | None:
        if len(self.buf) < FRAME.size:
            return None
        head_len, payload_len = FRAME.unpack_from(self.buf)
        end = FRAME.size + head_len + payload_len
        if len(self.buf) < end:
            return None
        header = json.loads(self.buf[FRAME.size : FRAME.size + head_len])
        payload, self.buf = self.buf[FRAME.size + head_len : end], self.buf[end:]
        return header, payload

    def wait(self, shm: _Shm | None) -> tuple[dict, bytes] | None:
        """The next message from the pipe, or None when a batch is waiting in shared memory."""
        spin_until = time.perf_counter() + self.spin_s
        polls = 0
        while True:
            if shm is not None and shm.pending():
                shm.ctrl[SLEEPING] = 0
                return None
            polls += 1
            if polls % 16 == 0:
                os.sched_yield()  # when runs share cores, let a runnable process (the trainer) have this one
            if shm is None or polls % 8 == 0 or time.perf_counter() > spin_until:
                frame = self._frame()
                if frame is None and self._fill():
                    frame = self._frame()
                if frame is not None:
                    if shm is not None:
                        shm.ctrl[SLEEPING] = 0
                    return frame
                if time.perf_counter() > spin_until:
                    if shm is not None:  # re-checked after the flag is set; 1 ms bounds a missed wake-up
                        shm.ctrl[SLEEPING] = 1
                        if not shm.pending():
                            select.select([self.fd], [], [], 0.001)
                    else:
                        select.select([self.fd], [], [])


# Shared memory: a control page of int64 slots, 64 bytes apart (one cache line each), then data.
REQUEST, REPLY, SLEEPING, STATUS, N_OUT, NAMES_VERSION, NAMES_LEN, RECYCLE = (8 * i for i in range(8))
NAMES_AT, NAMES_MAX, DATA_AT = 2048, 2048, 4096
STATUS_SHM, STATUS_PIPE = 1, 2  # the reply is in shared memory / is a message on the pipe


class _Shm:
    """This side of the shared batch memory (see the module docstring)."""

    def __init__(self, fd: int, size: int) -> None:
        self.mm = mmap.mmap(fd, size)
        os.close(fd)
        self.ctrl = memoryview(self.mm).cast("q")  # int64 slots; 4x cheaper per read than a numpy array
        self.seen = int(self.ctrl[REQUEST])
        self.inputs: list[np.ndarray] = []
        self.out: np.ndarray | None = None
        self.names: list[str] | None = None

    def pending(self) -> bool:
        return int(self.ctrl[REQUEST]) != self.seen

    def layout(self, header: dict) -> None:
        """Views of the input arrays and the output block, where the trainer will put them."""
        self.inputs = [
            np.frombuffer(self.mm, np.dtype(dtype), count=math.prod(shape), offset=int(at)).reshape(shape)
            for _, dtype, shape, at in header["arrays"]
        ]
        self.out = np.frombuffer(self.mm, np.float64, count=int(header["out_values"]), offset=int(header["out_at"]))
        self.n = int(header["n"])
        self.out_at, self.row_bytes = int(header["out_at"]), 8 * self.n

    def reply(self, outputs: list[tuple[str, np.ndarray]]) -> bool:
        """Write the outputs back; False (nothing written) when they do not fit the fast path."""
        n, out = self.n, self.out
        if out is None or len(outputs) * n > len(out):
            return False
        names = [name for name, _ in outputs]
        if names != self.names:  # a program returns the same names call after call: written once
            encoded = json.dumps(names[1:]).encode()
            if len(encoded) > NAMES_MAX:
                return False
            self.mm[NAMES_AT : NAMES_AT + len(encoded)] = encoded
            self.ctrl[NAMES_LEN] = len(encoded)
            self.ctrl[NAMES_VERSION] += 1
            self.names = names
        mm, at, size = self.mm, self.out_at, self.row_bytes
        for i, (_, arr) in enumerate(outputs):
            try:  # _run made each a float64 (n,) array: a C-contiguous one is a plain byte copy
                mm[at + i * size : at + (i + 1) * size] = arr  # type: ignore[call-overload]  # a buffer
            except (BufferError, ValueError, TypeError):  # a strided view: numpy copies element-wise
                out[i * n : (i + 1) * n] = arr
        self.ctrl[N_OUT] = len(outputs)
        return True

    def done(self, status: int) -> None:
        self.ctrl[STATUS] = status
        self.seen = int(self.ctrl[REQUEST])
        self.ctrl[REPLY] = self.seen  # last: the trainer reads everything above once it sees this


def _send(fd: int, header: dict, payload: bytes = b"") -> None:
    if _state["spent"]:
        header = {**header, "recycle": True}
    head = json.dumps(header).encode()
    data = FRAME.pack(len(head), len(payload)) + head + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- lockdown ----------------------------------------------------------------------------------


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp_program() -> list[tuple[int, int, int, int]]:
    """BPF: wrong architecture or x32 ABI -> kill; an allowed call -> allow; anything else -> EPERM."""
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    allowed = list(dict.fromkeys(ALLOWED_SYSCALLS_X86_64.values()))
    n = len(allowed)
    prog = [
        (ld_w_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq_k, 1, 0, AUDIT_ARCH_X86_64),
        (ret_k, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (ld_w_abs, 0, 0, 0),  # seccomp_data.nr
        (jge_k, 0, 1, 0x40000000),  # x32 ABI numbers
        (ret_k, 0, 0, SECCOMP_RET_KILL_PROCESS),
    ]
    for i, nr in enumerate(allowed):
        prog.append((jeq_k, n - i, 0, nr))  # jump over the rest and the EPERM return, to ALLOW
    prog.append((ret_k, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    prog.append((ret_k, 0, 0, SECCOMP_RET_ALLOW))
    return prog


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int | None) -> None:
    """Be killed (SIGKILL) when the parent exits; exit now if it already has (``parent``: its pid)."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the trainer died before the request took effect


def _isolate(limits: dict, fds: tuple[int, ...]) -> list[str]:
    """Drop root, enter new network, IPC and PID namespaces; continue as PID 1 of the new one.

    Root can make the namespaces itself (before becoming nobody); otherwise (or where a container
    withholds that) a new user namespace makes them. Returns the layers now in force.
    """
    layers = []
    spaces = CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID
    wanted = "namespaces" not in limits.get("off", ())
    root = os.geteuid() == 0
    isolated = wanted and root and _libc.unshare(spaces) == 0
    if root:  # as root the program would own root's files and processes: become nobody first
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        _die_with_parent(int(limits["parent"]))  # a change of user clears the death signal
        layers.append("uid:nobody")
    if wanted and not isolated and _libc.unshare(CLONE_NEWUSER | spaces) == 0:
        isolated = True
        layers.append("userns")
    if not isolated:
        return layers
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    child = os.fork()  # the first child is PID 1 of the new PID namespace: the worker
    if child:
        _keep(child, fds, limits)
    _die_with_parent(None)  # its parent (the keeper) is outside the namespace: getppid() is 0 here
    return [*layers, "netns", "ipcns", "pidns"]


def _cpu_limits(limits: dict) -> tuple[int, int]:
    """RLIMIT_CPU (soft, hard): past soft the worker asks to be replaced; at hard the kernel kills it."""
    soft = max(1, math.ceil(float(limits["lifetime_cpu_s"])))
    return soft, soft + math.ceil(float(limits["cpu_s_per_call"]) + 0.5)


def _keep(child: int, fds: tuple[int, ...], limits: dict) -> None:
    """The keeper (outside the worker's PID namespace): wait for the worker, exit as it did.

    A worker killed (SIGKILL) after its hard CPU limit is reported as killed by SIGXCPU, so the
    trainer can say why; the keeper's measure is the kernel's, not the worker's word.
    """
    for fd in fds:
        os.close(fd)
    _, status, usage = os.wait4(child, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL and usage.ru_utime + usage.ru_stime >= _cpu_limits(limits)[1] - 0.5:
            sig = signal.SIGXCPU
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _lock_down(limits: dict, keep: tuple[int, ...]) -> list[str]:
    """Apply the process's own layers (descriptors, limits, seccomp, audit hook); their names."""
    layers = []
    at = 3
    for fd in sorted(set(keep)):  # only the pipes and stdout/stderr (the log) stay open
        if fd >= at:
            os.closerange(at, fd)
            at = fd + 1
    os.closerange(at, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    mem = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, _cpu_limits(limits))
    fsize = int(limits["log_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full log fails the write instead of killing us
    signal.signal(signal.SIGXCPU, _on_spent)
    signal.signal(signal.SIGPROF, _on_tick)
    tick = float(limits["cpu_s_per_call"]) / TICKS_PER_LIMIT
    signal.setitimer(signal.ITIMER_PROF, tick, tick)
    layers.append("rlimits")
    if os.uname().machine == "x86_64" and "seccomp" not in limits.get("off", ()):
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        prog = _seccomp_program()
        arr = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
        fprog = _SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
        if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
        layers.append("seccomp")
    if limits.get("audit", True):
        sys.addaudithook(_audit)
        layers.append("audit")
    return layers


_AUDIT_DENIED: tuple[str, ...]  # grown below: event-name prefixes the audit hook refuses
_AUDIT_DENIED = ("open", "socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.kill")
_AUDIT_DENIED += ("ctypes.", "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chdir", "os.listdir")
_AUDIT_DENIED += ("os.scandir", "os.putenv", "os.unsetenv", "shutil.", "urllib.", "http.", "sys.addaudithook")


def _audit(event: str, args: tuple) -> None:
    """A courtesy that names what the program tried; the kernel layers do not depend on it."""
    if event.startswith(_AUDIT_DENIED):
        detail = f" {args[0]!r}"[:100] if args and isinstance(args[0], (str, bytes, int)) else ""
        raise PermissionError(f"sandbox: reward code may not use {event}{detail}")


# --- the program ---------------------------------------------------------------------------------


def _numpy_own(module: object, name: object) -> bool:
    """Whether ``from module import name`` is allowed (as :func:`rewards.code.contract.numpy_own`).

    It is when ``name`` is public and is an allowed module, numpy's or math's own object, or a number.
    """
    if not isinstance(name, str) or name.startswith("_") or name not in vars(module):
        return False
    obj = vars(module)[name]
    if type(obj) is type(np):
        return any(obj is m for m in ALLOWED_MODULES.values())
    owner = getattr(obj, "__module__", None)
    return type(obj) in (int, float, complex, bool, type(None)) or (
        isinstance(owner, str) and owner.partition(".")[0] in ("numpy", "math")
    )


def _guarded_import(name: str, globals=None, locals=None, fromlist=(), level=0):
    """``import`` in the program: only the allowed modules, and only public names that are their own.

    numpy's C code imports its own (already loaded) modules through the running frame's
    ``__import__`` too, without a ``fromlist``: those get the root package, as ``import a.b`` does.
    """
    if level == 0 and not fromlist and name.partition(".")[0] == "numpy" and name in sys.modules:
        return np
    if level != 0 or name not in ALLOWED_MODULES:
        raise ImportError(f"sandbox: only {', '.join(ALLOWED_MODULES)} may be imported, not {name!r}")
    module = ALLOWED_MODULES[name]
    for item in fromlist or ():
        if not _numpy_own(module, item):
            raise ImportError(f"sandbox: {name}.{item} is not a public numpy name reward code may import")
    return module if fromlist else ALLOWED_MODULES[name.partition(".")[0]]


def _load(source: str, filename: str):  # -> the program's compute_reward (no typing import in the worker)
    import builtins

    safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    safe["__import__"] = _guarded_import
    namespace = {"__builtins__": safe, "__name__": "reward_program"}
    exec(compile(source, filename, "exec"), namespace)  # the untrusted program, inside the locked worker
    fn = namespace.get("compute_reward")
    if not callable(fn):
        raise TypeError("the program defines no function compute_reward(obs, action, next_obs)")
    return fn


class _CpuLimit(BaseException):  # not an Exception: `except Exception` in the program cannot swallow it
    pass


class _OutputError(Exception):  # the program returned something unusable (kind "output")
    pass


TICKS_PER_LIMIT = 10
_calling = {"on": False, "ticks": 0}
_state: dict = {"spent": False, "shm": None, "names": None}  # names: the component names last checked
FLOAT64 = np.dtype(np.float64)


def _on_tick(signum: int, frame: object) -> None:
    """``ITIMER_PROF`` fires every 1/10 of the per-call CPU limit of CPU time (never while idle).

    Counting ticks inside a call needs no system call per batch (arming a timer per call did
    cost a fifth of a small batch's time); a call is stopped after 9 to 10 tenths of its limit.
    """
    if _calling["on"]:
        _calling["ticks"] += 1
        if _calling["ticks"] >= TICKS_PER_LIMIT:
            _calling["on"] = False
            raise _CpuLimit


def _on_spent(signum: int, frame: object) -> None:
    """SIGXCPU: the lifetime CPU budget is spent; ask the trainer (in every reply) to replace us."""
    _state["spent"] = True
    if _state["shm"] is not None:
        _state["shm"].ctrl[RECYCLE] = 1


def _run(fn, args: list[np.ndarray], n: int) -> list[tuple[str, np.ndarray]]:  # fn: compute_reward
    """Call the program on one batch; its outputs as ``(n,)`` float64 arrays (scalars broadcast)."""
    _calling["ticks"], _calling["on"] = 0, True
    try:  # converting the outputs may run the program's code too: inside the CPU limit
        out = fn(*args)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
            reward, components = out
        else:
            reward, components = out, {}
        if len(components) > MAX_COMPONENTS:
            raise _OutputError(f"{len(components)} components; at most {MAX_COMPONENTS} are allowed")
        names = tuple(components)
        if names != _state["names"]:  # a program returns the same names call after call: check them once
            for name in names:
                if not isinstance(name, str) or not COMPONENT_NAME.fullmatch(name):
                    raise _OutputError(
                        f"component name {name!r:.80} is not allowed: names are 1-64 letters, digits, '_', '.' "
                        "or '-' (they become column names in metrics.csv)"
                    )
            _state["names"] = names
        outputs: list[tuple[str, np.ndarray]] = [("reward", reward), *components.items()]
        shape = (n,)
        for i, (name, value) in enumerate(outputs):
            if type(value) is np.ndarray and value.shape == shape:  # the usual case: one array per batch
                if value.dtype is FLOAT64:
                    continue  # already what the trainer reads
                if value.dtype.kind in "biuf":  # a float32 result of float32 observations, a mask, ...
                    outputs[i] = (name, value.astype(FLOAT64))
                    continue
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name!r} is not numeric: {type(value).__name__} ({exc})") from None
            arr = np.full(n, float(arr)) if arr.ndim == 0 else arr
            if arr.shape != shape:
                what = "the reward" if i == 0 else f"component {name!r}"
                raise _OutputError(
                    f"{what} has shape {arr.shape}; expected ({n},): one value per transition "
                    "(compute_reward gets a batch with a leading axis and must return one value per row)"
                )
            outputs[i] = (name, arr)
    finally:
        _calling["on"] = False
    return outputs


def _encode(outputs: list[tuple[str, np.ndarray]]) -> tuple[dict, bytes]:
    meta = [[name, list(arr.shape)] for name, arr in outputs]
    return {"ok": True, "outputs": meta}, b"".join(np.ascontiguousarray(arr).tobytes() for _, arr in outputs)


def _arrays(header: dict, payload: bytes) -> list[np.ndarray]:
    args, offset = [], 0
    for _, dtype, shape in header["arrays"]:
        count = math.prod(shape)
        args.append(np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += int(np.dtype(dtype).itemsize * count)
    return args


_program: dict[str, list[str]] = {"lines": []}


def _error(kind: str, exc: BaseException, filename: str, message: str | None = None) -> dict:
    """The program's error as feedback text: type and message (or ``message``), and the program's line it points at."""
    try:  # str(exc) runs the program's code (its own exception classes): it may fail too
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
        line = exc.lineno if isinstance(exc, SyntaxError) else (frames[-1].lineno if frames else None)
        text = message if message is not None else f"{type(exc).__name__}: {exc}"
    except BaseException:
        line, text = None, f"{type(exc).__name__} (its message could not be shown)"
    line = line if type(line) is int else None
    lines = _program["lines"]
    where = f" (line {line}: {lines[line - 1].strip()[:200]})" if line and 0 < line <= len(lines) else ""
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[:MAX_ERROR_CHARS]} [... {len(text) - MAX_ERROR_CHARS} characters cut]"
    return {"ok": False, "kind": kind, "error": f"{text}{where}", "line": line}


def _failure(exc: BaseException, filename: str, limits: dict) -> dict:
    if isinstance(exc, _CpuLimit):
        return _error("cpu", exc, filename, f"one call used up its CPU time ({limits['cpu_s_per_call']} s per call)")
    if isinstance(exc, MemoryError):
        return _error("memory", exc, filename, f"MemoryError: more than {limits['memory_mb']} MiB")
    if isinstance(exc, _OutputError):
        return _error("output", exc, filename, str(exc))
    return _error("call", exc, filename)


def main() -> None:
    read_fd, write_fd, shm_fd = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    limits = json.loads(sys.argv[4])
    reader = _Reader(read_fd, float(limits["spin_s"]))  # before the lockdown: it needs ioctl(FIONBIO)
    shm = _Shm(shm_fd, int(limits["shm_bytes"])) if shm_fd >= 0 else None
    _state["shm"] = shm
    layers = _isolate(limits, (read_fd, write_fd))
    layers += _lock_down(limits, (0, 1, 2, read_fd, write_fd))
    _send(write_fd, {"ok": True, "layers": layers})
    fn, filename = None, "<reward program>"
    while True:
        try:
            message = reader.wait(shm)
        except EOFError:
            return
        if message is None:  # a batch in shared memory
            assert shm is not None  # wait() returns None only for a batch in the shared-memory block
            try:
                if fn is None:
                    raise RuntimeError("no program loaded")
                outputs = _run(fn, shm.inputs, shm.n)
                if shm.reply(outputs):
                    shm.done(STATUS_SHM)
                    continue
                _send(write_fd, *_encode(outputs))  # unusual outputs: the pipe reply carries the details
            except BaseException as exc:  # the program's own errors become feedback
                _send(write_fd, _failure(exc, filename, limits))
            shm.done(STATUS_PIPE)
            continue
        header, payload = message
        op = header.get("op")
        if op == "exit":
            return
        if op == "wake":
            continue
        if op == "layout" and shm is not None:
            shm.layout(header)
            _send(write_fd, {"ok": True})
            continue
        if op == "load":
            filename = str(header.get("filename", filename))
            _program["lines"] = str(header["source"]).splitlines()
            try:
                fn = _load(header["source"], filename)
                _send(write_fd, {"ok": True})
            except BaseException as exc:  # the program's own errors become feedback
                _send(write_fd, _error("load", exc, filename))
            continue
        if op == "call":
            if fn is None:
                _send(write_fd, {"ok": False, "kind": "protocol", "error": "no program loaded"})
                continue
            try:
                _send(write_fd, *_encode(_run(fn, _arrays(header, payload), int(header["n"]))))
            except BaseException as exc:
                _send(write_fd, _failure(exc, filename, limits))
            continue
        _send(write_fd, {"ok": False, "kind": "protocol", "error": f"unknown op {op!r}"})


if __name__ == "__main__":
    _die_with_parent(int(json.loads(sys.argv[4])["parent"]))  # numpy is imported: no more waiting
    main()
