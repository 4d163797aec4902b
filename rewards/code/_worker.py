"""The sandbox worker: runs one untrusted reward program, locked down (see :mod:`rewards.code.sandbox`).

Started by :class:`rewards.code.sandbox.Sandbox` as ``python -I -u _worker.py READ_FD WRITE_FD SHM_FD LIMITS_JSON``
with an empty environment, inside a fresh scratch directory. It imports only the standard
library and numpy, so it starts fast and never loads the trainer's code. Order matters:

1. import numpy (and its submodules a program may use) while files can still be opened;
2. drop to the ``nobody`` user when started as root, enter new user + network namespaces;
3. set resource limits (address space, CPU seconds over the worker's life, file size, processes);
4. install the seccomp filter (no opening files, sockets, processes, signals to others, ...);
5. say "ready", then receive the program's source and only now run it (its top level included).

Messages, both ways over the pipes: ``<II`` (header length, payload length), a JSON header, raw
bytes. Batches go through shared memory (``SHM_FD``, a memfd the trainer made; -1 for none): the
trainer writes the arrays where a ``layout`` message said, bumps a request counter, and this
worker, polling the counter, writes the reward and components back and bumps a reply counter;
errors and unusual outputs still go over the pipe. The trainer never unpickles anything from
here; it parses JSON and reads float64 arrays, and checks both.
"""

from __future__ import annotations

import ctypes
import json
import math
import mmap
import os
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
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
EPERM = 1

# x86_64 system calls the reward code never needs: files by path, sockets, processes, signals to
# other processes, namespaces, mounts, modules, io_uring (which would bypass this filter), ...
DENIED_SYSCALLS_X86_64 = {
    "open": 2, "stat": 4, "lstat": 6, "ioctl": 16, "access": 21, "sendfile": 40, "socket": 41, "connect": 42,
    "accept": 43, "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "shutdown": 48, "bind": 49,
    "listen": 50, "getsockname": 51, "getpeername": 52, "socketpair": 53, "setsockopt": 54, "getsockopt": 55,
    "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62, "truncate": 76, "ftruncate": 77,
    "getdents": 78, "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86,
    "unlink": 87, "symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93,
    "lchown": 94, "ptrace": 101, "syslog": 103, "setuid": 105, "setgid": 106, "setpgid": 109, "setsid": 112,
    "setreuid": 113, "setregid": 114, "setgroups": 116, "setresuid": 117, "setresgid": 119, "utime": 132,
    "mknod": 133, "personality": 135, "prctl": 157, "setrlimit": 160, "chroot": 161, "sync": 162, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "tkill": 200, "getdents64": 217, "tgkill": 234, "utimes": 235,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "migrate_pages": 256, "openat": 257,
    "mkdirat": 258, "mknodat": 259, "fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263,
    "renameat": 264, "linkat": 265, "symlinkat": 266, "readlinkat": 267, "fchmodat": 268, "faccessat": 269,
    "unshare": 272, "splice": 275, "move_pages": 279, "utimensat": 280, "accept4": 288, "perf_event_open": 298,
    "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "renameat2": 316,
    "memfd_create": 319, "kexec_file_load": 320, "bpf": 321, "execveat": 322, "userfaultfd": 323, "statx": 332,
    "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "pidfd_open": 434, "clone3": 435, "openat2": 437, "pidfd_getfd": 438, "faccessat2": 439,
    "process_madvise": 440, "mount_setattr": 442, "memfd_secret": 447,
}  # fmt: skip

SAFE_BUILTINS = (
    "abs all any bool dict divmod enumerate filter float frozenset int isinstance len list map max min "
    "print range reversed round set slice sorted str sum tuple zip ArithmeticError AssertionError "
    "Exception IndexError KeyError TypeError ValueError ZeroDivisionError FloatingPointError True False None"
).split()
ALLOWED_MODULES = {"numpy": np, "math": math}


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
            if polls % 64 == 0:
                os.sched_yield()  # when runs share cores, let a runnable process have this one
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
REQUEST, REPLY, SLEEPING, STATUS, N_OUT, NAMES_VERSION, NAMES_LEN = (8 * i for i in range(7))
NAMES_AT, NAMES_MAX, DATA_AT = 2048, 2048, 4096
STATUS_SHM, STATUS_PIPE = 1, 2  # the reply is in shared memory / is a message on the pipe


