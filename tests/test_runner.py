"""The runner end to end, through the command line: run-directory contract, errors, resume, sweeps."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

AGENT_CONFS = REPO / "experiments" / "conf" / "agent"

FAST = ["eval.episodes=2", "eval.final_episodes=2", "eval.n_envs=2", "video.max_frames=30", "progress=false"]
SUMMARY_KEYS = {
    "env", "reward", "agent", "seed", "steps", "true_return_mean", "true_return_std", "proxy_return_mean",
    "success_rate", "eval_episodes", "wall_time_s", "git_commit", "versions",
}  # fmt: skip
METRICS_COLUMNS = ["step", "true_return", "proxy_return", "success", "episode_length", "wall_time"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _check_contract(run: Path, steps: int) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == steps
    rows = _rows(run / "metrics.csv")
    assert set(METRICS_COLUMNS) <= set(rows[0])
    assert [int(r["step"]) for r in rows] == sorted({int(r["step"]) for r in rows})  # increasing, no repeats
    assert int(rows[0]["step"]) == 0 and int(rows[-1]["step"]) == steps
    assert float(rows[-1]["true_return"]) == pytest.approx(summary["true_return_mean"], rel=1e-4)
    assert (run / "train.csv").exists()
    config = (run / "config.yaml").read_text()
    assert "${" not in config  # fully resolved
    (video,) = sorted((run / "videos").glob("final_ep*.mp4"))
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(video))
    frames = [f for f in reader]
    assert len(frames) >= 2 and frames[0].ndim == 3 and reader.get_meta_data()["codec"] == "h264"
    assert (run / "checkpoints" / "latest").exists()
    (ckpt,) = [p for p in (run / "checkpoints").iterdir() if p.is_dir()]
    assert (ckpt / "agent" / "model.zip").exists() and (ckpt / "state.json").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "metrics/true_return" in tags and "metrics/proxy_return" in tags
    assert [e.step for e in events.Scalars("metrics/true_return")] == [int(r["step"]) for r in rows]
    return summary


def test_cartpole_ppo_writes_the_run_directory_contract(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    out = run_cli("run.py", ["env=cartpole", "reward=env", "agent=ppo", "steps=3001", "seed=0", f"hydra.run.dir={run}", *FAST])
    assert out.returncode == 0, out.stderr
    assert "steps=3001 (ends at step 3008: its 8 envs step together)" in out.stderr  # said up front, not a surprise
    summary = _check_contract(run, 3008)
    from importlib.metadata import version

    assert summary["versions"]["torch"] == version("torch") and set(summary["versions"]) >= {"numpy", "gymnasium"}
    assert summary["success_rate"] is None  # CartPole defines no success
    assert summary["proxy_return_mean"] == summary["true_return_mean"]  # reward=env
    train = _rows(run / "train.csv")
    assert train and any(k.startswith("loss_") for k in train[0])


def test_halfcheetah_sac(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    args = ["env=halfcheetah", "agent=sac", "steps=1000", f"hydra.run.dir={run}", "eval.every=500", *FAST]
    args += ["env.max_episode_steps=200", "env.render.width=64", "env.render.height=64"]
    out = run_cli("run.py", [*args, "agent.hyperparams.learning_starts=800"])
    assert out.returncode == 0, out.stderr
    _check_contract(run, 1000)
    assert len(_rows(run / "train.csv")) >= 1  # 200 updates after 800 warm-up steps


def test_minigrid_ppo_reports_success(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    args = ["env=minigrid-doorkey-5x5", "agent=ppo", "steps=2000", "eval.every=1000", f"hydra.run.dir={run}"]
    out = run_cli("run.py", [*args, *FAST, "video.every=1000"])
    assert out.returncode == 0, out.stderr
    summary = _check_contract(run, 2000)
    assert summary["success_rate"] is not None and 0.0 <= summary["success_rate"] <= 1.0
    assert _rows(run / "metrics.csv")[-1]["success"] != ""
    assert summary["videos"] == ["videos/step_000001000_ep0.mp4", "videos/final_ep0.mp4"]  # video.every
    assert (run / "videos" / "step_000001000_ep0.mp4").stat().st_size > 0


def test_fn_reward_logs_proxy_beside_true(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    args = ["env=cartpole", "reward=fn", "reward.target=rewards.examples:cartpole_upright", "steps=1000", f"hydra.run.dir={run}"]
    out = run_cli("run.py", [*args, *FAST])
    assert out.returncode == 0, out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reward"] == "fn"
    # cartpole_upright pays <= 1 per step where the env pays exactly 1: proxy < true
    assert 0 < summary["proxy_return_mean"] < summary["true_return_mean"]


def test_frame_based_reward_run(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    args = ["env=cartpole", "reward=fn", "reward.target=tests.helpers:brightness", "reward.frames=true", "steps=400"]
    args += ["eval.every=400", "env.max_episode_steps=100", "env.render.width=48", "env.render.height=32"]
    out = run_cli("run.py", [*args, f"hydra.run.dir={run}", *FAST])
    assert out.returncode == 0, out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["proxy_return_mean"] < summary["true_return_mean"]  # brightness in (0, 1) per step


@pytest.mark.parametrize(
    "args,message",
    [
        (["env=nope"], "unknown env 'nope'; valid envs: ant, cartpole, halfcheetah"),
        (["agent=ppo,nope", "-m"], "unknown agent 'nope'; valid agents: " + ", ".join(sorted(p.stem for p in AGENT_CONFS.glob("*.yaml")))),
        (["reward=gpt"], "unknown reward 'gpt'; valid rewards: clip, code, env, fn, preference, shaped"),
        (["steps=-5"], "steps=-5 must be an integer >= 1"),
        (["steps=many"], "steps='many' must be an integer >= 1"),
        (["device=tpu"], "device='tpu' must be auto, cpu, cuda or cuda:N"),
        (["reward=fn"], "reward=fn needs reward.target=package.module:function"),
        (["reward=fn", "reward.target=rewards.examples:nope"], "has no attribute 'nope'"),
        (["agent=sac"], "SAC needs a Box action space"),
        (["agent.hyperparams.lerning_rate=1"], "Key 'lerning_rate' is not in struct (to append"),
        (["+agent.hyperparams.lerning_rate=1"], "PPO does not take lerning_rate (did you mean learning_rate?); accepted hyperparameters"),
        (["seed=[1"], "no viable alternative at input"),
        (["eval.every=0"], "eval.every=0 must be an integer >= 1 or null"),
        (["env=pendulum", "agent=mbpo", "agent.utd=abc"], "agent.utd='abc' must be an integer (MBPO takes utd: int)"),
        (["env=pendulum", "agent=pets", "agent.val_ratio=x"], "agent.val_ratio='x' must be a number"),
        (["agent.hyperparams.learning_rate=abc"], "agent.hyperparams.learning_rate='abc' must be a number or lin_<number>"),
        (["env=pendulum", "agent=sac", "agent.hyperparams.learning_starts=soon"], "learning_starts='soon' must be an integer"),
        (["+agent.hyperparams.seed=5"], "agent.hyperparams.seed: the run's seed= sets it"),
        (["+agent.hyperparams.policy=CnnPolicy"], "agent.hyperparams.policy: agent.policy= sets it"),
        (["env=pendulum", "agent=sac", "+agent.hyperparams.tau=0.01"], "already at 'agent.hyperparams.tau': it is set already, so give agent.hyperparams.tau=... without the '+'"),
        (["agent.hyperparams.n_steps=-5"], "agent.hyperparams.n_steps=-5 must be >= 1"),
        # refused from the config, before the CLIP model (whose default weights are not here) is loaded
        (["env=pendulum", "agent=pets", "reward=clip", "reward.goal=up"], "agent=pets plans through a learned model"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_run_dir(run_cli, tmp_path: Path, args: list[str], message: str) -> None:
    out = run_cli("run.py", [*args, "hydra.run.dir=D"], timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "D").exists()
    assert not (tmp_path / "runs").exists()


def test_a_crash_keeps_its_traceback_and_writes_no_summary(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    args = ["env=cartpole", "reward=fn", "reward.target=tests.helpers:crash_later", f"hydra.run.dir={run}", *FAST]
    out = run_cli("run.py", args)
    assert out.returncode == 1
    assert "run failed at step" in out.stderr and "RuntimeError: bug in the reward function" in out.stderr
    assert "RuntimeError: bug in the reward function" in (run / "run.log").read_text()
    assert not (run / "summary.json").exists()


def test_resume_errors(run_cli, tmp_path: Path) -> None:
    (tmp_path / "notarun").mkdir()
    out = run_cli("run.py", ["resume=notarun"])
    assert out.returncode == 2 and "not a rewardlab run directory" in out.stderr
    out = run_cli("run.py", ["resume=missing"])
    assert out.returncode == 2 and "no such directory" in out.stderr
    assert not (tmp_path / "runs").exists()  # the directory Hydra made for this launch is gone


def _latest_step(run: Path) -> int:
    latest = run / "checkpoints" / "latest"
    return int(latest.read_text().strip().split("_")[1]) if latest.exists() else -1


STEPS = 3000  # of the interrupted run: 10 ms per reward batch of 8 envs, so about 4 s of training
EVERY = 250  # its checkpoints and evaluations


def _start(run: Path, extra: list[str]) -> subprocess.Popen:
    """A run slow enough to interrupt (10 ms per reward batch), or ``extra=["resume=<run>"]``."""
    args = ["env=cartpole", "reward=fn", "reward.target=tests.helpers:slow_constant_one", f"steps={STEPS}"]
    args += [f"hydra.run.dir={run}", f"checkpoint.every={EVERY}", f"eval.every={EVERY}", "env.max_episode_steps=50", *FAST]
    if extra and extra[0].startswith("resume="):
        args = extra
    else:
        args += extra
    return subprocess.Popen(
        [sys.executable, str(REPO / "experiments" / "run.py"), *args],
        cwd=run.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, run: Path, step: int) -> None:
    deadline = time.time() + 120
    while _latest_step(run) < step:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.slow  # ~30 s of four processes (two fresh interpreters); .ci/run runs it after the default suite
def test_interrupted_run_resumes_to_one_continuous_metrics_file(run_cli, tmp_path: Path) -> None:
    """A running run refuses a second writer; SIGTERM checkpoints and exits 143; SIGKILL leaves the last
    checkpoint; two resumes later metrics.csv is the one of an uninterrupted run."""
    run = tmp_path / "D"
    proc = _start(run, [])
    _wait_for_checkpoint(proc, run, EVERY)
    os.killpg(proc.pid, signal.SIGSTOP)  # paused (its lock still held) while a second writer tries
    try:
        out = run_cli("run.py", [f"resume={run}"])
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    assert out.returncode == 2 and "is in use by pid" in out.stderr
    _wait_for_checkpoint(proc, run, 2 * EVERY)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "resume=" in err and not (run / "summary.json").exists()
    stopped = _latest_step(run)
    assert 2 * EVERY <= stopped <= STEPS - 3 * EVERY, stopped  # room left for the kill below
    state = json.loads((run / "checkpoints" / f"step_{stopped:09d}" / "state.json").read_text())
    assert state["step"] == stopped

    proc = _start(run, [f"resume={run}"])
    try:
        _wait_for_checkpoint(proc, run, stopped + EVERY)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
        proc.wait()
    killed_at = _latest_step(run)
    assert stopped < killed_at < STEPS and not (run / "summary.json").exists()

    out = run_cli("run.py", [f"resume={run}"])
    assert out.returncode == 0, out.stderr
    summary = _check_contract(run, STEPS)
    assert summary["resumes"] == 2
    # 8 envs: evaluations at the first multiple of 8 at or after each multiple of EVERY
    expected = [0, *(-(-k * EVERY // 8) * 8 for k in range(1, STEPS // EVERY)), STEPS]
    assert [int(r["step"]) for r in _rows(run / "metrics.csv")] == expected


@pytest.mark.heavy
def test_resume_refuses_changed_settings_and_finished_runs(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    command = ["env=cartpole", "preset=smoke", "steps=400", "eval.every=null", *FAST]
    assert run_cli("run.py", [*command, f"hydra.run.dir={run}"]).returncode == 0
    out = run_cli("run.py", [f"resume={run}", "seed=3"])
    assert out.returncode == 2 and "only steps=, device=, progress=, torch_threads=" in out.stderr
    out = run_cli("run.py", [f"resume={run}"])
    assert out.returncode == 2 and "is complete at step 400" in out.stderr
    out = run_cli("run.py", [f"hydra.run.dir={run}"])
    assert out.returncode == 2 and "already holds a run" in out.stderr
    out = run_cli("run.py", [f"resume={run}", "env=pendulum", "seed=0", "steps=800"])
    assert out.returncode == 2 and "(or a setting equal to the saved one), not env=pendulum\n" in out.stderr
    out = run_cli("run.py", [f"resume={run}", "eval.every=100", "preset=smoke", "steps=800"])
    assert out.returncode == 2 and "saved one), not eval.every=100\n" in out.stderr
    out = run_cli("run.py", [f"resume={run}", "steps=800", f"hydra.run.dir={tmp_path / 'E'}"])
    assert out.returncode == 2 and "continues the run in its own directory" in out.stderr
    assert not (tmp_path / "E").exists()
    # training further is allowed, and so is the run's own command again: each setting (a group choice, a
    # _global_ preset, a null) equals the saved one; ++steps= counts as steps=
    out = run_cli("run.py", [f"resume={run}", *command, "agent=ppo", "seed=0", "++steps=800"])
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 800


def test_rollout_reproduces_the_final_video(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "D"
    args = ["env=pendulum", "agent=sac", "steps=300", "agent.hyperparams.learning_starts=250", f"hydra.run.dir={run}"]
    args += ["env.max_episode_steps=60", "env.render.width=64", "env.render.height=64"]
    assert run_cli("run.py", [*args, *FAST, "eval.every=300", "video.max_frames=1000"]).returncode == 0
    log = (run / "run.log").read_text()
    out = run_cli("rollout.py", [f"run={run}", "episodes=2"])
    assert out.returncode == 0, out.stderr
    table = json.loads((run / "videos" / "rollout_step_000000300.json").read_text())
    assert [e["length"] for e in table["episodes"]] == [60, 60]
    first = table["episodes"][0]
    assert f"true return {first['true_return']:.2f}" in log  # same seed, same policy -> same episode
    assert first["proxy_return"] == pytest.approx(first["true_return"], rel=1e-5)
    assert len(list((run / "videos").glob("rollout_step_000000300_ep*.mp4"))) == 2
    bad = run_cli("rollout.py", [f"run={run}", "checkpoint=step_9"])
    assert bad.returncode == 2 and "step_000000300" in bad.stderr


@pytest.mark.heavy
def test_submitit_local_sweep(run_cli, tmp_path: Path) -> None:
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "env=pendulum", "agent=ppo"]
    out = run_cli("run.py", [*args, "steps=256", "agent.hyperparams.n_steps=64", "hydra.sweep.dir=S", *FAST])
    assert out.returncode == 0, out.stderr
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "S").glob("*/summary.json")]
    assert summary["env"] == "pendulum" and summary["steps"] == 256 and np.isfinite(summary["true_return_mean"])
