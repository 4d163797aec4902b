"""``reward=preference`` on the text envs (issue 20): a Bradley-Terry reward on MiniLM sentence embeddings,
learned from teacher-labelled pairs of two responses to one prompt (rewards/preference/text.py).

The learned reward must rank held-out responses like the true scorer with an honest teacher, be near
chance with a random one and anti-correlated with a lying one; a run writes proxy and true side by side;
bad input is refused before the run directory exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.errors import ConfigError
from rewards.base import TransitionBatch
from rewards.preference.provider import PreferenceReward
from rewards.preference.segments import Segments
from rewards.preference.teachers import SyntheticTeacher

from .test_text import SMALL_AGENT, SMALL_RUN


class _Liar:
    """B-Pref's noiseless teacher, every decided answer reversed (learning from it must go the wrong way)."""

    needs: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.honest = SyntheticTeacher(equal_within=1e-6)

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        return self.honest.label(right, left, rng)

    def describe(self) -> str:
        return "liar"


def _records(n_prompts: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per training prompt of the corpus: its human reply and the next prompt's (real text, scored by VADER)."""
    from envs.text import score_positive, split_pairs

    pairs = split_pairs("train", n_prompts)
    responses = [r for i, p in enumerate(pairs) for r in (p.reply, pairs[(i + 1) % len(pairs)].reply)]
    groups = np.repeat(np.arange(len(pairs)), 2)
    return responses, groups, score_positive([], responses)["sentiment"]


def _learn(teacher: Any, responses: list[str], groups: np.ndarray, true: np.ndarray) -> PreferenceReward:
    from envs.text import ResponseSpace

    provider = PreferenceReward(teacher=teacher, budget=200, queries=200, held_out=100, seed=0)
    provider.bind(gym.spaces.Box(-1, 9, (4,), np.int64), ResponseSpace(64))
    n = len(responses)
    obs = np.zeros((n, 4), np.int64)
    batch = TransitionBatch(obs, np.array(responses, dtype=object), obs, true, np.ones(n, bool), np.zeros(n, bool))
    provider.learn_from_records(batch, groups)
    return provider


def test_learned_text_reward_ranks_held_out_responses_like_the_true_scorer() -> None:
    responses, groups, true = _records(250)  # 50 prompts held out (250 // 5), 200 pairs of the other 200 labelled
    honest = _learn(SyntheticTeacher(equal_within=1e-6), responses, groups, true).metrics()
    coin = _learn(SyntheticTeacher(equal_within=1e-6, mistake=0.5), responses, groups, true).metrics()
    liar = _learn(_Liar(), responses, groups, true).metrics()
    assert honest["labels"] == 200 and honest["reward_model_train_accuracy"] > 0.8
    # Spearman over the 100 held-out responses; pairwise accuracy over their ~50 decided pairs (noisier)
    assert honest["reward_model_spearman"] > 0.45 and honest["reward_model_accuracy"] > 0.68, honest
    assert abs(coin["reward_model_spearman"]) < 0.3 and 0.3 < coin["reward_model_accuracy"] < 0.7, coin
    assert liar["reward_model_spearman"] < -0.45 and liar["reward_model_accuracy"] < 0.35, liar


def test_pairs_are_two_different_responses_to_one_prompt_and_held_out_prompts_stay_out() -> None:
    from rewards.preference.text import plan_pairs

    groups = np.array([0, 0, 0, 1, 1, 2, *np.repeat(np.arange(3, 10), 2)])
    responses = ["a", "b", "c", "d", "d", "e", *(f"r{i}" for i in range(14))]  # prompt 1: the same text twice
    plan = plan_pairs(groups, responses, held_out=10, rng=np.random.default_rng(0))
    assert plan.prompts == 8 and plan.train_prompts == 7 and len(plan.held_out) in (1, 3)  # 8 // 5 = 1 prompt held out: 0 (3 pairs) or 3..9
    every = np.concatenate([plan.train, plan.held_out])
    assert len(every) == 3 + 7 and (groups[every[:, 0]] == groups[every[:, 1]]).all()
    assert all(responses[a] != responses[b] for a, b in every)
    held_prompts = set(groups[plan.held_out_records].tolist())
    assert held_prompts == set(groups[plan.held_out.ravel()].tolist()) and len(held_prompts) == 1
    assert held_prompts.isdisjoint(groups[plan.train.ravel()].tolist())
    with pytest.raises(ConfigError, match=r"agent\.k_samples >= 1"):
        plan_pairs(np.array([0, 1]), ["x", "y"], 10, np.random.default_rng(0))


def test_prompt_response_features_hold_the_cosine(monkeypatch: pytest.MonkeyPatch) -> None:
    from rewards.preference import text

    vectors = {"p": np.array([0.6, 0.8]), "r": np.array([1.0, 0.0])}
    monkeypatch.setattr(text, "embed", lambda texts: np.stack([vectors[t] for t in texts]).astype(np.float32))
    feats = text.TextFeatures("prompt_response")
    assert feats.needs == {"prompt"}
    batch = TransitionBatch(
        np.zeros((1, 2)),
        np.array(["r"], dtype=object),
        np.zeros((1, 2)),
        np.zeros(1, np.float32),
        np.ones(1, bool),
        np.zeros(1, bool),
        {"prompt": np.array(["p"], dtype=object)},
    )
    x = feats(batch)
    assert x.shape == (1, 4) and x[0, 2:].sum() == pytest.approx(0.6)  # sum(e_p * e_r) = cos(p, r)


def test_preference_run_on_text_writes_proxy_and_true(
    run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "data"))
    run = tmp_path / "run"
    reward = ["reward=preference", "reward.budget=8", "reward.queries=4", "reward.held_out=3", "reward.epochs=5"]
    res = run_cli("run.py", [*SMALL_RUN, *reward, "agent=nll", *SMALL_AGENT, "steps=4", f"hydra.run.dir={run}"])
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reward"] == "preference" and summary["eval_episodes"] == 4
    assert summary["true_return_mean"] is not None and summary["proxy_return_mean"] is not None
    import csv

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert rows[0]["step"] == "0" and rows[-1]["step"] == "4"
    for row in rows:  # learned before the step-0 evaluation: the proxy is the model's from the start
        assert float(row["labels"]) == 8 and row["reward_model_accuracy"] != "" and row["proxy_return"] != ""
    assert rows[0]["proxy_return"] != "0.0"
    from rewards.preference.segments import PreferencePairs

    pairs = PreferencePairs.load(run / "preferences.npz")
    assert len(pairs) == 8 and pairs.left.obs.shape == (8, 1, 384) and "synthetic" in pairs.teacher
    assert (pairs.left.episode != pairs.right.episode).all()  # two different records
    assert (run / "checkpoints").is_dir()
    # said while the agent was built, before run.log existed, and kept there
    assert "text preference reward: 8 labels (0 skipped) on 13 prompts" in (run / "run.log").read_text()


