#!/usr/bin/env python
"""A table of finished runs: mean ± std over seeds of every group of runs that differ only in their seed.

    python experiments/summarize.py runs/multirun/2026-11-23_10-00-00 [more dirs ...] [--csv out.csv]
                                    [--metrics distinct_2 kl_to_reference ...]

Reads every ``summary.json`` below the given directories (runs without one did not finish and
are counted separately). Runs are grouped by env, reward, agent, steps and dataset, and then by
every other setting of their ``config.yaml`` that differs between them (a swept ``reward.scale``,
``reward.teacher.mistake``, ``env.instance`` ...), named in the ``setting`` column; only the seed
(and what follows from it) and run-time options (device, threads, progress bar) are pooled over.
The standard deviation is across seeds (one number per run: its final evaluation mean), which is
what a claim about a method depends on; a group of one run shows its value alone. Offline runs
also show their normalised scores (final and best periodic evaluation). ``--metrics`` adds columns for
numbers the env reports in ``summary.json`` beside the return (a text env's ``distinct_2``,
``kl_to_reference``, ``response_words``; a job-shop env's ``makespan``), mean ± std over seeds alike.
``--per-seed`` adds the seeds and each one's final true return. Values below 1 in size are shown with
two significant digits, larger ones with one decimal.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from experiments.schema import RunSummary

KEY = ("env", "reward", "agent", "steps", "dataset")
FIGURES = (
    "true_return_mean",
    "proxy_return_mean",
    "success_rate",
    "normalized_score",
    "best_eval_normalized_score",
    "wall_time_s",
)
#: Settings that say how a run was executed, not what it is: pooled over like the seed.
RUNTIME = ("seed", "device", "torch_threads", "progress", "resume", "dataset_root")


def flat_settings(config: Mapping[Any, Any], prefix: str = "") -> dict[str, str]:
    """A resolved config as ``{"reward.scale": "-1.0", ...}`` (lists and values as text)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_settings(value, name + "."))
        else:
            out[name] = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _run_settings(run: Path) -> dict[str, str]:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
    except Exception:  # an unreadable config: grouped by the summary's names only
        return {}
    return flat_settings({str(k): v for k, v in cfg.items()}) if isinstance(cfg, dict) else {}


def collect(dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[Path]]:
    """Summaries of finished runs (with their flattened ``settings``) and the run directories without one."""
    summaries, unfinished = [], []
    for root in dirs:
        if not root.exists():
            print(f"error: {root}: no such directory", file=sys.stderr)
            raise SystemExit(2)
        for config in sorted(root.rglob("config.yaml")):
            run = config.parent
            if (run / "summary.json").exists():
                summary = RunSummary.load(run).to_json()  # the schema the runner writes (experiments/schema.py)
                summaries.append({"run": str(run), **summary, "settings": _run_settings(run)})
            elif (run / "metrics.csv").exists():
                unfinished.append(run)
    return summaries, unfinished


