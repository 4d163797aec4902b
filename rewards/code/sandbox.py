"""Running model-written reward code in a locked-down worker process, batch by batch.

Threat model
------------
The program is untrusted input: a language model wrote it, and a model can be prompted (or can
stumble) into writing code that reads secrets, calls out, deletes files, forks, signals other
processes, or never returns. Assume the worst: the program takes its worker process over (runs
native code through ``ctypes``, walks frames into the worker's variables, switches the audit hook
off) and then does anything the kernel lets that process do, including speaking the worker's
side of the protocol however it likes. The trainer runs it only through :class:`Sandbox`, which
starts ``rewards/code/_worker.py`` and talks to it over two pipes and one shared-memory block.

Guaranteed by the kernel (x86_64 Linux with user namespaces, e.g. this project's machines), for
a trainer running as root (the worker becomes ``nobody``) or as a normal user alike:

* **System calls are an allow-list** (seccomp, installed before the program's first line): read,
  write and close on the descriptors the worker already holds (its two pipes, its log file as
  stdout and stderr, ``/dev/null`` as stdin; nothing else stays open), memory mapping, futex,
  select/poll, clocks and sleeps, random bytes, its own ids, signal handlers and mask, yielding,
  exit (``_worker.ALLOWED_SYSCALLS_X86_64``, 34 calls). Every other call fails with EPERM (other
  ABIs kill it), calls later kernels add included, so no file is opened, created, changed,
  chmod-ed, stat-ed or given extended attributes; no socket, process, thread, signal to any
  process (itself included), SysV or POSIX IPC object, ``prlimit``, priority, scheduling or
  affinity change, timer, inotify watch, mount or namespace call, io_uring or ``fallocate``.
* **Its own namespaces**: new PID, IPC and network namespaces (through a new user namespace when
  not root). The worker is PID 1 of its PID namespace and sees no other process: not the trainer,
  not another run's worker, not the user's processes; IPC objects and network interfaces it could
  reach are its own and vanish with it. A *keeper* process outside the namespace waits for it and
  runs no program code.
* **It dies with the trainer**: ``PR_SET_PDEATHSIG`` (SIGKILL) ties the keeper to the trainer (to
  the thread that started it: start a sandbox from a thread that outlives it) and the worker to
  the keeper, so neither outlives a killed trainer.
* **Resources**: ``RLIMIT_AS`` (default 1 GiB) turns unbounded allocation into a ``MemoryError``;
  ``RLIMIT_FSIZE`` caps its log; ``RLIMIT_NPROC`` is 0; ``RLIMIT_CPU`` caps a worker's life
  (``lifetime_cpu_s``, default 10 CPU minutes): past it the worker asks to be replaced and the
  trainer loads the program into a fresh one between two calls; about ``cpu_s_per_call + 1`` s
  later (whole seconds) the kernel kills it.
* **Secrets in the environment**: the worker starts with an empty environment (only thread-count
  variables and ``LC_ALL``), so ``OPENAI_API_KEY`` and friends never reach it; ``python -I``
  ignores ``PYTHON*``. Its scratch directory is its working directory, but it cannot open it.

Guaranteed by the trainer, whatever the worker sends (it trusts nothing that comes back):

* Every read and write has a deadline (``wall_s_per_call``, ``start_s``) and every reply a size
  cap; a worker that stops reading, floods the pipe, forges or garbles a reply, closes its pipe
  or dies ends as one :class:`SandboxError` naming the reason, and is killed. Nothing it writes
  raises anything else in the trainer or grows its memory without bound; the trainer never
  unpickles: replies are a JSON header and raw float64 bytes, validated field by field. Batches
  travel through a sealed memfd (``SHM_BYTES``) that only the trainer and the worker map (and the
  keeper, which runs no program code); the trainer copies the outputs out before checking them
  and never reads its own inputs back. The flag by which the worker asks for a wake-up only
  decides whether the trainer sends one (never blocking) message.
* **Outputs**: the reward and every component are ``(batch,)``, finite and within float32's range
  (they are summed into episode returns and logged); component names are 1-64 characters of
  ``[A-Za-z0-9_.-]``; at most ``MAX_COMPONENTS`` components.
* **Text**: the program's messages (errors, its prints in the log) are stripped of control
  characters and truncated (:func:`rewards.code.contract.clean_text`) before they reach an
  exception, the terminal, a log or a model.
* **Time**: a wall-clock limit per call (``wall_s_per_call``), enforced here, kills a worker whose
  call does not return; a CPU timer in the worker (``cpu_s_per_call``) gives Python-level loops a
  clear message first.

``tests/test_code_sandbox.py`` and ``tests/test_code_sandbox_user.py`` attack each guarantee above
with the trainer as root and as a normal user (and seccomp and the namespaces each alone).

A courtesy, not a boundary: the static contract (:mod:`rewards.code.contract`: named public numpy
modules, numpy's own objects) and the Python audit hook in the worker give clear messages for
the common forms; the kernel layers above hold without them (the tests switch the hook off).

Not guaranteed:

* CPU and memory *bandwidth*: a program may use its whole CPU budget and slow training that much;
  between calls it may spin until the next call's deadline or its lifetime CPU limit. With
  ``spin_s > 0`` an honest worker also keeps a core busy between the batches of a rollout.
* Kernel vulnerabilities reachable through the allowed system calls; this is a process sandbox,
  not a virtual machine. Side channels (timing, cache) are not addressed. Linux lets the
  ``uretprobe``/``uprobe`` calls past any seccomp filter by design: outside a probe they fail or
  kill the caller itself.
* The seccomp layer exists on x86_64 only; elsewhere, and where a normal user may not create user
  namespaces (a sysctl or a container can forbid it), the remaining layers apply, and
  :attr:`Sandbox.layers` (recorded in ``reward_program.json``) says which ones are in force. The
  filter checks call numbers, not arguments: whatever the allowed calls can do to the process
  itself (map executable memory, wait on futexes in the shared block) it can do.
* Shielding the program: processes outside any sandbox that run as the worker's user (``nobody``
  when the trainer is root, yours otherwise) can still signal or trace the worker. The sandbox
  keeps the program in; it does not protect it from the machine.
* What the program writes into its own reply: it computes the reward, so a *wrong* reward (code
  that runs cleanly but rewards the wrong behaviour) is the research question, not a security one.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from envs.errors import ConfigError
from rewards.code.contract import clean_text

FRAME = struct.Struct("<II")
WORKER = Path(__file__).with_name("_worker.py")
NOBODY = 65534
MAX_HEADER = 64 << 10  # a reply's JSON header (the worker cuts the program's messages to 2000 characters)
MAX_COMPONENTS = 32
MAX_MESSAGE = 2000  # characters of the program's text in one error message
BOUND = float(np.finfo(np.float32).max)  # |reward| and |component| values above this are refused
BOUND_SQUARED = BOUND * BOUND  # 1.2e77: finite in float64
COMPONENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
SHM_BYTES = 8 << 20  # shared batch memory per worker; larger batches go over the pipe
# The shared memory's layout (mirrored in _worker.py): int64 slots 64 bytes apart, names, data.
REQUEST, REPLY, SLEEPING, STATUS, N_OUT, NAMES_VERSION, NAMES_LEN, RECYCLE = (8 * i for i in range(8))
NAMES_AT, NAMES_MAX, DATA_AT = 2048, 2048, 4096
STATUS_SHM, STATUS_PIPE = 1, 2
LAYERS = frozenset({"uid:nobody", "userns", "netns", "ipcns", "pidns", "rlimits", "seccomp", "audit"})
PROGRAM_ERRORS = frozenset({"load", "call", "cpu", "memory", "output", "protocol"})  # kinds the worker reports
WAKE, EXIT = (FRAME.pack(len(m), 0) + m for m in (b'{"op": "wake"}', b'{"op": "exit"}'))


def _known(value: object, names: frozenset[str]) -> bool:
    return isinstance(value, str) and value in names


class SandboxError(ConfigError):
    """The reward program failed, broke a limit, or returned something unusable.

    Attributes:
        kind: ``"load"``, ``"call"``, ``"cpu"``, ``"wall"``, ``"memory"``, ``"output"``, ``"crash"``,
            or ``"protocol"`` (the worker sent something no honest worker sends; it was stopped).
        line: The program's line the error points at, when known.
    """

    def __init__(self, message: str, kind: str, line: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.line = line


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one worker (defaults match ``experiments/conf/reward/code.yaml``).

    Attributes:
        memory_mb: Address-space limit of the worker process (MiB).
        cpu_s_per_call: CPU seconds one ``compute_reward`` call may use.
        wall_s_per_call: Wall seconds the trainer waits for one call (or one read or write of the
            pipes) before killing the worker.
        lifetime_cpu_s: CPU seconds one worker may use (polling included). Past it the worker
            asks to be replaced, and the next call loads the program into a fresh worker; the
            kernel kills a worker that goes on for about ``cpu_s_per_call`` + 1 s more.
        log_mb: Size cap of the worker's log file (its stdout and stderr).
        start_s: Wall seconds allowed for the worker to start and lock down.
        spin_s: How long each side polls for the other's next message before sleeping (saves a
            scheduler wake-up per batch, which costs more than a small batch's reward; 0 never
            polls). The worker polls between the batches of a rollout, so it keeps a core busy
            then: use 0 when more runs than half the cores share a machine.
        audit: Install the Python audit hook that turns forbidden operations into clear messages.
            The kernel layers do not depend on it (the tests switch it off to check them alone).
    """

    memory_mb: int = 1024
    cpu_s_per_call: float = 2.0
    wall_s_per_call: float = 5.0
    lifetime_cpu_s: float = 600.0
    log_mb: int = 16
    start_s: float = 30.0
    spin_s: float = 0.002
    audit: bool = True