CARTPOLE = ["env=cartpole", "agent=ppo", "progress=false", "video.final_episodes=0"]
TEXT = [*SMALL_RUN, "agent=nll", *SMALL_AGENT]


@pytest.mark.parametrize(
    "overrides,message",
    [
        ([*CARTPOLE, "reward.text_features=response"], "reward.text_features=response is for text envs"),
        ([*TEXT, "reward.pairs=/tmp/p.npz"], "is a file of control-env segments"),
        ([*TEXT, "reward.budget=0"], "reward.budget=0 must be >= 1"),
        ([*TEXT, "reward.text_features=both"], "reward.text_features='both' must be one of"),
        # refused from the config, before the CLIP teacher (whose default weights are not here) is loaded
        ([*TEXT, "reward/teacher=clip", "reward.teacher.goal=a kind reply"], "env: reward/teacher=clip looks at frames, which a text env does not score; use reward/teacher=synthetic or hierarchical"),
        ([*TEXT, "reward/model=cnn"], "env: reward/model=cnn looks at frames, which a text env does not score; use reward/model=mlp (sentence embeddings)"),
        (
            [*TEXT, "reward/model=cnn", "reward/teacher=clip", "reward.teacher.goal=a kind reply"],
            "env: reward/model=cnn and reward/teacher=clip look at frames",
        ),
    ],
)
def test_bad_preference_input_is_refused_without_a_run_directory(
    run_cli: Any, tmp_path: Path, overrides: list[str], message: str
) -> None:
    run = tmp_path / "bad"
    res = run_cli("run.py", ["reward=preference", *overrides, "steps=2", f"hydra.run.dir={run}"])
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
    assert len([line for line in res.stderr.splitlines() if message in line]) == 1
    assert not run.exists()


def test_text_env_refuses_frames_and_control_env_refuses_text_features() -> None:
    from rewards.preference.model import CnnRewardModel
    from rewards.preference.teachers import HierarchicalTeacher

    text_env = gym.make("rewardlab/TextHelpful-v0", n_prompts=4)
    with pytest.raises(ConfigError, match="env: reward/model=cnn looks at frames"):
        PreferenceReward(model=CnnRewardModel()).check_env(text_env)
    with pytest.raises(ConfigError, match="ranks 'sentiment'"):
        PreferenceReward(teacher=HierarchicalTeacher(ranking=["sentiment"])).check_env(text_env)
    ranks_the_task = HierarchicalTeacher(ranking=["relevance", "length"])  # text-helpful's reward terms
    PreferenceReward(teacher=ranks_the_task).check_env(text_env)
    PreferenceReward(text_features="prompt_response").check_env(text_env)
    with pytest.raises(ConfigError, match="is for text envs"):
        PreferenceReward(text_features="prompt_response").check_env(gym.make("CartPole-v1"))
    with pytest.raises(ConfigError, match="only on a text env"):
        provider = PreferenceReward()
        provider.bind(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))
        provider.learn_from_records(None, np.zeros(0))  # type: ignore[arg-type]
    text_env.close()
