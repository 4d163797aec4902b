"""Schedules after a resume with a larger budget (issue 17, fault 3): offline agents' and stable-baselines3's.

``agent=iql ... steps=300``, then ``resume=RUN steps=600``, must continue on the schedule a fresh
``steps=600`` run has: IQL's cosine actor learning rate, CPL's BC phase, optimiser reset and warm-up.
The agents are built as the runner builds them: from the composed config, and on resume from the
first run's *resolved* config (what ``config.yaml`` stores) with only ``steps`` changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.builders import build_agent, build_dataset
from experiments.cli import check_composes, expand_shorthands
from rewards.env import EnvReward
from tests.helpers import csv_rows, reward_venv

DATASET = "local/cartpole/random-v0"
SMALL = ["agent.hidden=[16,16]", "agent.batch_size=16", "agent.log_every=25"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small random CartPole dataset and preference pairs cut from it."""
    from experiments import collect, prefs

    root = tmp_path_factory.mktemp("datasets")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    collect.main(["env=cartpole", "policy=random", "episodes=8", f"name={DATASET}"])
    prefs.main([f"dataset={DATASET}", "pairs=60", "segment=5", "name=default"])
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


class _Record:
    """Records after every step the actor's learning rate and, for CPL, the phase (BC: no CPL loss); stops at ``stop``."""

    def __init__(self, agent: Any, stop: int | None = None) -> None:
        self.agent, self.stop = agent, stop
        self.seen: dict[int, tuple[float, str]] = {}
        self.phase = ""

    def on_step(self, n: int) -> bool:
        self.seen[n] = (float(self.agent.optimizers["actor"].param_groups[0]["lr"]), self.phase)
        return n != self.stop

    def on_log(self, n: int, values: Mapping[str, float]) -> None:  # every step (log_every=1), before on_step
        self.phase = "" if "loss_cpl" not in values else ("bc" if values["loss_cpl"] == 0.0 else "cpl")


def _node(agent: str, steps: int) -> dict[str, Any]:
    """The agent's config node of a run with ``steps``, resolved as the run directory's config.yaml keeps it."""
    args = ["env=cartpole", f"agent={agent}", f"steps={steps}", f"dataset={DATASET}", *SMALL, "agent.log_every=1"]
    cfg = check_composes(expand_shorthands(args))
    return OmegaConf.to_container(cfg.agent, resolve=True)  # type: ignore[return-value]


def _agent(node: Mapping[str, Any]) -> Any:
    env = reward_venv("cartpole", EnvReward())
    data = build_dataset({"_target_": "envs.data.load", "dataset_id": DATASET, "root": None}, env.provider)
    agent = build_agent(dict(node), env, env.provider, 0, "cpu", dataset=data)
    env.close()
    return agent


@pytest.mark.parametrize("stop", [300, 100], ids=["finished", "interrupted"])
@pytest.mark.parametrize("name", ["iql", "cpl"])
def test_resume_with_a_larger_budget_continues_the_fresh_runs_schedule(
    name: str, stop: int, datasets: Path, tmp_path: Path
) -> None:
    first = _agent(_node(name, 300))  # steps=300, finished (or interrupted at step 100)
    first.train(300, _Record(first, stop=stop))
    assert first.num_steps == stop
    first.save(tmp_path / "ckpt")

    resumed = _agent(_node(name, 300))  # resume=RUN steps=600: the saved, resolved config; only steps changes
    resumed.load(tmp_path / "ckpt")
    after = _Record(resumed)
    resumed.train(600, after)

    fresh = _agent(_node(name, 600))
    straight = _Record(fresh)
    fresh.train(600, straight)

    steps = sorted(after.seen)
    assert steps == list(range(stop + 1, 601))
    np.testing.assert_allclose([after.seen[n][0] for n in steps], [straight.seen[n][0] for n in steps], rtol=1e-6)
    assert [after.seen[n][1] for n in steps] == [straight.seen[n][1] for n in steps]
    if name == "cpl":  # the phase switches where the fresh run's does: 40% of the new budget
        assert [straight.seen[n][1] for n in (240, 241)] == ["bc", "cpl"]
    if name == "iql":  # the cosine reaches 0 at the new budget and never climbs back to the initial rate
        assert after.seen[600][0] < 1e-8
        assert max(lr for lr, _ in after.seen.values()) <= 3e-4 * 0.5 * (1 + np.cos(np.pi * stop / 600)) + 1e-12


