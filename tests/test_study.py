"""Studies (experiments/study.py) and their report (experiments/report.py): rliable figures against a hand
computation, hacking flags on constructed runs, a self-contained page (also in headless Chromium), bad input
refused before anything runs, and one tiny real study end to end."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments import report, study_stats
from tests import slurm_cluster
from tests.conftest import _run
from tests.helpers import CHROMIUM, DRIVER, browser, csv_rows

TINY = """name: tiny
envs: [cartpole]
agents: [ppo]
seeds: [0]
rewards:
  env: [reward=env]
  negated: [reward=shaped, reward.scale=-1]
overrides: [preset=smoke, steps=256, eval.every=128, checkpoint.keep=3, agent.hyperparams.n_steps=64, eval.n_envs=1, video.max_frames=20, progress=false]
"""


def _study_dir(tmp_path: Path, text: str, name: str = "tiny") -> str:
    (tmp_path / "conf" / "study").mkdir(parents=True, exist_ok=True)
    (tmp_path / "conf" / "study" / f"{name}.yaml").write_text(text)
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def _fake_run(root: Path, name: str, reward: str, seed: int, true: list[float], proxy: list[float],
              settings: dict | None = None, components: dict[str, list[float]] | None = None) -> Path:  # fmt: skip
    """A finished run directory as the runner writes it: config.yaml, metrics.csv, summary.json, a video file."""
    run = root / name
    (run / "videos").mkdir(parents=True)
    (run / "videos" / "final_ep0.mp4").write_bytes(b"\x00")
    config = {
        "env": {"name": "cartpole"},
        "reward": {"name": reward, **(settings or {})},
        "agent": {"name": "ppo"},
        "seed": seed,
        "steps": 1000,
    }
    (run / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    cols = ["step", "true_return", "proxy_return", "wall_time", *(f"component/{k}" for k in components or {})]
    lines = [",".join(cols)]
    for i, (t, p) in enumerate(zip(true, proxy, strict=True)):
        lines.append(",".join(str(v) for v in [i * 100, t, p, 2.0 * i, *(c[i] for c in (components or {}).values())]))
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    summary = {"env": "cartpole", "reward": reward, "agent": "ppo", "seed": seed, "steps": 1000, "true_return_mean": true[-1],
               "proxy_return_mean": proxy[-1], "best_eval_true_return": max(true), "videos": ["videos/final_ep0.mp4"],
               "command": f"python experiments/run.py reward={reward} seed={seed}", "git_commit": "abc", "device": "cpu",
               "train_steps_per_s": 500.0, "wall_time_s": 20.0}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_iqm_and_probability_of_improvement_match_a_hand_computation() -> None:
    x, y = np.array([1.0, 2.0, 3.0, 4.0, 100.0]), np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    est = study_stats.interval_estimates({"x": x, "y": y, "z": np.arange(1.0, 9.0)}, {"x>y": ("x", "y")}, reps=500)
    # IQM: the 25% trimmed mean; of 5 values scipy cuts int(1.25) = 1 each side: mean(2, 3, 4) = 3; of 1..8: mean(3..6)
    assert est["iqm:x"][0] == pytest.approx(3.0)
    assert est["iqm:z"][0] == pytest.approx(4.5)
    # P(X > Y) + P(X = Y) / 2 over the 25 pairs: x=1 beats 0 ties 1 (1.5), 2: 2.5, 3: 3.5, 4: 4.5, 100: 5 -> 17 / 25
    assert est["poi:x>y"][0] == pytest.approx(17 / 25)
    for key in ("iqm:x", "iqm:y", "iqm:z", "poi:x>y"):
        point, low, high = est[key]
        assert low <= point <= high and low < high  # the bootstrap interval holds the point estimate
    # the bootstrap is seeded: the same runs give the same intervals (rliable draws from numpy's global generator)
    np.random.seed(123)
    again = study_stats.interval_estimates({"x": x, "y": y, "z": np.arange(1.0, 9.0)}, {"x>y": ("x", "y")}, reps=500)
    assert again == est and np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)  # restored
    other = study_stats.interval_estimates({"x": x}, {}, reps=500, seed=1)
    assert other["iqm:x"][0] == est["iqm:x"][0] and other["iqm:x"][1:] != est["iqm:x"][1:]
    mean, half = study_stats.mean_ci(np.array([[1.0, 2.0], [3.0, 2.0]]))
    # by hand: values 1 and 3: mean 2, sd sqrt(2), t(0.975, 1) = 12.706 -> half-width 12.706 * sqrt(2) / sqrt(2)
    assert mean.tolist() == [2.0, 2.0] and half[0] == pytest.approx(12.7062, abs=1e-3) and half[1] == 0.0


def test_hacking_flags(tmp_path: Path) -> None:
    hacked = _fake_run(tmp_path, "hacked", "fn", 0, true=[100, 120, 110, 60, 40, 30], proxy=[1, 2, 3, 5, 8, 9])
    (flag,) = report.hacking_flags({"run": str(hacked), "videos": ["videos/final_ep0.mp4"]}, windows=3)
    assert flag.kind == "divergence" and flag.message.count("proxy +") == 2 and flag.videos == ["videos/final_ep0.mp4"]
    honest = [100, 120, 110, 60, 40, 30]  # reward=env: proxy is true, so it can never rise while true falls
    env = _fake_run(tmp_path, "env", "env", 0, true=honest, proxy=honest)
    assert report.hacking_flags({"run": str(env)}, windows=3) == []
    dominated = _fake_run(tmp_path, "dom", "code", 0, true=[1, 2, 3], proxy=[1, 2, 3],
                          components={"alive": [1, 50, 100], "upright": [1, 2, 3]})  # fmt: skip
    (flag,) = report.hacking_flags({"run": str(dominated)})
    assert flag.kind == "dominant component" and "'alive'" in flag.message


def test_report_from_fake_runs_is_self_contained(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed in range(3):
        _fake_run(sweep, f"env_s{seed}", "env", seed, true=[10, 50, 100 + seed], proxy=[10, 50, 100 + seed])
        _fake_run(
            sweep,
            f"neg_s{seed}",
            "shaped",
            seed,
            true=[10, 8, 5 + seed],
            proxy=[-10, -8, -5 - seed],
            settings={"scale": -1.0},
        )
        _fake_run(
            sweep,
            f"pos_s{seed}",
            "shaped",
            seed,
            true=[10, 60, 90 + seed],
            proxy=[10, 60, 90 + seed],
            settings={"scale": 2.0},
        )
    (sweep / "unfinished").mkdir()
    (sweep / "unfinished" / "config.yaml").write_text("{}")
    (sweep / "unfinished" / "metrics.csv").write_text("step\n")
    built = report.build(sweep, reps=500)
    names = [r["group"] for r in built["rows"]]
    # grouped by every differing setting: the two shaped variants apart, named by reward.scale
    assert names == [
        "cartpole / env / ppo",
        "cartpole / shaped / ppo [reward.scale=-1.0]",
        "cartpole / shaped / ppo [reward.scale=2.0]",
    ]
    rows = {r["group"]: r for r in built["rows"]}
    assert rows[names[1]]["poi_vs_env"][0] == pytest.approx(0.0) and rows[names[2]]["poi_vs_env"][0] == pytest.approx(
        0.0
    )
    assert rows[names[0]]["final_per_seed"] == [100, 101, 102] and rows[names[0]]["best"] == "101.0 ± 0.8"
    # the negated runs' proxy rises while their true return falls: flagged, linked to the run and its video
    assert sorted(Path(f.run).name for f in built["flags"]) == ["neg_s0", "neg_s1", "neg_s2"]
    page = built["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), (
        "the page must not load anything from the network"
    )
    assert page.count('src="data:image/png;base64,') == 3 and "<link" not in page and "<script" not in page
    assert 'src="env_s0/videos/final_ep0.mp4"' in page  # relative links to the runs' videos
    assert '<a href="neg_s0/videos/final_ep0.mp4">' in page
    md = built["md"].read_text()
    assert (
        "1 unfinished left out" in md
        and "(report_files/curves_0.png)" in md
        and (sweep / "report_files" / "curves_0.png").exists()
    )


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver")
def test_report_page_in_headless_chromium(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    for seed in range(2):
        _fake_run(tmp_path, f"env_s{seed}", "env", seed, true=[10, 50, 100], proxy=[10, 50, 100])
        _fake_run(tmp_path, f"fn_s{seed}", "fn", seed, true=[100, 50, 10], proxy=[1, 5, 9])
    page = report.build(tmp_path, reps=200)["html"]
    driver = browser()
    try:
        driver.get(page.as_uri())
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert headings[-2:] == ["cartpole / env / ppo", "cartpole / fn / ppo"]
        widths = [
            driver.execute_script("return arguments[0].naturalWidth", img)
            for img in driver.find_elements(By.TAG_NAME, "img")
        ]
        assert len(widths) == 2 and all(w > 100 for w in widths)  # the inlined figures decode
        assert len(driver.find_elements(By.CSS_SELECTOR, "li.flag")) == 2  # the fn runs: proxy up, true down
        assert len(driver.find_elements(By.TAG_NAME, "video")) == 4
    finally:
        driver.quit()


BAD = """name: bad
envs: [cartpole, nope]
agents: [sac, ppo]
seeds: [0]
rewards: [env]
"""


def test_bad_studies_are_refused_before_anything_runs(run_cli, tmp_path: Path) -> None:
    out = run_cli("study.py", [_study_dir(tmp_path, BAD, "bad"), "study=bad", f"out={tmp_path / 'S'}"])
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    # every bad cell in one line: the unknown env (with each agent) and SAC on CartPole's discrete actions
    assert line.startswith("error: 3 bad cell(s), nothing was run:")
    assert "nope x env x sac: unknown env 'nope'" in line and "nope x env x ppo: unknown env 'nope'" in line
    assert "cartpole x env x sac:" in line and "cartpole x env x ppo" not in line
    assert not (tmp_path / "S").exists() and not (tmp_path / "runs").exists()
    unknown = "name: unknown\nenvs: [cartpole]\nagents: [ppo, nosuchagent]\nseeds: [0]\nrewards: [env, nosuchreward]\n"
    out = run_cli("study.py", [_study_dir(tmp_path, unknown, "unknown"), "study=unknown", f"out={tmp_path / 'S'}"])
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: 3 bad cell(s), nothing was run:") and "cartpole x env x ppo" not in line
    assert "cartpole x env x nosuchagent: unknown agent 'nosuchagent'" in line
    assert "cartpole x nosuchreward x ppo: unknown reward 'nosuchreward'" in line
    assert not (tmp_path / "S").exists()
    for value, message in (("-1", "distance_samples=-1 must be an integer >= 0"), ("1", "give 0 (no reward distances) or at least 2")):
        out = run_cli("study.py", ["study=cartpole", f"distance_samples={value}", f"out={tmp_path / 'S'}"])
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert not (tmp_path / "S").exists()
    out = run_cli("study.py", ["study=nosuch"])
    assert out.returncode == 2 and "unknown study 'nosuch'; valid studies: cartpole" in out.stderr
    (tmp_path / "empty").mkdir()
    for target in ("empty", "missing"):
        out = run_cli("study.py", [f"report={tmp_path / target}"])
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert ("no finished runs" if target == "empty" else "no such directory") in out.stderr
    assert not (tmp_path / "missing").exists() and not (tmp_path / "runs").exists()


BASIC = ["hydra/launcher=basic"]  # one run after another in the launching process (the joblib default: test_streams.py)


@pytest.mark.heavy
def test_tiny_study_end_to_end(run_cli, tmp_path: Path) -> None:
    search = _study_dir(tmp_path, TINY)
    out = run_cli("study.py", [search, "study=tiny", "out=S", "reps=200", *BASIC, "distance_samples=300"])
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "S"
    assert sorted(p.parent.name for p in sweep.glob("*/summary.json")) == [
        "cartpole_env_ppo_s0",
        "cartpole_negated_ppo_s0",
    ]
    md = (sweep / "report.md").read_text()
    assert (
        "| cartpole / negated (shaped) / ppo | 1 |" in md
        and "env=cartpole reward=shaped reward.scale=-1 agent=ppo" in md
    )
    # CartPole's true reward (1 per step) is a constant up to shaping, and so are env and its negation: STARC 0
    assert "## Reward distances on cartpole" in md and "| 2: cartpole / negated (shaped) / ppo | 0.000 | 0.000 | 0.000 |" in md
    negated = sweep / "cartpole_negated_ppo_s0"
    summary = json.loads((negated / "summary.json").read_text())
    assert summary["proxy_return_mean"] == pytest.approx(-summary["true_return_mean"])
    # a cell killed after its checkpoint at step 128 (as SIGKILL leaves it): the next launch resumes it alone
    (negated / "summary.json").unlink()
    shutil.rmtree(negated / "checkpoints" / "step_000000256")
    (negated / "checkpoints" / "latest").write_text("step_000000128\n")
    again = run_cli("study.py", [search, "study=tiny", "out=S", "reps=200", *BASIC, "distance_samples=0"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 cells: 1 finished (skipped), 1 to resume, 0 to run" in again.stdout
    resumed = json.loads((negated / "summary.json").read_text())
    assert resumed["resumes"] == 1 and resumed["true_return_mean"] == pytest.approx(summary["true_return_mean"])
    assert [int(r["step"]) for r in csv_rows(negated / "metrics.csv")] == [0, 128, 256]  # one continuous file
    # again: both cells are finished, nothing runs, the report is rebuilt
    again = run_cli("study.py", [search, "study=tiny", "out=S", "reps=200", *BASIC, "distance_samples=0"])
    assert again.returncode == 0 and "2 cells: 2 finished (skipped), 0 to resume, 0 to run" in again.stdout
    assert "## Reward distances" not in (sweep / "report.md").read_text()  # distance_samples=0: left out
    assert not (tmp_path / "runs").exists()  # nothing outside out= (Hydra's default sweep folder included)


def test_distance_matrix_known_answers_on_pendulum() -> None:
    from omegaconf import OmegaConf

    from envs.make import make_env
    from experiments.cli import CONF_DIR, config_dict
    from experiments.study_rewards import distance_matrix
    from rewards.env import EnvReward
    from rewards.fn import FnReward
    from rewards.shaped import ShapedReward

    env_cfg = config_dict(OmegaConf.load(CONF_DIR / "env" / "pendulum.yaml"))
    providers = {
        "env": EnvReward(),
        "negated": ShapedReward(scale=-1.0),
        "scaled": ShapedReward(scale=3.0, offset=2.0),
        "upright": FnReward(target="rewards.examples:pendulum_upright"),
    }
    probe = make_env(env_cfg)
    for p in providers.values():
        p.bind(probe.observation_space, probe.action_space)
    probe.close()
    m = distance_matrix(env_cfg, providers, samples=400, transitions=200, expectation_samples=32)
    assert m is not None and m["names"] == ["true", "env", "negated", "scaled", "upright"]
    for name in ("epic", "starc"):
        d = np.array(m[name], dtype=float)
        assert d[0, 1] == pytest.approx(0.0, abs=1e-6) and d[0, 3] == pytest.approx(0.0, abs=1e-6), name
        assert d[0, 2] == pytest.approx(1.0, abs=1e-6) and d[2, 3] == pytest.approx(1.0, abs=1e-6), name
        assert 0.05 < d[0, 4] < 0.95 and np.allclose(d, d.T), name  # a related but different reward


def test_provenance_of_code_and_preference_runs(tmp_path: Path) -> None:
    code = _fake_run(tmp_path, "code", "code", 0, true=[1, 2], proxy=[1, 2])
    meta = {"origin": "model", "task": "balance the pole", "backend": "openai", "model": "coder-7b", "code_hash": "9f52f48df176", "calls": [{}, {}]}
    (code / "reward_program.json").write_text(json.dumps(meta))
    study = {"torch": "2.4.1", "numpy": "2.1.0"}
    run = {"run": str(code), "seed": 0, "command": "python experiments/run.py reward=code", "versions": study}
    got = report.provenance(run, study)
    assert got["program_hash"] == "9f52f48df176" and got["program_task"] == "balance the pole"
    assert got["program_model"] == "openai:coder-7b (2 call(s))" and got["command"] == "python experiments/run.py reward=code"
    assert got["program_prompts"] == "code/reward_program.json: calls[].messages (2 prompt(s))"
    assert got["versions"] == "as the study"
    node = {**run, "versions": {"torch": "2.3.0", "numpy": "2.1.0"}}  # a cluster node with another torch
    assert report.provenance(node, study)["versions"] == "torch=2.3.0 (study: 2.4.1)"
    assert report.provenance({"run": str(code)}, study)["versions"] == "not recorded"  # a run from before versions
    pref = _fake_run(tmp_path, "pref", "preference", 0, true=[1, 2], proxy=[1, 2])
    (pref / "metrics.csv").write_text("step,true_return,proxy_return,labels\n0,1,1,0\n100,2,2,40\n")
    settings = {"reward.teacher.mistake": "0.1", "reward.teacher.beta": "None", "reward.budget": "40"}
    got = report.provenance({"run": str(pref), "seed": 0, "settings": settings})
    assert got["teacher"] == "beta=None mistake=0.1" and got["labels"] == 40


def test_rerun_states_skip_resume_restart(tmp_path: Path) -> None:
    import fcntl

    from experiments import study

    done = _fake_run(tmp_path, "done", "env", 0, true=[1, 2], proxy=[1, 2])
    resumable = tmp_path / "resumable"
    (resumable / "checkpoints" / "step_000000100").mkdir(parents=True)
    (resumable / "checkpoints" / "step_000000100" / "state.json").write_text("{}")
    (resumable / "checkpoints" / "latest").write_text("step_000000100\n")
    stale = tmp_path / "stale"  # stopped before its first checkpoint
    stale.mkdir()
    (stale / "config.yaml").write_text("{}")
    states = [study._state(p) for p in (done, resumable, stale, tmp_path / "new")]
    assert states == ["done", "resume", "stale", "new"]
    with (stale / ".lock").open("a+") as held:  # a run in progress is never moved or restarted
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(study.ConfigError, match="is running now"):
            study._state(stale)


def test_a_misspelled_study_key_or_a_changed_cell_is_refused(tmp_path: Path) -> None:
    from experiments import study

    base = {"envs": ["cartpole"], "rewards": ["env"], "agents": ["ppo"], "seeds": [0]}
    with pytest.raises(study.ConfigError, match=r"unknown study key\(s\) \['overides'\]; accepted: agents, cells"):
        study.expand({**base, "overides": ["preset=smoke"]})
    with pytest.raises(study.ConfigError, match=r"study.cells\[0\]: unknown key\(s\) \['overide'\]"):
        study.expand({**base, "cells": [{"match": {"reward": "env"}, "overide": ["steps=10"]}]})
    # a run the previous launch made with other settings is neither skipped nor resumed as if unchanged
    (old,) = study.expand({**base, "overrides": ["steps=100000"]})
    (new,) = study.expand({**base, "overrides": ["steps=2000"]})
    _fake_run(tmp_path, old.name, "env", 0, true=[1, 2], proxy=[1, 2])
    (tmp_path / "study.json").write_text(json.dumps({"cells": [{"name": old.name, "command": old.command}]}))
    with pytest.raises(study.ConfigError, match=r"1 run\(s\) .* other settings .*steps=100000.*steps=2000.*another out="):
        study.launch([new], tmp_path, [], {})
    assert not (tmp_path / ".study").exists()  # refused before anything was written


def _example_study_shrunk(tmp_path: Path) -> str:
    """The shipped example study (conf/study/cartpole.yaml: six rewards) with one seed and 512 steps per run."""
    import yaml

    from experiments.cli import CONF_DIR

    study = yaml.safe_load((CONF_DIR / "study" / "cartpole.yaml").read_text())
    study.update(name="example", seeds=[0])
    study["overrides"] = ["steps=512", "eval.every=256", "eval.episodes=2", "eval.final_episodes=4", "eval.n_envs=1",
                          "video.max_frames=20", "progress=false"]  # fmt: skip
    study["cells"] = [{"match": {"reward": "preference"},
                       "overrides": ["reward.budget=20", "reward.queries=10", "reward.every=128", "reward.first_after=128"]}]  # fmt: skip
    return _study_dir(tmp_path, yaml.safe_dump(study), "example")


def _distances(md: str) -> str:
    """The reward-distance sections of a report.md (matrices and notes; no paths in them)."""
    return "\n".join(re.findall(r"## Reward distances on .*?(?=\n## )", md, flags=re.S))


@pytest.mark.slow  # ~3 min: a cluster, the example study's six runs on it and six locally, two reports
@pytest.mark.skipif(bool(slurm_cluster.missing()), reason="SLURM not installed; .ci/run installs it")
def test_a_study_on_slurm_gives_the_local_report(tmp_path: Path) -> None:
    search = _example_study_shrunk(tmp_path)
    with slurm_cluster.slurm_cluster(tmp_path / "cluster") as env:
        slurm = ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm_cluster.PARTITION}",
                 "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", "hydra.launcher.array_parallelism=2"]  # fmt: skip
        out = _run("study.py", [search, "study=example", "out=slurm", "reps=200", *slurm], tmp_path, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    # the cells ran as one SLURM job array (submitit's folder in the study's directory: one log per task)
    assert len(list((tmp_path / "slurm" / ".submitit").glob("*/*_log.out"))) == 6
    out = _run("study.py", [search, "study=example", "out=local", "reps=200", "hydra/launcher=basic"], tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    on_slurm, local = report.build(tmp_path / "slurm", reps=200), report.build(tmp_path / "local", reps=200)
    assert on_slurm["rows"] == local["rows"] and len(local["rows"]) == 6  # every figure of the table, number for number
    slurm_md, local_md = on_slurm["md"].read_text(), local["md"].read_text()
    assert "## Reward distances on cartpole" in local_md and "| STARC |" in local_md
    assert _distances(slurm_md) == _distances(local_md)  # EPIC / STARC between all six providers, equal too
    assert [f.message for f in on_slurm["flags"]] == [f.message for f in local["flags"]]


def test_correlations_where_the_env_has_no_closed_form_reward() -> None:
    from omegaconf import OmegaConf

    from experiments.cli import CONF_DIR, config_dict
    from experiments.reward_eval import true_reward_fn
    from experiments.study_rewards import correlation_matrix
    from rewards.env import EnvReward
    from rewards.shaped import ShapedReward

    env_cfg = {**config_dict(OmegaConf.load(CONF_DIR / "env" / "jobshop.yaml")), "size": "4x4"}
    assert true_reward_fn(env_cfg)[0] is None  # job-shop: no EPIC / STARC, correlations instead
    providers = {"env": EnvReward(), "negated": ShapedReward(scale=-1.0), "scaled": ShapedReward(scale=3.0, offset=2.0)}
    policies: dict[str, list[Path | None]] = {"env": [None], "negated": [None, None], "scaled": [None]}  # None: random actions
    m = correlation_matrix(env_cfg, providers, policies, samples=120)
    assert m["names"] == ["true", "env", "negated", "scaled"] and m["transitions"] == 360
    assert {k: v["n"] for k, v in m["own"].items()} == {"env": 120, "negated": 120, "scaled": 120}
    # each proxy is an affine map of the true reward on its own transitions, and on the pooled ones
    expected = {"env": 1.0, "negated": -1.0, "scaled": 1.0}
    for name, sign in expected.items():
        for stat in ("pearson", "spearman"):
            assert m["own"][name][stat] == pytest.approx(sign, abs=1e-6), (name, stat)
    for stat in ("pearson", "spearman"):
        signs = np.array([1.0, *expected.values()])
        assert np.allclose(np.array(m[stat], dtype=float), np.outer(signs, signs), atol=1e-6), stat
    assert m["policies"]["negated"] == ["random", "random"]


def test_report_shows_gantt_charts_and_text_samples(tmp_path: Path) -> None:
    from PIL import Image

    from envs.jobshop.instance import JobShopInstance
    from envs.jobshop.schedule import schedule_json

    instance = JobShopInstance("tiny", np.array([[3, 2], [2, 4]]), np.array([[0, 1], [1, 0]]))
    jobshop = _fake_run(tmp_path, "js_s0", "env", 0, true=[-9, -7], proxy=[-9, -7])
    (jobshop / "schedules").mkdir()  # job 0: M0 0-3, M1 3-5; job 1: M1 0-2, M0 3-7: makespan 7
    (jobshop / "schedules" / "tiny.json").write_text(json.dumps(schedule_json(instance, np.array([[0, 3], [0, 3]]))))
    text = _fake_run(tmp_path, "text_s0", "fn", 0, true=[0.1, 0.5], proxy=[0.2, 0.9])
    records = [{"prompt": f"prompt {k}", "response": f"<script>alert({k})</script> & reply {k}", "true_reward": k / 10}
               for k in range(5)]  # fmt: skip
    (text / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    built = report.build(tmp_path, reps=100, with_distances=False)
    md, page = built["md"].read_text(), built["html"].read_text()
    png = next((tmp_path / "report_files").glob("*_gantt_s0.png"))
    assert f"(report_files/{png.name})" in md and "(js_s0/schedules/tiny.json)" in md
    frame = np.asarray(Image.open(png).convert("RGB"))
    # the env's renderer: 512 x 288, the makespan (7) as a red line at 28 + int(7 * 478 / (1.04 * 7)) = 487
    assert frame.shape == (288, 512, 3) and frame[100, 487].tolist() == [200, 30, 30]
    assert page.count('src="data:image/png;base64,') == 3  # two groups' curves and one Gantt chart, inline
    # the first three samples in place of the videos, escaped in both files
    assert "reply 2" in md and "reply 3" not in md and "&lt;script&gt;alert(0)&lt;/script&gt; &amp; reply 0" in page
    assert "<script>" not in page and "<script>" not in md
    assert 'src="text_s0/videos/final_ep0.mp4"' not in page and 'src="js_s0/videos/final_ep0.mp4"' in page


def test_report_of_a_real_jobshop_run(run_cli, tmp_path: Path) -> None:
    out = run_cli("run.py", ["env=jobshop", "env.size=4x4", "reward=shaped", "reward.scale=-1", "agent=maskable_ppo",
                             "preset=smoke", "steps=128", "eval.every=128", "agent.hyperparams.n_steps=64", "eval.n_envs=1",
                             "video.max_frames=5", "progress=false", f"hydra.run.dir={tmp_path / 'S' / 'neg_s0'}"])  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    built = report.build(tmp_path / "S", reps=100, distance_samples=300)
    md = built["md"].read_text()
    # no closed form on job-shop: the final policy's own transitions (loaded from its checkpoint), proxy = -true
    assert "## Reward distances on jobshop" in md and "| EPIC |" not in md
    assert "jobshop / shaped / maskable_ppo: Pearson -1.000, Spearman -1.000 (n=300)" in md
    assert "| 1: jobshop / shaped / maskable_ppo | -1.000 | 1.000 |" in md
    assert "Gantt charts of the final schedules" in md and len(list((tmp_path / "S" / "report_files").glob("*gantt*"))) == 1


def test_a_reward_on_frames_is_correlated_on_its_own_transitions_where_the_env_has_a_closed_form(
    run_cli, tmp_path: Path
) -> None:
    args = ["env=cartpole", "env.sutton_barto_reward=true", "reward=fn", "reward.target=tests.helpers:brightness",
            "reward.frames=true", "env.render.width=48", "env.render.height=32", "preset=smoke", "steps=256",
            "eval.every=256", "agent.hyperparams.n_steps=32", "eval.n_envs=1", "video.final_episodes=0",
            "progress=false", f"hydra.run.dir={tmp_path / 'S' / 'bright_s0'}"]  # fmt: skip
    out = run_cli("run.py", args)
    assert out.returncode == 0, out.stderr[-3000:]
    md = report.build(tmp_path / "S", reps=100, distance_samples=200)["md"].read_text()
    # no EPIC for it (uniform-random states have no frames), but its own transitions, frames rendered and scored
    assert "cartpole / fn / ppo: correlated on its own transitions only (it needs frame)" in md
    assert "Rewards that score rendered frames cannot be put on uniform-random states" in md
    own = re.search(r"cartpole / fn / ppo: Pearson (-?[\d.]+|undef\.), Spearman (-?[\d.]+|undef\.) \(n=200\)", md)
    assert own is not None, md
