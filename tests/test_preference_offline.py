"""P-IQL's first half: a reward model learned once from a preference file labels an offline dataset for IQL.

On CartPole (tests/test_cpl.py) every real step pays 1, so a positive constant is a perfect reward model
there, and P-IQL beats BC with one; Pendulum's reward depends on the state, so the labels IQL learns from
must follow the true reward, which no constant (and no sign-flipped model) does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.offline.iql import IQL
from experiments import collect, prefs
from experiments.builders import build_dataset
from rewards.preference.provider import PreferenceReward
from rewards.preference.segments import PreferencePairs
from tests.helpers import offline_agent, reward_venv


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def test_p_iql_learns_from_labels_that_follow_the_true_reward(root: Path) -> None:
    data_id = "local/pendulum/random-v0"
    collect.main(["env=pendulum", "policy=random", "episodes=12", "recipe=random", f"name={data_id}"])
    out = prefs.main([f"dataset={data_id}", "pairs=400", "segment=20", "name=oracle", "seed=1"])
    held_out = prefs.main([f"dataset={data_id}", "pairs=300", "segment=20", "name=check", "seed=2"])
    reward = PreferenceReward(pairs=out["path"], epochs=30, seed=0)
    env = reward_venv("pendulum", reward)  # binds the provider: it learns from the file here
    assert reward.rounds == 1
    # the reward model ranks fresh pairs like the true return (a constant one: 0.5)
    assert reward.model is not None and reward.model.accuracy(PreferencePairs.load(held_out["path"])) > 0.85
    # the dataset IQL learns from carries the model's labels, which follow the true reward
    node = {"_target_": "envs.data.load", "dataset_id": data_id, "root": None, "labels": "provider"}
    data = build_dataset(node, reward)
    assert not np.allclose(data.rewards, data.true_rewards)  # the proxy, not the env's reward
    assert np.corrcoef(data.rewards, data.true_rewards)[0, 1] > 0.85
    agent = offline_agent(IQL, env, seed=0, dataset=data_id, hidden=(32, 32), max_steps=10)
    assert agent.reward_stats["reward_mean"] == pytest.approx(float(data.rewards.mean()), rel=1e-4)
    env.close()
