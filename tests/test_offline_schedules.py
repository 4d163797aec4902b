"""Offline agents' schedules after a resume with a larger budget (issue 17, fault 3).

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