class _Shm:
    """This side of the shared batch memory (see the module docstring)."""

    def __init__(self, fd: int, size: int) -> None:
        self.mm = mmap.mmap(fd, size)
        os.close(fd)
        self.ctrl = np.frombuffer(self.mm, np.int64, count=DATA_AT // 8)
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

    def reply(self, outputs: list[tuple[str, np.ndarray]]) -> bool:
        """Write the outputs back; False (nothing written) when they do not fit the fast path."""
        n, out = self.n, self.out
        if out is None or len(outputs) * n > len(out) or any(a.shape != (n,) for _, a in outputs):
            return False
        names = [name for name, _ in outputs]
        if names != self.names:
            encoded = json.dumps(names[1:]).encode()
            if len(encoded) > NAMES_MAX:
                return False
            self.mm[NAMES_AT : NAMES_AT + len(encoded)] = encoded
            self.ctrl[NAMES_LEN] = len(encoded)
            self.ctrl[NAMES_VERSION] += 1
            self.names = names
        for i, (_, arr) in enumerate(outputs):
            out[i * n : (i + 1) * n] = arr
        self.ctrl[N_OUT] = len(outputs)
        return True

    def done(self, status: int) -> None:
        self.ctrl[STATUS] = status
        self.seen = int(self.ctrl[REQUEST])
        self.ctrl[REPLY] = self.seen  # last: the trainer reads everything above once it sees this


def _send(fd: int, header: dict, payload: bytes = b"") -> None:
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
    """BPF: wrong architecture -> kill; x32 ABI -> EPERM; denied syscall -> EPERM; else allow."""
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    denied = sorted(set(DENIED_SYSCALLS_X86_64.values()))
    n = len(denied)
    prog = [
        (ld_w_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq_k, 1, 0, AUDIT_ARCH_X86_64),
        (ret_k, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (ld_w_abs, 0, 0, 0),  # seccomp_data.nr
        (jge_k, n + 1, 0, 0x40000000),  # x32 ABI numbers: refuse all
    ]
    for i, nr in enumerate(denied):
        prog.append((jeq_k, n - i, 0, nr))  # jump to the EPERM return
    prog.append((ret_k, 0, 0, SECCOMP_RET_ALLOW))
    prog.append((ret_k, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    return prog


def _lock_down(limits: dict) -> list[str]:
    """Apply every layer; returns the names of the layers in force (recorded by the trainer)."""
    layers = []
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0:  # as root the program would own root's files: become nobody first
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        layers.append("uid:nobody")
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        layers.append("netns")
    mem = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = math.ceil(limits["lifetime_cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    fsize = int(limits["log_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full log fails the write instead of killing us
    layers.append("rlimits")
    if os.uname().machine == "x86_64":
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        prog = _seccomp_program()
        arr = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
        fprog = _SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
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
    if event.startswith(_AUDIT_DENIED):
        detail = f" {args[0]!r}" if args and isinstance(args[0], (str, bytes, int)) else ""
        raise PermissionError(f"sandbox: reward code may not use {event}{detail}")


# --- the program ---------------------------------------------------------------------------------


def _guarded_import(name: str, globals=None, locals=None, fromlist=(), level=0):
    root = name.partition(".")[0]
    if level != 0 or root not in ALLOWED_MODULES:
        raise ImportError(f"sandbox: only numpy and math may be imported, not {name!r}")
    module = sys.modules.get(name)
    if module is None:
        raise ImportError(f"sandbox: module {name!r} is not available")
    return module if fromlist else ALLOWED_MODULES[root]


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


TICKS_PER_LIMIT = 10
_calling = {"on": False, "ticks": 0}


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


def _run(fn, args: list[np.ndarray], n: int) -> list[tuple[str, np.ndarray]]:  # fn: compute_reward
    """Call the program on one batch; its outputs as float64 arrays (scalars broadcast to ``(n,)``)."""
    _calling["ticks"], _calling["on"] = 0, True
    try:
        out = fn(*args)
    finally:
        _calling["on"] = False
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        reward, components = out
    else:
        reward, components = out, {}
    outputs = []
    for name, value in [("reward", reward)] + [(str(k), v) for k, v in components.items()]:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name!r} is not numeric: {type(value).__name__} ({exc})") from None
        outputs.append((name, np.full(n, float(arr)) if arr.ndim == 0 else arr))
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
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    line = exc.lineno if isinstance(exc, SyntaxError) else (frames[-1].lineno if frames else None)
    lines = _program["lines"]
    where = f" (line {line}: {lines[line - 1].strip()})" if line and 0 < line <= len(lines) else ""
    text = message if message is not None else f"{type(exc).__name__}: {exc}"
    return {"ok": False, "kind": kind, "error": f"{text}{where}", "line": line}


def _failure(exc: BaseException, filename: str, limits: dict) -> dict:
    if isinstance(exc, _CpuLimit):
        return _error("cpu", exc, filename, f"one call used up its CPU time ({limits['cpu_s_per_call']} s per call)")
    if isinstance(exc, MemoryError):
        return _error("memory", exc, filename, f"MemoryError: more than {limits['memory_mb']} MiB")
    return _error("call", exc, filename)


def main() -> None:
    read_fd, write_fd, shm_fd = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    limits = json.loads(sys.argv[4])
    reader = _Reader(read_fd, float(limits["spin_s"]))  # before the lockdown: it needs ioctl(FIONBIO)
    shm = _Shm(shm_fd, int(limits["shm_bytes"])) if shm_fd >= 0 else None
    layers = _lock_down(limits)
    signal.signal(signal.SIGPROF, _on_tick)
    tick = float(limits["cpu_s_per_call"]) / TICKS_PER_LIMIT
    signal.setitimer(signal.ITIMER_PROF, tick, tick)
    _send(write_fd, {"ok": True, "layers": layers, "pid": os.getpid()})
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
    main()
