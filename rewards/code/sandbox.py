"""Running model-written reward code in a locked-down worker process, batch by batch.

Threat model
------------
The program is untrusted input: a language model wrote it, and a model can be prompted (or can
stumble) into writing code that reads secrets, calls out, deletes files, forks, or never returns.
The trainer runs it only through :class:`Sandbox`, which starts ``rewards/code/_worker.py`` and
talks to it over two pipes and one shared-memory block for the batches.

Defended, and by what (kernel mechanisms first; the Python-level checks give clear messages):

* **Reading or writing files** (secrets, the run directory, the source tree): the worker installs a
  seccomp filter before it runs a single line of the program; ``open``/``openat``/``creat``,
  path ``stat``, ``unlink``, ``rename``, ``mkdir``, ``chmod``, ``link`` and their relatives fail with
  EPERM. Files already open in the worker are only its two pipes and its log file (its stdout and
  stderr, capped by ``RLIMIT_FSIZE``). Started as root, it first becomes ``nobody``.
* **Network**: the worker enters a new (empty) network namespace when the kernel allows it, and the
  filter refuses ``socket``, ``connect``, ``bind``, ``sendto`` and the rest of the socket calls.
* **Secrets in the environment**: the worker starts with an empty environment (only thread-count
  variables), so ``OPENAI_API_KEY`` and friends never reach it; ``python -I`` ignores ``PYTHON*``.
* **Child processes and other processes**: ``fork``/``vfork``/``clone``/``clone3``/``execve`` are
  refused by the filter, ``RLIMIT_NPROC`` is 0; ``kill``/``tgkill``/``ptrace``/``process_vm_*`` are
  refused, so the trainer cannot be signalled or read.
* **Memory**: ``RLIMIT_AS`` (default 1 GiB) turns unbounded allocation into a ``MemoryError`` in the
  worker, reported as such.
* **Time**: per call, a CPU timer (``ITIMER_PROF``) interrupts Python-level loops with a clear
  message; a wall-clock limit enforced here, in the trainer, kills the worker (``SIGKILL``) when a
  call does not return (a C-level loop, a swallowed interrupt); ``RLIMIT_CPU`` caps its lifetime.
* **Bad outputs**: NaN/inf, wrong shapes and non-numeric values are refused here. The trainer never
  unpickles data from the worker: replies are a JSON header and raw float64 bytes, size-checked.
  Batches travel through a shared-memory block (a memfd of fixed size, ``SHM_BYTES``) that only
  the two processes map; the trainer copies the worker's outputs out of it before checking them,
  bounds every count and length it reads there, and never reads its own inputs back.
* **Patching numpy or builtins**: the program lives in its own process; whatever it patches there
  cannot reach the trainer's numpy. The static checks (:mod:`rewards.code.contract`) refuse the
  common forms up front.

Not defended:

* CPU and memory *bandwidth*: a program may use its whole CPU budget and slow training that much.
* Kernel vulnerabilities reachable through the allowed system calls (read/write on its pipes, mmap,
  futex, ...); this is a process sandbox, not a virtual machine.
* The seccomp layer exists on x86_64 only; elsewhere (and where unprivileged user namespaces are
  disabled) the remaining layers apply, and :attr:`Sandbox.layers` says which ones are in force.
* A *wrong* reward: code that runs cleanly but rewards the wrong behaviour is the research
  question, not a security one.
"""

from __future__ import annotations

import json
import mmap
import os
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
from typing import Any

import numpy as np

from envs.errors import ConfigError

FRAME = struct.Struct("<II")
WORKER = Path(__file__).with_name("_worker.py")
MAX_HEADER = 1 << 20
MAX_COMPONENTS = 32
SHM_BYTES = 8 << 20  # shared batch memory per worker; larger batches go over the pipe
# The shared memory's layout (mirrored in _worker.py): int64 slots 64 bytes apart, names, data.
REQUEST, REPLY, SLEEPING, STATUS, N_OUT, NAMES_VERSION, NAMES_LEN = (8 * i for i in range(7))
NAMES_AT, NAMES_MAX, DATA_AT = 2048, 2048, 4096
STATUS_SHM, STATUS_PIPE = 1, 2


