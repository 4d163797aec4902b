#!/usr/bin/env python
"""A table of finished runs: mean ± std over seeds of each env x reward x agent x steps (x dataset) group.

    python experiments/summarize.py runs/multirun/2026-11-23_10-00-00 [more dirs ...] [--csv out.csv]

Reads every ``summary.json`` below the given directories (runs without one did not finish and
are counted separately). The standard deviation is across seeds (one number per run: its final
evaluation mean), which is what a claim about a method depends on. Offline runs are grouped by
their dataset too, and their normalised scores (final and best periodic evaluation) are shown.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from collections.abc import Sequence
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


def collect(dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[Path]]:
    """Summaries of finished runs and the run directories that have no summary (unfinished)."""
    summaries, unfinished = [], []
    for root in dirs:
        if not root.exists():
            print(f"error: {root}: no such directory", file=sys.stderr)
            raise SystemExit(2)
        for config in sorted(root.rglob("config.yaml")):
            run = config.parent
            if (run / "summary.json").exists():
                summary = RunSummary.load(run).to_json()  # the schema the runner writes (experiments/schema.py)
                summaries.append({"run": str(run), **summary})
            elif (run / "metrics.csv").exists():
                unfinished.append(run)
    return summaries, unfinished


def table(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group: ``n``, seeds, and ``<figure>_mean`` / ``<figure>_std`` across seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for s in summaries:
        groups[tuple(s.get(k) for k in KEY)].append(s)
    rows = []
    for key, runs in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        row: dict[str, Any] = dict(zip(KEY, key, strict=True))
        row["n"] = len(runs)
        row["seeds"] = " ".join(str(r.get("seed")) for r in sorted(runs, key=lambda r: r.get("seed", 0)))
        for fig in FIGURES:
            values = [r[fig] for r in runs if r.get(fig) is not None]
            row[f"{fig}_mean"] = float(np.mean(values)) if values else None
            row[f"{fig}_std"] = float(np.std(values)) if values else None
        rows.append(row)
    return rows


def _fmt(mean: float | None, std: float | None, digits: int = 1) -> str:
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


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
    args = parser.parse_args(argv)
    summaries, unfinished = collect(args.dirs)
    if not summaries:
        print(f"error: no finished runs (summary.json) below {' '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    rows = table(summaries)
    offline = any(r["dataset"] for r in rows)
    width = max([len(str(r["dataset"])) for r in rows] + [7]) if offline else 0
    header = f"{'env':<22} {'reward':<8} {'agent':<6} {'steps':>8} {'n':>2}  {'true return':>18} {'proxy return':>18} {'success':>13}"
    if offline:
        header += f"  {'dataset':<{width}} {'normalised':>13} {'best normalised':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        line = (
            f"{r['env']:<22} {r['reward']:<8} {r['agent']:<6} {r['steps']:>8} {r['n']:>2}  "
            f"{_fmt(r['true_return_mean_mean'], r['true_return_mean_std']):>18} "
            f"{_fmt(r['proxy_return_mean_mean'], r['proxy_return_mean_std']):>18} "
            f"{_fmt(r['success_rate_mean'], r['success_rate_std'], 2):>13}"
        )
        if offline:
            line += (
                f"  {r['dataset'] or '-'!s:<{width}} {_fmt(r['normalized_score_mean'], r['normalized_score_std']):>13} "
                f"{_fmt(r['best_eval_normalized_score_mean'], r['best_eval_normalized_score_std']):>15}"
            )
        print(line)
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
