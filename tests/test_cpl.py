"""Offline preferences: a preference dataset cut from a mixed dataset; CPL and P-IQL learn from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.offline.bc import BC
from agents.offline.cpl import CPL, biased_bce
from agents.offline.iql import IQL
from envs.errors import ConfigError
from experiments import prefs
from experiments.evaluation import evaluate
from rewards.env import EnvReward
from rewards.preference.model import MlpRewardModel
from rewards.preference.provider import PreferenceReward
from rewards.preference.segments import LEFT, PreferencePairs
from tests.helpers import offline_agent, reward_venv
from tests.test_offline import _mixed_cartpole, _Quiet, root  # noqa: F401  (fixture)


def test_biased_bce_is_cpl_loss() -> None:
    import torch

    a, b = torch.tensor([2.0]), torch.tensor([1.0])
    expected = -torch.nn.functional.logsigmoid(a - 0.5 * b)
    assert torch.allclose(biased_bce(a, b, torch.tensor([1.0]), 0.5), expected)
    # bias 1: the plain Bradley-Terry loss on advantages; equal labels: the mean of both orderings
    both = 0.5 * (-torch.nn.functional.logsigmoid(a - b) - torch.nn.functional.logsigmoid(b - a))
    assert torch.allclose(biased_bce(a, b, torch.tensor([0.5]), 1.0), both)


def test_prefs_then_cpl_and_p_iql_beat_bc_on_mixed_data(root: Path) -> None:  # noqa: F811
    _mixed_cartpole(root)
    out = prefs.main(["dataset=local/cartpole/mixed-v0", "pairs=600", "segment=20", "name=oracle"])
    pairs = PreferencePairs.load(out["path"])
    assert len(pairs) == 600 and out["labels"]["skip"] == 0 and out["labels"]["equal"] > 0  # ties: equal
    # the teacher prefers the segment that stays alive longer
    alive = pairs.left.valid().sum(1) - pairs.right.valid().sum(1)
    assert np.all((pairs.labels == LEFT)[alive > 0]) and np.all((pairs.labels != LEFT)[alive < 0])
    with pytest.raises(ConfigError, match="already exists"):
        prefs.main(["dataset=local/cartpole/mixed-v0", "name=oracle"])

    scores = {}
    for name, cls, extra in (
        ("bc", BC, {"batch_size": 256}),
        ("cpl", CPL, {"preferences": "oracle", "max_steps": 3000, "learning_rate": 3e-4, "batch_size": 64}),
        ("p-iql", IQL, {"max_steps": 3000, "batch_size": 256}),
    ):
        if name == "p-iql":  # the two-step baseline: a reward model from the same pairs, then IQL on its labels
            reward = PreferenceReward(pairs=out["path"], model=MlpRewardModel(members=3), epochs=30)
            env = reward_venv("cartpole", reward)
        else:
            env = reward_venv("cartpole", EnvReward())
        agent = offline_agent(cls, env, seed=0, dataset="local/cartpole/mixed-v0", hidden=(64, 64), **extra)
        agent.train(3000, _Quiet())
        eval_env = reward_venv("cartpole", EnvReward(), n=4)
        scores[name] = np.mean([e.true_return for e in evaluate(agent, eval_env, 8, seed=123)])
        eval_env.close()
        env.close()
    print(scores)
    assert scores["cpl"] >= 400 and scores["cpl"] > scores["bc"] + 100, scores
    assert scores["p-iql"] > scores["bc"] + 100, scores


def test_cpl_without_the_preference_file_lists_what_exists(root: Path) -> None:  # noqa: F811
    _mixed_cartpole(root)
    env = reward_venv("cartpole", EnvReward())
    with pytest.raises(ConfigError, match=r"no preference file .*this dataset has: none .*prefs\.py"):
        offline_agent(CPL, env, dataset="local/cartpole/mixed-v0", preferences="nope")
    env.close()
