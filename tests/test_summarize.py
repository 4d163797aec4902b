"""experiments/summarize.py: grouping across seeds, unfinished runs left out."""

from __future__ import annotations

import json
import re
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
    assert main([str(tmp_path), "--csv", str(tmp_path / "t.csv"), "--per-seed"]) == 0
    out = capsys.readouterr().out
    assert "200.0 ± 81.6" in out and "1 unfinished run(s)" in out
    ppo = next(line for line in out.splitlines() if " ppo " in line)
    assert re.search(r" 0 1 2 +100\.0 200\.0 300\.0$", ppo)  # --per-seed: the seeds, each one's final true return
    assert (tmp_path / "t.csv").read_text().startswith("env,reward,agent,steps,dataset,n,seeds")


def test_no_finished_runs_is_an_error(tmp_path: Path) -> None:
    _run(tmp_path, "killed", finished=False)
    assert main([str(tmp_path)]) == 2


def test_runs_that_differ_in_a_swept_setting_are_not_merged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-m reward=shaped reward.scale=1,-1 seed=0,1`: two groups of two, named by the setting (before: one of four)."""
    proxies = {(1.0, 0): 15.6, (1.0, 1): 23.4, (-1.0, 0): -9.6, (-1.0, 1): -9.2}
    for (scale, seed), proxy in proxies.items():
        name = f"scale{scale}_s{seed}"
        _run(tmp_path, name, seed=seed, reward="shaped", true_return_mean=20.0, proxy_return_mean=proxy)
        (tmp_path / name / "config.yaml").write_text(
            f"seed: {seed}\ndevice: cpu\nreward:\n  name: shaped\n  scale: {scale}\n  seed: {seed}\n"
            f"env:\n  name: cartpole\n  instance: {'null'}\n"
        )
    _run(tmp_path, "single", seed=0, agent="a2c", true_return_mean=7.0, proxy_return_mean=7.0)
    rows = table(collect([tmp_path])[0])
    shaped = {r["setting"]: r for r in rows if r["reward"] == "shaped"}
    assert set(shaped) == {"reward.scale=1.0", "reward.scale=-1.0"}  # reward.seed follows the seed: pooled
    assert shaped["reward.scale=-1.0"]["n"] == 2 and shaped["reward.scale=-1.0"]["proxy_return_mean_mean"] == pytest.approx(-9.4)
    assert main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, body = lines[0], [line for line in lines[2:] if line]
    end = header.index("true return") + len("true return")
    assert all(line[end - 1] != " " for line in body)  # every value right-aligned under its header
    single = next(line for line in body if "a2c" in line)
    assert "7.0" in single and "±" not in single  # one run: its value alone, no "± 0.0"
    assert any("reward.scale=-1.0" in line and "-9.4 ± 0.2" in line for line in body)


def test_env_metrics_as_columns_and_small_values_with_two_decimals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--metrics distinct_2`: mean ± std over seeds like the return; a text env's 0.62 is not printed as 0.6."""
    for seed, (ret, d2) in enumerate([(0.60, 0.50), (0.64, 0.70)]):
        _run(tmp_path, f"s{seed}", seed=seed, env="text-positive", agent="alol", true_return_mean=ret,
             proxy_return_mean=ret, distinct_2=d2)  # fmt: skip
    rows = table(collect([tmp_path])[0], ["distinct_2"])
    assert rows[0]["distinct_2_mean"] == pytest.approx(0.6) and rows[0]["distinct_2_std"] == pytest.approx(0.1)
    assert main([str(tmp_path), "--metrics", "distinct_2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "distinct_2" and "0.62 ± 0.02" in lines[2] and lines[2].endswith("0.60 ± 0.10")
    assert main([str(tmp_path), "--metrics", "distinct_3"]) == 2
    assert "no run has a number by that name; the runs' numbers: distinct_2" in capsys.readouterr().err


def test_small_values_keep_two_significant_digits_and_repeated_seeds_are_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):  # the same seed twice: copies, not two seeds
        _run(tmp_path, name, seed=0, true_return_mean=0.0031, proxy_return_mean=0.0031)
    _run(tmp_path, "one", seed=0, agent="a2c", true_return_mean=5.0, proxy_return_mean=5.0)
    assert main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "0.0031 ± 0.0000" in out
    assert "warning: cartpole env ppo: 2 runs with seeds 0 0 are pooled; runs with the same seed are not independent" in out
    a2c = next(r for r in (tmp_path / "t.csv").read_text().splitlines() if r.startswith("cartpole,env,a2c"))
    assert ",5.0,," in a2c  # one run: a mean, no standard deviation
