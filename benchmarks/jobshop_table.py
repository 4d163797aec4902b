#!/usr/bin/env python
"""Mean gap to the best-known makespan per Taillard size: dispatching rules, CP-SAT, a learned dispatcher.

    python benchmarks/jobshop_table.py [--rules spt mwkr fdd_mwkr mopnr lpt fifo] [--placements insert append]
                                       [--cpsat-sizes 15x15 100x20 --cpsat-time 60 --cpsat-workers 2]
                                       [--runs RUN_DIR ...] [--out runs/benchmarks/jobshop]

Every column is one ``experiments/jobshop_eval.py`` call (its results.csv and schedules land in
``--out/<column>/``), so each number can be re-run alone. Printed next to L2D's published table
(Zhang et al. 2020, Taillard: 15x15 and 100x20 as quoted in the issue) for the rules it reports.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = ["15x15", "20x15", "20x20", "30x15", "30x20", "50x15", "50x20", "100x20"]
PUBLISHED = {  # L2D (NeurIPS 2020), Taillard mean gap %, as quoted in the issue
    "spt": {"15x15": 54.8, "100x20": 41.0},
    "mwkr": {"15x15": 56.7, "100x20": 32.9},
    "fdd_mwkr": {"15x15": 47.1, "100x20": 23.4},
    "mopnr": {"15x15": 45.0, "100x20": 20.2},
    "L2D": {"15x15": 26.0, "100x20": 13.6},
}


def evaluate(column: str, args: list[str], out: Path) -> dict[str, float]:
    target = out / column
    if not (target / "results.csv").exists():
        cmd = [sys.executable, str(REPO / "experiments" / "jobshop_eval.py"), *args, f"out={target}"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    gaps: dict[str, list[float]] = defaultdict(list)
    with (target / "results.csv").open() as f:
        for row in csv.DictReader(f):
            gaps[f"{row['jobs']}x{row['machines']}"].append(float(row["gap_percent"]))
    return {size: sum(v) / len(v) for size, v in gaps.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", nargs="*", default=["spt", "mwkr", "fdd_mwkr", "mopnr", "lpt", "fifo"])
    parser.add_argument("--placements", nargs="*", default=["insert"])
    parser.add_argument("--cpsat-sizes", nargs="*", default=[])
    parser.add_argument("--cpsat-time", type=float, default=60.0)
    parser.add_argument("--cpsat-workers", type=int, default=2)
    parser.add_argument("--runs", nargs="*", default=[], help="run directories of trained jobshop agents")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "jobshop")
    args = parser.parse_args()
    columns: dict[str, dict[str, float]] = {}
    for placement in args.placements:
        for rule in args.rules:
            name = rule if placement == "insert" else f"{rule}/{placement}"
            columns[name] = evaluate(name.replace("/", "_"), ["agent=pdr", f"agent.rule={rule}", f"env.placement={placement}"], args.out)
    if args.cpsat_sizes:
        sizes = ",".join(args.cpsat_sizes)
        name = f"cpsat {args.cpsat_time:g}s/{args.cpsat_workers}w"
        columns[name] = evaluate(
            f"cpsat_{args.cpsat_time:g}s_{args.cpsat_workers}w",
            ["agent=cpsat", f"agent.time_limit={args.cpsat_time}", f"agent.workers={args.cpsat_workers}", f"sizes={sizes}"],
            args.out,
        )
    for run in args.runs:
        columns[f"learned:{Path(run).name}"] = evaluate(f"learned_{Path(run).name}", [f"run={run}"], args.out)
    header = f"{'size':>7} " + " ".join(f"{c:>14}" for c in columns)
    print("\nmean gap to best known, % (Taillard; published L2D values in brackets)\n" + header)
    for size in SIZES:
        cells = []
        for name, values in columns.items():
            base = name.split("/")[0]
            published = PUBLISHED.get(base, {}).get(size)
            value = values.get(size)
            cell = "-" if value is None else f"{value:.1f}"
            if published is not None:
                cell += f" [{published:g}]"
            cells.append(f"{cell:>14}")
        print(f"{size:>7} " + " ".join(cells))
    print(f"{'':>7} L2D published: " + ", ".join(f"{s} {v}" for s, v in PUBLISHED["L2D"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