@dataclass
class RewardOutput:
    """One batch's result: ``reward`` ``(batch,)`` float64 and components ``{name: (batch,)}``."""

    reward: np.ndarray
    components: dict[str, np.ndarray]


class Sandbox:
    """One locked-down worker running one reward program (see the module docstring).

    Args:
        limits: Resource limits.
        scratch_root: Where the worker's scratch directory is made (default: the system temp dir).
        layers_off: For tests only: kernel layers to leave out (``"seccomp"``, ``"namespaces"``),
            to check that each other layer holds alone. Never used by a run.

    Use as a context manager, or call :meth:`close`. :meth:`load` runs the program's top level;
    :meth:`call` sends a batch and returns validated arrays.
    """

    # the shared batch memory of the current worker (set by _make_shm, cleared by _drop_shm)
    _mm: mmap.mmap | None
    _ctrl: memoryview | None  # int64 control slots (a memoryview: 4x cheaper per read than a numpy array)
    _inputs: list[np.ndarray]  # views where the next batch's obs, action, next_obs go
    _spans: list[tuple[int, int]]  # their byte ranges (start, end) in the shared memory
    _out: np.ndarray | None  # float64 view of the worker's outputs
    _layout_key: tuple[Any, ...] | None  # dtypes and shapes of the laid-out batch (obs, action, next_obs)
    _names: list[str]  # output names of the last shared-memory reply ("reward" first)
    _names_version: int
    _seq: int

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        scratch_root: str | Path | None = None,
        *,
        layers_off: tuple[str, ...] = (),
    ) -> None:
        unknown = set(layers_off) - {"seccomp", "namespaces"}
        if unknown:
            raise ValueError(f"layers_off: unknown layer(s) {sorted(unknown)}; known: seccomp, namespaces")
        self.limits = limits or SandboxLimits()
        self.layers_off = tuple(layers_off)
        self.scratch = Path(tempfile.mkdtemp(prefix="rewardlab-sandbox-", dir=scratch_root))
        self.log_path = self.scratch / "worker.log"
        self.layers: list[str] = []
        self.calls = 0
        self.restarts = 0  # workers replaced after spending their lifetime CPU
        self._proc: subprocess.Popen | None = None
        self._w = self._r = self._log = -1
        self._buf = bytearray()
        self._recycle = False
        self._filename = "<reward program>"
        self._source: str | None = None
        self._mm = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._recycle, self._buf = False, bytearray()
        shm_fd = self._make_shm()
        to_worker_r, self._w = os.pipe()
        self._r, from_worker_w = os.pipe()
        fds = (to_worker_r, from_worker_w) + ((shm_fd,) if shm_fd >= 0 else ())  # the worker's ends
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
        config = asdict(self.limits) | {"shm_bytes": SHM_BYTES, "parent": os.getpid(), "off": list(self.layers_off)}
        args = [str(WORKER), str(to_worker_r), str(from_worker_w), str(shm_fd), json.dumps(config)]
        try:
            if os.geteuid() == 0:
                os.chown(self.scratch, NOBODY, NOBODY)
            flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            self._log = os.open(self.log_path, flags, 0o600)  # kept open here: its tail is read from this fd
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-u", *args],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                env=env,
                cwd=self.scratch,
                pass_fds=fds,
                close_fds=True,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the trainer, which stops us
            )
        finally:
            for fd in fds:
                os.close(fd)
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)  # every write waits in select, with a deadline
        hello, _ = self._receive(self.limits.start_s, "start")
        layers = hello.get("layers")
        if hello.get("ok") is not True or not isinstance(layers, list) or not all(_known(x, LAYERS) for x in layers):
            self._malformed("start", "a malformed greeting")
        self.layers = list(layers)

    def _make_shm(self) -> int:
        """A fresh shared batch memory (a sealed memfd) for a new worker; -1 where the OS has none."""
        self._drop_shm()
        self._seq, self._layout_key, self._names_version, self._names = 0, None, 0, []
        if not hasattr(os, "memfd_create"):
            return -1
        fd = os.memfd_create("rewardlab-sandbox", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, SHM_BYTES)
        # sealed: nobody can shrink it under the trainer's mapping (a SIGBUS here)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self._mm = mmap.mmap(fd, SHM_BYTES)
        self._ctrl = memoryview(self._mm).cast("q")
        return fd

    def _drop_shm(self) -> None:
        mm, ctrl = getattr(self, "_mm", None), getattr(self, "_ctrl", None)
        self._mm, self._ctrl, self._inputs, self._spans, self._out = None, None, [], [], None
        if ctrl is not None:
            ctrl.release()
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view is still referenced somewhere; the GC unmaps it
                pass

    def close(self) -> None:
        """Stop the worker and remove its scratch directory (safe to call twice)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            if self._write(EXIT, time.monotonic() + 0.5) is not None:
                proc.kill()
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()  # the keeper; the worker dies with it (PR_SET_PDEATHSIG)
                proc.wait()
        fds, self._w, self._r, self._log = (self._w, self._r, self._log), -1, -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        self._drop_shm()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self.close()

    @property
    def alive(self) -> bool:
        """Whether the worker process is running."""
        return self._proc is not None and self._proc.poll() is None

    # --- program -----------------------------------------------------------------------------

    def load(self, source: str, filename: str = "<reward program>") -> None:
        """Run the program's top level in the worker and find ``compute_reward``.

        Raises:
            SandboxError: The program did not load (its error and line are in the message).
        """
        self._filename, self._source = filename, source
        if not self.alive:
            self._restart()
        self._send({"op": "load", "source": source, "filename": filename}, "load")
        reply, _ = self._receive(self.limits.wall_s_per_call, "load")
        if reply.get("ok") is not True:
            message, _, line = self._program_error(reply, "load")
            raise SandboxError(f"{filename} did not load: {message}", "load", line)

    def _restart(self) -> None:
        self.close()
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._start()

    def call(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> RewardOutput:
        """Score a batch: ``obs``/``next_obs`` ``(batch, *obs_shape)``, ``action`` ``(batch, *act_shape)``.

        Raises:
            SandboxError: The program raised, broke a limit (the worker is then stopped; the next
                call starts a fresh one), returned rewards of the wrong shape, non-finite or out of
                range values, or its worker broke the protocol.
        """
        if self._source is None:
            raise RuntimeError("Sandbox.call before Sandbox.load")
        proc = self._proc  # no system call here: a worker stopped by this class has its returncode set
        if self._recycle or proc is None or proc.returncode is not None:  # spent its lifetime CPU, or stopped
            self.restarts += int(self._recycle)
            self._restart()
            self.load(self._source, self._filename)
        n = int(obs.shape[0])
        arrays = [("obs", np.asarray(obs)), ("action", np.asarray(action)), ("next_obs", np.asarray(next_obs))]
        if self._ctrl is not None and self._use_shm(arrays, n):
            return self._call_shm(arrays, n)
        arrays = [(k, np.ascontiguousarray(a)) for k, a in arrays]
        header = {"op": "call", "n": n, "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays]}
        self._send(header, "call", *(a.data.cast("B") for _, a in arrays))
        return self._reply(n)

    def _reply(self, n: int) -> RewardOutput:
        reply, payload = self._receive(self.limits.wall_s_per_call, "call", (MAX_COMPONENTS + 1) * n * 8)
        self.calls += 1
        if reply.get("ok") is not True:
            message, kind, line = self._program_error(reply, "call")
            raise SandboxError(f"{self._filename}: {message}", kind, line)
        outputs = reply.get("outputs")
        if not isinstance(outputs, list) or not 1 <= len(outputs) <= MAX_COMPONENTS + 1:
            self._malformed("call", "a reply without its outputs")
        if not all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and x[1] == [n] for x in outputs):
            self._malformed("call", "outputs of the wrong form")
        names = [str(x[0]) for x in outputs]
        self._check_names(names)
        if len(payload) != 8 * n * len(names):
            self._malformed("call", "a payload of the wrong size")
        return self._finish(names, np.frombuffer(payload, np.float64).reshape(len(names), n).copy(), n)

    def _program_error(self, reply: dict, what: str) -> tuple[str, str, int | None]:
        """The worker's report of the program's error, checked and cleaned: (message, kind, line)."""
        error, kind, line = reply.get("error"), reply.get("kind", "call"), reply.get("line")
        if reply.get("ok") is not False or not isinstance(error, str) or not _known(kind, PROGRAM_ERRORS):
            self._malformed(what, "a reply of the wrong form")
        lines = (self._source or "").count("\n") + 1
        line = line if type(line) is int and 0 < line <= lines else None
        return clean_text(error, MAX_MESSAGE), str(kind), line

    def _check_names(self, names: list[str]) -> None:
        ok = names[0] == "reward" and len(set(names)) == len(names)
        if not ok or not all(COMPONENT_NAME.fullmatch(x) for x in names[1:]):
            self._malformed("call", "output names no program can return")

    # --- shared memory -----------------------------------------------------------------------

    def _use_shm(self, arrays: list[tuple[str, np.ndarray]], n: int) -> bool:
        """Lay the batch out in shared memory (telling the worker when the layout changes); False if it cannot."""
        if self._mm is None:
            return False
        (_, a), (_, b), (_, c) = arrays
        key = (a.dtype, a.shape, b.dtype, b.shape, c.dtype, c.shape)
        if key == self._layout_key:
            return True
        if any(a.dtype.kind not in "biuf" for _, a in arrays):
            return False
        at = DATA_AT
        spec: list[list[Any]] = []  # [name, dtype, shape, byte offset] per array, as the worker reads them
        for name, a in arrays:
            spec.append([name, a.dtype.str, list(a.shape), at])
            at += -(-a.nbytes // 64) * 64
        out_values = (MAX_COMPONENTS + 1) * n
        if at + 8 * out_values > SHM_BYTES:
            return False
        self._send({"op": "layout", "n": n, "arrays": spec, "out_at": at, "out_values": out_values}, "layout")
        reply, _ = self._receive(self.limits.wall_s_per_call, "layout")
        if reply.get("ok") is not True:
            self._malformed("layout", "a refusal of the batch layout")
        self._inputs = [
            np.frombuffer(self._mm, a.dtype, count=a.size, offset=off).reshape(a.shape)
            for (_, a), (_, _, _, off) in zip(arrays, spec, strict=True)
        ]
        self._spans = [(off, off + a.nbytes) for (_, a), (_, _, _, off) in zip(arrays, spec, strict=True)]
        self._out = np.frombuffer(self._mm, np.float64, count=out_values, offset=at)
        self._layout_key = key
        return True

    def _call_shm(self, arrays: list[tuple[str, np.ndarray]], n: int) -> RewardOutput:
        ctrl, mm, out = self._ctrl, self._mm, self._out
        if ctrl is None or mm is None or out is None:
            raise RuntimeError("Sandbox._call_shm before the batch layout was set up (_use_shm)")
        for (start, end), view, (_, a) in zip(self._spans, self._inputs, arrays, strict=True):
            try:  # a C-contiguous array: a plain byte copy (4x cheaper than np.copyto for small batches)
                mm[start:end] = a  # type: ignore[call-overload]  # (a buffer) the layout key fixed its byte count
            except (BufferError, ValueError, TypeError):  # a strided view: numpy copies element-wise
                np.copyto(view, a, casting="no")
        self._seq += 1
        seq = self._seq
        ctrl[REQUEST] = seq  # after the data: x86 keeps stores in order, so the worker sees the batch
        if ctrl[SLEEPING]:  # the worker's word: at worst a wake-up too many, never a blocked write
            self._wake()
        spin_until = time.perf_counter() + self.limits.spin_s
        deadline, nap, spins = None, 5e-5, 0
        while ctrl[REPLY] != seq:
            if time.perf_counter() < spin_until:
                spins += 1
                if spins % 8 == 0:  # when processes share a core, the worker may be waiting for this one
                    os.sched_yield()
                continue
            deadline = deadline or time.monotonic() + self.limits.wall_s_per_call
            left = deadline - time.monotonic()
            if left <= 0:
                self._too_slow("call")
            if select.select([self._r], [], [], min(left, nap))[0]:  # a pipe reply on its way, or the worker died
                try:
                    chunk = os.read(self._r, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._died("call")
                self._buf += chunk
                if len(self._buf) > FRAME.size + MAX_HEADER + (MAX_COMPONENTS + 1) * n * 8:  # the largest honest reply
                    self._malformed("call", "more data than a reply")
            nap = min(nap * 2, 1e-3)
        if ctrl[RECYCLE]:
            self._recycle = True
        status = int(ctrl[STATUS])
        if status == STATUS_PIPE:
            return self._reply(n)
        if status != STATUS_SHM or self._buf:
            self._malformed("call", "an unknown reply status" if self._buf == b"" else "data it did not announce")
        self.calls += 1
        k = int(ctrl[N_OUT])
        if not 1 <= k <= MAX_COMPONENTS + 1:
            self._malformed("call", "an impossible number of outputs")
        if int(ctrl[NAMES_VERSION]) != self._names_version:
            size = int(ctrl[NAMES_LEN])
            try:
                names = json.loads(bytes(mm[NAMES_AT : NAMES_AT + size])) if 0 < size <= NAMES_MAX else None
            except (ValueError, RecursionError):
                names = None
            if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
                self._malformed("call", "unreadable output names")
            self._check_names(["reward", *names])
            self._names, self._names_version = ["reward", *names], int(ctrl[NAMES_VERSION])
        if len(self._names) != k:
            self._malformed("call", "a number of outputs that does not match their names")
        return self._finish(self._names, out[: k * n].reshape(k, n).copy(), n)

    def _finish(self, names: list[str], values: np.ndarray, n: int) -> RewardOutput:
        """Refuse non-finite and out-of-range values, naming the output and the batch index."""
        flat = values.reshape(-1)
        # one BLAS call: a sum of squares <= BOUND**2 bounds every |value| (NaN and inf fail it, and
        # so does a batch whose values are in range but large together: the exact check decides those)
        if not np.dot(flat, flat) <= BOUND_SQUARED and not float(np.abs(values).max()) <= BOUND:
            ok = np.abs(values) <= BOUND
            row, i = (int(x[0]) for x in np.nonzero(~ok))
            value = values[row, i]
            what = "the reward" if row == 0 else f"component {names[row]!r}"
            problem = "is not finite" if not np.isfinite(value) else f"is out of range (beyond ±{BOUND:.4g})"
            raise SandboxError(
                f"{self._filename}: {what} {problem} ({value}) at batch index {i} "
                f"({int((~ok[row]).sum())} of {n} values)",
                "output",
            )
        components = {name: values[i] for i, name in enumerate(names[1:], 1)} if len(names) > 1 else {}
        return RewardOutput(reward=values[0], components=components)

    # --- wire --------------------------------------------------------------------------------

    def _write(self, data: bytes | memoryview, deadline: float) -> str | None:
        """Write all of ``data`` by ``deadline``; None when done, else ``"full"`` or ``"closed"``."""
        view = memoryview(data).cast("B")
        while view:
            try:
                view = view[os.write(self._w, view) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self._w], [], left)[1]:
                    return "full"
            except OSError:  # EPIPE: the worker is gone
                return "closed"
        return None

    def _send(self, header: dict, what: str, *payload: memoryview) -> None:
        head = json.dumps(header).encode()
        size = sum(len(p) for p in payload)
        deadline = time.monotonic() + self.limits.wall_s_per_call
        chunks: list[bytes | memoryview] = [FRAME.pack(len(head), size) + head, *payload]
        for data in chunks:
            result = self._write(data, deadline)
            if result == "closed":
                self._died(what)
            if result == "full":
                self._kill()
                raise SandboxError(
                    f"{self._filename}: the sandbox worker stopped reading during {what} "
                    f"(for {self.limits.wall_s_per_call} s); it was stopped",
                    "wall",
                )

    def _wake(self) -> None:
        try:
            os.write(self._w, WAKE)  # small enough to be written whole or not at all
        except BlockingIOError:
            pass  # the pipe is full: the worker has input waiting anyway
        except OSError:
            self._died("call")

    def _receive(self, timeout: float, what: str, max_payload: int = 0) -> tuple[dict, bytes]:
        """One reply frame: its JSON header (a dict) and payload, or a SandboxError; never anything else."""
        deadline = time.monotonic() + timeout
        head_len, payload_len = FRAME.unpack(self._read(FRAME.size, deadline, what))
        if head_len > MAX_HEADER or payload_len > max_payload:
            self._malformed(what, f"an oversized reply ({head_len} + {payload_len} bytes)")
        head = self._read(head_len, deadline, what)  # outside the try: its SandboxError is a ValueError too
        try:
            header = json.loads(head)
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict):
            self._malformed(what, "a reply that is not a JSON object")
        payload = self._read(payload_len, deadline, what) if payload_len else b""
        if self._buf:
            self._malformed(what, "more than one reply")
        if header.get("recycle") is True:
            self._recycle = True
        return header, payload

    def _read(self, n: int, deadline: float, what: str) -> bytes:
        spin_until = time.perf_counter() + self.limits.spin_s
        while len(self._buf) < n:
            try:
                chunk = os.read(self._r, max(n - len(self._buf), 1 << 16))
            except BlockingIOError:  # see _worker._Reader: a short poll saves a wake-up per batch
                if time.perf_counter() < spin_until:
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._r], [], [], left)[0]:
                    self._too_slow(what)
                continue
            except OSError:
                self._died(what)
            if not chunk:
                self._died(what)
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _too_slow(self, what: str) -> NoReturn:
        """Stop a worker that outran its wall-clock limit and say so."""
        self._kill()
        limit = self.limits.start_s if what == "start" else self.limits.wall_s_per_call
        raise SandboxError(
            f"{self._filename}: {what} took longer than {limit} s of wall time; the worker was stopped "
            "(raise reward.limits.wall_s_per_call if the program is slow but correct)",
            "wall",
        )

    def _malformed(self, what: str, detail: str) -> NoReturn:
        """Stop a worker that broke the protocol (only a program that took it over does that)."""
        self._kill()
        raise SandboxError(
            f"{self._filename}: the sandbox worker sent {detail} during {what}; it was stopped "
            "(the program interfered with its worker)",
            "protocol",
        )

    def _kill(self) -> None:
        self._buf = bytearray()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()  # the keeper; the worker dies with it (PR_SET_PDEATHSIG)
            self._proc.wait()

    def _died(self, what: str) -> NoReturn:
        proc, code = self._proc, None
        if proc is not None:
            try:
                code = proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self._kill()
                raise SandboxError(
                    f"{self._filename}: the sandbox worker closed its pipe during {what} but went on running; "
                    f"it was stopped{self._log_tail()}",
                    "protocol",
                ) from None
        reason = f"exit code {code}"
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = {"SIGXCPU": "its lifetime CPU limit", "SIGSYS": "a forbidden system call"}.get(name)
            reason = f"killed by {name} ({why})" if why else f"killed by {name}"
        self._buf = bytearray()
        raise SandboxError(
            f"{self._filename}: the sandbox worker died during {what}, {reason}{self._log_tail()}", "crash"
        )

    def _log_tail(self, chars: int = 1500) -> str:
        """The end of the worker's log (the program's prints), cleaned; read from the trainer's own descriptor."""
        try:
            size = os.fstat(self._log).st_size
            data = os.pread(self._log, 4 * chars, max(0, size - 4 * chars))
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")[-chars:].strip()
        return f"; its log ends with:\n{clean_text(text, chars)}" if text else ""