def _differing(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Settings whose values differ between ``runs``, except run-time ones and those that follow the seed."""
    keys = sorted({k for r in runs for k in r.get("settings", {})})
    out = []
    for k in keys:
        if k.split(".")[-1] in RUNTIME or k.startswith("hydra"):
            continue
        values = [r.get("settings", {}).get(k) for r in runs]
        if len(set(values)) < 2:
            continue
        if all(v == str(r.get("seed")) for v, r in zip(values, runs, strict=True)):
            continue  # e.g. reward.seed: ${seed}
        out.append(k)
    return out


def group_runs(summaries: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], str, list[dict[str, Any]]]]:
    """Runs grouped so that a group's runs differ only in their seed (module docstring).

    Args:
        summaries: From :func:`collect` (each with its flattened ``settings``).

    Returns:
        ``(identity, setting, runs)`` per group, sorted: the group's ``env, reward, agent, steps,
        dataset`` as a dict, the other settings that tell it apart (``key=value`` joined by spaces, empty
        when none), and its runs.
    """
    base: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for s in summaries:
        base[tuple(s.get(k) for k in KEY)].append(s)
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    labels: dict[tuple, str] = {}
    for key, runs in base.items():
        keys = _differing(runs)
        for r in runs:
            values = tuple(r.get("settings", {}).get(k) for k in keys)
            groups[(*key, values)].append(r)
            labels[(*key, values)] = " ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
    return [
        (dict(zip(KEY, group[: len(KEY)], strict=True)), labels[group], runs)
        for group, runs in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0]))
    ]


def table(summaries: Sequence[dict[str, Any]], metrics: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per group of runs that differ only in their seed (:func:`group_runs`).

    Args:
        summaries: From :func:`collect`.
        metrics: Further numeric ``summary.json`` keys to summarise like the figures (``--metrics``).

    Returns:
        Rows with the group's ``env, reward, agent, steps, dataset``, ``n``, ``seeds``, ``setting`` (the
        other settings that tell this group apart, ``key=value`` joined by spaces, empty when none), and
        ``<figure>_mean`` / ``<figure>_std`` across its runs for each figure and metric (None where no
        run of the group has a number for it).
    """
    rows = []
    for identity, label, runs in group_runs(summaries):
        row: dict[str, Any] = dict(identity)
        row["n"] = len(runs)
        by_seed = sorted(runs, key=lambda r: r.get("seed", 0))
        row["seeds"] = " ".join(str(r.get("seed")) for r in by_seed)
        row["setting"] = label
        row["true_return_per_seed"] = " ".join(
            "-" if r.get("true_return_mean") is None else _fmt(r["true_return_mean"], None, 1) for r in by_seed
        )
        for fig in (*FIGURES, *metrics):
            figures = [r[fig] for r in runs if _is_number(r.get(fig))]
            row[f"{fig}_mean"] = float(np.mean(figures)) if figures else None
            row[f"{fig}_std"] = float(np.std(figures)) if len(figures) > 1 else None  # one run has no spread
        rows.append(row)
    return rows


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(mean: float | None, std: float | None, n: int, digits: int | None = None) -> str:
    if mean is None:
        return "-"
    if digits is None:  # two significant digits below 1 (0.62, 0.0031), one decimal above
        digits = 2 if mean == 0 else min(4, max(1, 1 - math.floor(math.log10(abs(mean)))))
    return f"{mean:.{digits}f}" if n == 1 or std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def main(argv: Sequence[str]) -> int:
    """Print the table of the finished runs below some directories (module docstring).

    Args:
        argv: Command-line arguments: the directories, and ``--csv FILE`` to write the table as CSV too.

    Returns:
        The exit status: 0, or 2 when no finished run was found.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--per-seed", action="store_true", help="a column with each seed's final true return")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=[],
        help="further numeric summary.json keys as columns (give it after the directories)",
    )
    args = parser.parse_args(argv)
    summaries, unfinished = collect(args.dirs)
    if not summaries:
        print(f"error: no finished runs (summary.json) below {' '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    missing = [m for m in args.metrics if not any(_is_number(s.get(m)) for s in summaries)]
    if missing:
        numeric = sorted({k for s in summaries for k, v in s.items() if _is_number(v)})
        print(
            f"error: --metrics {' '.join(missing)}: no run has a number by that name; the runs' numbers: {', '.join(numeric)}",
            file=sys.stderr,
        )
        return 2
    rows = table(summaries, args.metrics)
    cols: list[tuple[str, Any]] = [
        ("env", lambda r: r["env"]),
        ("reward", lambda r: r["reward"]),
        ("agent", lambda r: r["agent"]),
        ("steps", lambda r: r["steps"]),
    ]
    if any(r["setting"] for r in rows):
        cols.append(("setting", lambda r: r["setting"] or "-"))
    if any(r["dataset"] for r in rows):
        cols.append(("dataset", lambda r: r["dataset"] or "-"))
    cols += [
        ("n", lambda r: r["n"]),
        ("true return", lambda r: _fmt(r["true_return_mean_mean"], r["true_return_mean_std"], r["n"])),
        ("proxy return", lambda r: _fmt(r["proxy_return_mean_mean"], r["proxy_return_mean_std"], r["n"])),
        ("success", lambda r: _fmt(r["success_rate_mean"], r["success_rate_std"], r["n"], 2)),
    ]
    if args.per_seed:
        cols += [("seeds", lambda r: r["seeds"]), ("true return per seed", lambda r: r["true_return_per_seed"])]
    cols += [(m, lambda r, m=m: _fmt(r[f"{m}_mean"], r[f"{m}_std"], r["n"])) for m in args.metrics]
    if any(r["dataset"] for r in rows):
        cols += [
            ("normalised", lambda r: _fmt(r["normalized_score_mean"], r["normalized_score_std"], r["n"])),
            ("best normalised", lambda r: _fmt(r["best_eval_normalized_score_mean"], r["best_eval_normalized_score_std"], r["n"])),
        ]  # fmt: skip
    cells = [[str(get(r)) for _, get in cols] for r in rows]
    widths = [max(len(name), *(len(c[i]) for c in cells)) for i, (name, _) in enumerate(cols)]
    left = {"env", "reward", "agent", "setting", "dataset"}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if name in left else v.rjust(w) for v, w, (name, _) in zip(values, widths, cols, strict=True)
        ).rstrip()

    header = line([name for name, _ in cols])
    print(header)
    print("-" * len(header))
    for c in cells:
        print(line(c))
    for r in rows:  # the groups of the table, each with its seeds
        seeds = r["seeds"].split()
        if len(set(seeds)) < len(seeds):
            what = " ".join(str(r[k]) for k in ("env", "reward", "agent")) + (
                f" {r['setting']}" if r["setting"] else ""
            )
            print(
                f"\nwarning: {what}: {len(seeds)} runs with seeds {r['seeds']} are pooled; runs with the same seed are not independent"
            )
    if unfinished:
        print(f"\n{len(unfinished)} unfinished run(s) left out (no summary.json): {', '.join(map(str, unfinished))}")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
