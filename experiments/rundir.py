"""The run directory: CSV logs, TensorBoard scalars, atomic JSON, checkpoints.

Layout (DESIGN.md's contract)::

    <run dir>/
      config.yaml          fully resolved config (written once the config is valid)
      overrides.yaml       the command-line overrides of the first launch (and of each resume)
      metrics.csv          one row per evaluation (true and proxy return, success, ...)
      curves.png           true and proxy return (and success) against steps, redrawn at each evaluation
      train.csv            one row per agent log (loss_* and other training statistics)
      summary.json         written last, atomically: its presence means the run completed
      run.log              the console log
      tensorboard/         the same scalars as the CSV files
      videos/*.mp4         rollouts of the final policy (and optionally during training)
      checkpoints/step_<N>/{agent/, state.json, rng.pkl}, checkpoints/latest
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
LATEST = "latest"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` so that readers see either the old file or the complete new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class CsvLog:
    """Append-only CSV with a ``step`` column whose header grows when new keys appear.

    Args:
        path: The CSV file (created on first write; an existing file is continued).
        columns: Columns to put first, in this order.
    """

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] = list(columns or ["step"])
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            self.columns += [c for c in header if c not in self.columns]

    def touch(self) -> None:
        """Create the file with its header if it does not exist (so readers always find it)."""
        if not self.path.exists():
            self._rewrite([])

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row; unknown keys extend the header (the file is rewritten once)."""
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite(self.read())
        new_file = not self.path.exists() or not self.path.stat().st_size
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow({k: _cell(v) for k, v in row.items()})

    def read(self) -> list[dict[str, str]]:
        """All rows as dicts of strings."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (used on resume: those steps are trained again)."""
        rows = [r for r in self.read() if r.get("step") and float(r["step"]) <= step]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return value


class Scalars:
    """TensorBoard scalars mirroring the CSV logs (``metrics/<column>``, ``train/<column>``).

    Args:
        logdir: Directory for the event files.
        purge_step: On resume, events at or after this step from the killed run are discarded.
    """

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir), purge_step=purge_step)

    def write(self, group: str, row: Mapping[str, Any]) -> None:
        """Add a log row's numeric values as scalars ``<group>/<column>`` at the row's ``step``, and flush.

        Args:
            group: ``metrics`` or ``train``.
            row: A CSV row; it must have a ``step``. Non-numeric values (and booleans) are skipped.
        """
        step = int(row["step"])
        for key, value in row.items():
            if (
                key != "step"
                and isinstance(value, (int, float, np.floating, np.integer))
                and not isinstance(value, bool)
            ):
                self.writer.add_scalar(f"{group}/{key}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event files."""
        self.writer.close()


# --- checkpoints -------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global RNG states the runner seeded (Python, NumPy, torch)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_state` (CUDA's only where CUDA is available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, step: int, agent: Any, state: Mapping[str, Any], keep: int, provider: Any = None
) -> Path:
    """Write ``checkpoints/step_<N>`` atomically, point ``checkpoints/latest`` at it, prune old ones.

    Args:
        run_dir: The run directory.
        step: Budget consumed (names the checkpoint).
        agent: An :class:`agents.base.Agent`.
        state: Runner state (JSON-serialisable).
        keep: Number of newest checkpoints to keep.
        provider: The run's reward provider; its learned state (if any) goes to ``reward/``.

    Returns:
        The checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:09d}"
    tmp = root / f".tmp_{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    agent.save(tmp / "agent")
    if provider is not None:
        provider.save(tmp / "reward")
    write_json_atomic(tmp / "state.json", dict(state))
    with (tmp / "rng.pkl").open("wb") as f:
        pickle.dump(rng_state(), f)
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, root / LATEST)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``checkpoints/latest`` points at, or ``None`` if the run has none."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


def load_checkpoint_state(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The runner state and RNG states stored in a checkpoint."""
    state = json.loads((checkpoint / "state.json").read_text())
    with (checkpoint / "rng.pkl").open("rb") as f:
        rng = pickle.load(f)
    return state, rng


#: Packages whose versions every run records (``summary.json``: ``versions``) and a study records at launch.
PACKAGES = ("rewardlab", "numpy", "torch", "gymnasium", "stable-baselines3", "hydra-core", "rliable")


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` in this interpreter (``-`` where one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out