class SandboxError(ConfigError):
    """The reward program failed, broke a limit, or returned something unusable.

    Attributes:
        kind: ``"load"``, ``"call"``, ``"cpu"``, ``"wall"``, ``"memory"``, ``"output"``, ``"crash"``.
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
        wall_s_per_call: Wall seconds the trainer waits for one call before killing the worker.
        lifetime_cpu_s: CPU seconds over the worker's life (kernel-enforced backstop).
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
    lifetime_cpu_s: float = 604800.0
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

    Use as a context manager, or call :meth:`close`. :meth:`load` runs the program's top level;
    :meth:`call` sends a batch and returns validated arrays.
    """

    # the shared batch memory of the current worker (set by _make_shm, cleared by _drop_shm)
    _mm: mmap.mmap | None
    _ctrl: np.ndarray | None  # (DATA_AT // 8,) int64 control slots
    _inputs: list[np.ndarray]  # views where the next batch's obs, action, next_obs go
    _out: np.ndarray | None  # float64 view of the worker's outputs
    _layout_key: tuple[tuple[str, tuple[int, ...]], ...] | None  # dtypes and shapes of the laid-out batch
    _names: list[str]  # output names of the last shared-memory reply ("reward" first)
    _names_version: int
    _seq: int

    def __init__(self, limits: SandboxLimits | None = None, scratch_root: str | Path | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.scratch = Path(tempfile.mkdtemp(prefix="rewardlab-sandbox-", dir=scratch_root))
        self.log_path = self.scratch / "worker.log"
        self.layers: list[str] = []
        self.calls = 0
        self._proc: subprocess.Popen | None = None
        self._filename = "<reward program>"
        self._source: str | None = None
        self._mm: mmap.mmap | None = None
        self._start()

    # --- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        shm_fd = self._make_shm()
        if os.geteuid() == 0:
            os.chown(self.scratch, 65534, 65534)
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-u",
                    str(WORKER),
                    str(to_worker_r),
                    str(from_worker_w),
                    str(shm_fd),
                    json.dumps(asdict(self.limits) | {"shm_bytes": SHM_BYTES}),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.scratch,
                pass_fds=(to_worker_r, from_worker_w) + ((shm_fd,) if shm_fd >= 0 else ()),
                close_fds=True,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the trainer, which stops us
            )
        os.close(to_worker_r)
        os.close(from_worker_w)
        if shm_fd >= 0:
            os.close(shm_fd)
        self._w, self._r = to_worker_w, from_worker_r
        self._buf = b""
        os.set_blocking(self._r, False)
        hello, _ = self._receive(self.limits.start_s, "start")
        self.layers = list(hello.get("layers", []))

    def _make_shm(self) -> int:
        """A fresh shared batch memory (a memfd) for a new worker; -1 where the OS has none."""
        self._drop_shm()
        self._seq, self._layout_key, self._names_version, self._names = 0, None, 0, []
        if not hasattr(os, "memfd_create"):
            return -1
        fd = os.memfd_create("rewardlab-sandbox", os.MFD_CLOEXEC)
        os.ftruncate(fd, SHM_BYTES)
        self._mm = mmap.mmap(fd, SHM_BYTES)
        self._ctrl = np.frombuffer(self._mm, np.int64, count=DATA_AT // 8)
        return fd

    def _drop_shm(self) -> None:
        mm = getattr(self, "_mm", None)
        self._mm, self._ctrl, self._inputs, self._out = None, None, [], None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view is still referenced somewhere; the GC unmaps it
                pass

    def close(self) -> None:
        """Stop the worker and remove its scratch directory (safe to call twice)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    self._send({"op": "exit"})
                    proc.wait(timeout=1.0)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
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
        self._send({"op": "load", "source": source, "filename": filename})
        reply, _ = self._receive(self.limits.wall_s_per_call, "load")
        if not reply.get("ok"):
            raise SandboxError(f"{filename} did not load: {reply.get('error')}", "load", reply.get("line"))

    def _restart(self) -> None:
        self.close()
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._start()

    def call(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> RewardOutput:
        """Score a batch: ``obs``/``next_obs`` ``(batch, *obs_shape)``, ``action`` ``(batch, *act_shape)``.

        Raises:
            SandboxError: The program raised, broke a limit (the worker is then stopped; the next
                call starts a fresh one), or returned rewards of the wrong shape or non-finite values.
        """
        if self._source is None:
            raise RuntimeError("Sandbox.call before Sandbox.load")
        if not self.alive:
            self.load(self._source, self._filename)
        n = int(obs.shape[0])
        arrays = [("obs", np.asarray(obs)), ("action", np.asarray(action)), ("next_obs", np.asarray(next_obs))]
        if self._ctrl is not None and self._use_shm(arrays, n):
            return self._call_shm(arrays, n)
        arrays = [(k, np.ascontiguousarray(a)) for k, a in arrays]
        header = {"op": "call", "n": n, "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays]}
        self._send(header, b"".join(a.tobytes() for _, a in arrays))
        return self._reply(n)

    def _reply(self, n: int) -> RewardOutput:
        reply, payload = self._receive(self.limits.wall_s_per_call, "call", max_payload=(MAX_COMPONENTS + 1) * n * 8)
        self.calls += 1
        if not reply.get("ok"):
            kind = str(reply.get("kind", "call"))
            raise SandboxError(f"{self._filename}: {reply.get('error')}", kind, reply.get("line"))
        return self._parse(reply, payload, n)

    # --- shared memory -----------------------------------------------------------------------

    def _use_shm(self, arrays: list[tuple[str, np.ndarray]], n: int) -> bool:
        """Lay the batch out in shared memory (telling the worker when the layout changes); False if it cannot."""
        if self._mm is None:
            return False
        key = tuple((a.dtype.str, a.shape) for _, a in arrays)
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
        self._send({"op": "layout", "n": n, "arrays": spec, "out_at": at, "out_values": out_values})
        reply, _ = self._receive(self.limits.wall_s_per_call, "layout")
        if not reply.get("ok"):
            return False
        self._inputs = [
            np.frombuffer(self._mm, a.dtype, count=a.size, offset=off).reshape(a.shape)
            for (_, a), (_, _, _, off) in zip(arrays, spec, strict=True)
        ]
        self._out = np.frombuffer(self._mm, np.float64, count=out_values, offset=at)
        self._layout_key = key
        return True

    def _call_shm(self, arrays: list[tuple[str, np.ndarray]], n: int) -> RewardOutput:
        ctrl, mm, out = self._ctrl, self._mm, self._out
        if ctrl is None or mm is None or out is None:
            raise RuntimeError("Sandbox._call_shm before the batch layout was set up (_use_shm)")
        for view, (_, a) in zip(self._inputs, arrays, strict=True):
            np.copyto(view, a, casting="no")
        self._seq += 1
        seq = self._seq
        ctrl[REQUEST] = seq  # after the data: x86 keeps stores in order, so the worker sees the batch
        if ctrl[SLEEPING]:
            self._send({"op": "wake"})
        spin_until = time.perf_counter() + self.limits.spin_s
        deadline, nap = None, 5e-5
        while ctrl[REPLY] != seq:
            if time.perf_counter() < spin_until:
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
            nap = min(nap * 2, 1e-3)
        if ctrl[STATUS] != STATUS_SHM:
            return self._reply(n)
        self.calls += 1
        k = int(ctrl[N_OUT])
        if not 1 <= k <= MAX_COMPONENTS + 1:
            raise SandboxError(f"{self._filename}: malformed reply from the worker", "output")
        if int(ctrl[NAMES_VERSION]) != self._names_version:
            size = int(ctrl[NAMES_LEN])
            names = json.loads(bytes(mm[NAMES_AT : NAMES_AT + max(0, min(size, NAMES_MAX))]) or b"null")
            if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
                raise SandboxError(f"{self._filename}: malformed reply from the worker", "output")
            self._names, self._names_version = ["reward", *names], int(ctrl[NAMES_VERSION])
        if len(self._names) != k or len(set(self._names)) != k:
            raise SandboxError(f"{self._filename}: malformed reply from the worker", "output")
        return self._finish(self._names, out[: k * n].reshape(k, n).copy(), n)

    def _parse(self, reply: dict, payload: bytes, n: int) -> RewardOutput:
        outputs = reply.get("outputs")
        if not isinstance(outputs, list) or not outputs or len(outputs) > MAX_COMPONENTS + 1:
            raise SandboxError(f"{self._filename}: malformed reply from the worker", "output")
        names = [str(item[0]) for item in outputs]
        for name, item in zip(names, outputs, strict=True):
            shape = tuple(int(s) for s in item[1])
            if shape != (n,):
                what = "the reward" if name == "reward" else f"component {name!r}"
                raise SandboxError(
                    f"{self._filename}: {what} has shape {shape}; expected ({n},): one value per transition "
                    "(compute_reward gets a batch with a leading axis and must return one value per row)",
                    "output",
                )
        if len(payload) != 8 * n * len(names) or len(set(names)) != len(names):
            raise SandboxError(f"{self._filename}: malformed reply from the worker", "output")
        return self._finish(names, np.frombuffer(payload, np.float64).reshape(len(names), n), n)

    def _finish(self, names: list[str], values: np.ndarray, n: int) -> RewardOutput:
        """Refuse non-finite values, naming the output and the batch index."""
        finite = np.isfinite(values)
        if not finite.all():
            row, i = (int(x[0]) for x in np.nonzero(~finite))
            what = "the reward" if row == 0 else f"component {names[row]!r}"
            raise SandboxError(
                f"{self._filename}: {what} is not finite ({values[row, i]}) at batch index {i} "
                f"({int((~finite[row]).sum())} of {n} values)",
                "output",
            )
        return RewardOutput(reward=values[0], components=dict(zip(names[1:], values[1:], strict=True)))

    # --- wire --------------------------------------------------------------------------------

    def _send(self, header: dict, payload: bytes = b"") -> None:
        head = json.dumps(header).encode()
        data = memoryview(FRAME.pack(len(head), len(payload)) + head + payload)
        try:
            while data:
                data = data[os.write(self._w, data) :]
        except BrokenPipeError:
            self._died("send")

    def _receive(self, timeout: float, what: str, max_payload: int = MAX_HEADER) -> tuple[dict, bytes]:
        deadline = time.monotonic() + timeout
        head = self._read(FRAME.size, deadline, what)
        head_len, payload_len = FRAME.unpack(head)
        if head_len > MAX_HEADER or payload_len > max_payload:
            self._kill()
            raise SandboxError(f"{self._filename}: the worker sent an oversized reply; it was stopped", "output")
        header = json.loads(self._read(head_len, deadline, what))
        if not isinstance(header, dict):
            raise SandboxError(f"{self._filename}: malformed reply from the worker", "output")
        return header, self._read(payload_len, deadline, what) if payload_len else b""

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
            if not chunk:
                self._died(what)
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _too_slow(self, what: str) -> None:
        """Stop a worker that outran its wall-clock limit and say so."""
        self._kill()
        limit = self.limits.start_s if what == "start" else self.limits.wall_s_per_call
        raise SandboxError(
            f"{self._filename}: {what} took longer than {limit} s of wall time; the worker was stopped "
            "(raise reward.limits.wall_s_per_call if the program is slow but correct)",
            "wall",
        )

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _died(self, what: str) -> None:
        proc = self._proc
        code = proc.wait() if proc is not None else None
        reason = f"exit code {code}"
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            reason = {"SIGXCPU": "its lifetime CPU limit", "SIGSYS": "a forbidden system call"}.get(name, name)
            reason = f"killed by {name} ({reason})" if reason != name else f"killed by {name}"
        raise SandboxError(
            f"{self._filename}: the sandbox worker died during {what}, {reason}{self._log_tail()}", "crash"
        )

    def _log_tail(self, chars: int = 1500) -> str:
        try:
            text = self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""
        return f"; its log ends with:\n{text}" if text else ""