@pytest.mark.slow  # ~17 s through run.py; the in-process resume tests above check the same schedules
def test_run_py_resume_with_a_larger_budget_logs_the_fresh_runs_learning_rates(
    datasets: Path, run_cli: Any, tmp_path: Path
) -> None:
    """The same through run.py: ``steps=300``, then ``resume=RUN steps=600``, against a fresh ``steps=600``."""
    common = ["env=cartpole", "agent=iql", f"dataset={DATASET}", *SMALL, "eval.every=300", "eval.episodes=1",
              "eval.final_episodes=1", "video.final_episodes=0"]  # fmt: skip
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    for args in ([*common, "steps=300", f"hydra.run.dir={run}"], [f"resume={run}", "steps=600"],
                 [*common, "steps=600", f"hydra.run.dir={fresh}"]):  # fmt: skip
        res = run_cli("run.py", args)
        assert res.returncode == 0, res.stderr[-2000:]
    resumed = {int(r["step"]): float(r["lr_actor"]) for r in csv_rows(run / "train.csv")}
    straight = {int(r["step"]): float(r["lr_actor"]) for r in csv_rows(fresh / "train.csv")}
    later = [s for s in straight if s > 300]
    assert later and all(s in resumed for s in later)
    np.testing.assert_allclose([resumed[s] for s in later], [straight[s] for s in later], rtol=1e-6)


# --- stable-baselines3's schedules ------------------------------------------------------------------


def _sb3_updates(agent: Any) -> list[tuple[int, float, float]]:
    """Records, at every update of ``agent``'s SB3 model, the step, SB3's progress clock and the learning rate set."""
    model, seen = agent.model, []
    original = model._update_learning_rate

    def update_learning_rate(optimizers: Any) -> None:
        original(optimizers)
        first = optimizers[0] if isinstance(optimizers, list) else optimizers
        seen.append((model.num_timesteps, model._current_progress_remaining, first.param_groups[0]["lr"]))

    model._update_learning_rate = update_learning_rate
    return seen


class _StopAt:
    """Stops training after step ``stop`` (``None``: at the budget)."""

    def __init__(self, stop: int | None) -> None:
        self.stop = stop

    def on_step(self, n: int) -> bool:
        return n != self.stop

    def on_log(self, n: int, values: Mapping[str, float]) -> None:
        pass


PPO_LIN = {"learning_rate": "lin_1e-3", "n_steps": 32, "batch_size": 32, "n_epochs": 1}
SAC_LIN = {"learning_rate": "lin_1e-3", "learning_starts": 8, "batch_size": 8, "buffer_size": 200}
DQN_LIN = {**SAC_LIN, "train_freq": 4}  # (the same progress clock drives its exploration rate)


@pytest.mark.parametrize(
    ("algo", "env", "hyperparams", "stop", "budget"),
    [
        ("PPO", "cartpole", {**PPO_LIN, "clip_range": "lin_0.2"}, 128, 256),
        ("PPO", "cartpole", PPO_LIN, 100, 256),
        ("SAC", "pendulum", SAC_LIN, 45, 128),
        ("DQN", "cartpole", DQN_LIN, 44, 128),
    ],
    ids=["ppo-finished", "ppo-interrupted", "sac-interrupted", "dqn-interrupted"],
)
def test_sb3_linear_schedules_after_resume_follow_the_fresh_runs(
    algo: str, env: str, hyperparams: dict[str, Any], stop: int, budget: int, tmp_path: Path
) -> None:
    """``lin_<x>`` with ``steps=B/2`` (finished, or interrupted), then a resume with ``steps=B``: every later update
    uses the progress, hence learning rate (and PPO's clip range), of a fresh ``steps=B`` run at that step. SB3
    measures progress against the total of the resumed ``learn`` call; giving it the budget instead of the
    remainder, or keeping the first run's total, would stretch or shrink the schedule."""
    from agents.sb3 import SB3Agent

    def agent() -> Any:
        return SB3Agent(algo, reward_venv(env, EnvReward()), seed=0, device="cpu", hyperparams=hyperparams)

    first = agent()
    first.train(budget // 2, _StopAt(stop))
    assert first.num_steps == stop
    first.save(tmp_path / "ckpt")
    resumed = agent()
    resumed.load(tmp_path / "ckpt")
    after = _sb3_updates(resumed)
    resumed.train(budget, _StopAt(None))
    fresh = agent()
    straight = _sb3_updates(fresh)
    fresh.train(budget, _StopAt(None))

    steps, progress, lr = (np.array(x) for x in zip(*after, strict=True))
    assert steps.min() > stop and steps.max() > budget - 32 and len(steps) >= 4  # (PPO: no update in a cut rollout)
    np.testing.assert_allclose(progress, 1.0 - steps / budget, atol=1e-12)  # the fresh run's clock, not the first run's
    np.testing.assert_allclose(lr, 1e-3 * progress, rtol=1e-9)
    fresh_at = {t: (p, r) for t, p, r in straight}
    common = [i for i, t in enumerate(steps) if t in fresh_at]  # PPO: none after an interruption (rollouts shifted)
    assert len(common) == (len(steps) if stop % 32 == 0 or algo != "PPO" else 0)
    np.testing.assert_allclose([lr[i] for i in common], [fresh_at[int(steps[i])][1] for i in common], rtol=1e-9)
    for a in (first, resumed, fresh):
        a.close()
