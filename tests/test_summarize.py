"""experiments/summarize.py: grouping across seeds, unfinished runs left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.summarize import collect, main, table


def _run(root: Path, name: str, finished: bool = True, **summary: object) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.csv").write_text("step\n0\n")
    if finished:
        base = {"env": "cartpole", "reward": "env", "agent": "ppo", "steps": 100, "success_rate": None, "wall_time_s": 1.0}
        (run / "summary.json").write_text(json.dumps({**base, **summary}))


def test_groups_across_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed, ret in enumerate([100.0, 200.0, 300.0]):
        _run(tmp_path, f"s{seed}", seed=seed, true_return_mean=ret, proxy_return_mean=ret / 2)
    _run(tmp_path, "other", seed=0, agent="a2c", true_return_mean=5.0, proxy_return_mean=5.0)
    _run(tmp_path, "killed", finished=False)
    summaries, unfinished = collect([tmp_path])
    assert len(summaries) == 4 and [p.name for p in unfinished] == ["killed"]
    rows = {r["agent"]: r for r in table(summaries)}
    assert rows["ppo"]["n"] == 3 and rows["ppo"]["seeds"] == "0 1 2"
    assert rows["ppo"]["true_return_mean_mean"] == pytest.approx(200.0)
    assert rows["ppo"]["true_return_mean_std"] == pytest.approx(np.std([100, 200, 300]))
    assert rows["ppo"]["success_rate_mean"] is None
    assert main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "200.0 ± 81.6" in out and "1 unfinished run(s)" in out
    assert (tmp_path / "t.csv").read_text().startswith("env,reward,agent,steps,dataset,n,seeds")


def test_no_finished_runs_is_an_error(tmp_path: Path) -> None:
    _run(tmp_path, "killed", finished=False)
    assert main([str(tmp_path)]) == 2
