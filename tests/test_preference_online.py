"""reward=preference online: PPO learns CartPole from a synthetic teacher, SAC's replay buffer is relabelled,
the provider's state survives a resume, HERON's teacher reads the env's reward terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.sb3 import SB3Agent
from envs.errors import ConfigError
from rewards.preference.provider import PreferenceReward
from rewards.preference.segments import PreferencePairs
from rewards.preference.teachers import HierarchicalTeacher
from tests.helpers import csv_rows, reward_venv


@pytest.mark.slow  # about 45 s
def test_ppo_learns_cartpole_from_a_synthetic_teacher(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The loop runs and PPO learns. On CartPole the learned reward need not depend on the state: every real step
    pays 1, so a positive constant is a perfect reward model under padding (the learned one is nearly that);
    that the model learns a reward is checked on Pendulum (test_preference_pretrain.py)."""
    res = run_cli(
        "run.py",
        [
            "env=cartpole",
            "reward=preference",
            "reward/teacher=synthetic",
            "agent=ppo",
            "steps=20000",
            "eval.every=5000",
            "video.final_episodes=0",
            "hydra.run.dir=run",
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert float(rows[0]["labels"]) == 0 and float(rows[-1]["labels"]) == 200
    acc = [float(r["reward_model_accuracy_all"]) for r in rows if r["reward_model_accuracy_all"]]
    assert acc and min(acc) > 0.75  # the learned reward ranks held-out segments like the true return
    # pairs of equally long segments tie on CartPole: no decided pair to measure the model on
    assert all(np.isnan(float(r["reward_model_accuracy"])) for r in rows if r["reward_model_accuracy"])
    # training episodes (stochastic policy): ~20 steps at first; the learned reward teaches balancing
    train = [float(r["train_true_return"]) for r in rows if r["train_true_return"]]
    assert train[-1] > 5 * train[0]
    assert float(rows[-1]["true_return"]) > 250
    pairs = PreferencePairs.load(tmp_path / "run" / "preferences.npz")
    assert len(pairs) == 200 and "synthetic" in pairs.teacher


@pytest.mark.heavy
def test_resume_restores_the_reward_model_and_its_labels(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    common = ["reward.budget=100", "reward.queries=10", "reward.every=500", "reward.first_after=500"]
    res = run_cli(
        "run.py",
        [
            "env=cartpole",
            "reward=preference",
            "agent=ppo",
            "steps=1024",
            *common,
            "eval.episodes=2",
            "eval.final_episodes=2",
            "video.final_episodes=0",
            "hydra.run.dir=run",
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    first = csv_rows(tmp_path / "run" / "metrics.csv")[-1]
    res = run_cli("run.py", [f"resume={tmp_path / 'run'}", "steps=2048"])
    assert res.returncode == 0, res.stderr[-3000:]
    last = csv_rows(tmp_path / "run" / "metrics.csv")[-1]
    assert float(first["labels"]) == 20 and float(last["labels"]) == 40  # continued, not restarted
    assert len(PreferencePairs.load(tmp_path / "run" / "preferences.npz")) == 40


def test_sac_replay_buffer_is_relabelled_with_the_new_reward_model() -> None:
    torch.manual_seed(0)
    provider = PreferenceReward(
        budget=40,
        queries=20,
        every=10**9,
        first_after=10**9,
        segment=20,
        held_out=0,
        epochs=5,
        rescale=True,
        pretrain=False,
    )
    venv = reward_venv("pendulum", provider, observe=True)
    agent = SB3Agent("SAC", venv, seed=0, device="cpu", hyperparams={"learning_starts": 100, "buffer_size": 1000})

    class Cb:
        def on_step(self, n: int) -> bool:
            return True

        def on_log(self, n: int, values: object) -> None:
            pass

    agent.train(400, Cb())
    buffer = agent.model.replay_buffer
    assert np.all(buffer.rewards[:400] == 0)  # no round yet (and no pre-training): zero reward
    provider.round()
    assert provider.version == provider.rounds == 1
    agent.relabel(provider)
    obs = buffer.observations[:400, 0]
    act = agent.model.policy.unscale_action(buffer.actions[:400, 0])  # the env's actions (SB3 stores them in [-1, 1])
    assert np.abs(act).max() > 1.0  # pendulum's torque range is [-2, 2]: the model must see the env's actions
    np.testing.assert_allclose(
        buffer.rewards[:400, 0], provider.model.predict(obs, act) / provider.scale, rtol=1e-5, atol=1e-6
    )
    # rescaled: the buffer holds exactly the kept episodes, so their mean |proxy| is 1
    assert provider.scale != 1.0 and np.isclose(np.mean(np.abs(buffer.rewards[:400])), 1.0, rtol=1e-4)
    assert np.std(buffer.rewards[:400]) > 0
    venv.close()


def test_hierarchical_teacher_reads_the_envs_reward_terms() -> None:
    provider = PreferenceReward(
        teacher=HierarchicalTeacher(ranking=["forward", "ctrl"]),
        budget=10,
        queries=10,
        every=10**9,
        first_after=10**9,
        segment=10,
        held_out=0,
    )
    venv = reward_venv("halfcheetah", provider, observe=True)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(1000):  # one episode (the time limit)
        venv.step(rng.uniform(-1, 1, size=(1, 6)).astype(np.float32))
    provider.round()
    seg = provider.pairs.left
    assert set(seg.components) >= {"forward", "ctrl"}
    # the label follows the forward term wherever it is not a near-tie
    fwd = provider.pairs.left.components["forward"].sum(1) - provider.pairs.right.components["forward"].sum(1)
    decided = (
        np.abs(fwd)
        > 0.1
        * np.concatenate(
            [provider.pairs.left.components["forward"].sum(1), provider.pairs.right.components["forward"].sum(1)]
        ).std()
    )
    assert decided.any()
    np.testing.assert_array_equal(provider.pairs.labels[decided], np.where(fwd[decided] > 0, 0, 1))
    venv.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="teacher"):
        PreferenceReward(teacher="oracle")
    with pytest.raises(ConfigError, match="ranking"):
        PreferenceReward(teacher=HierarchicalTeacher())
    with pytest.raises(ConfigError, match="sampling"):
        PreferenceReward(sampling="random")


def test_the_teacher_and_the_model_are_config_groups() -> None:
    from experiments.builders import build_reward
    from experiments.cli import CONF_DIR, check_composes, group_choices
    from rewards.preference.model import CnnRewardModel, MlpRewardModel
    from rewards.preference.provider import MODELS, TEACHERS
    from rewards.preference.teachers import SyntheticTeacher, VlmTeacher

    assert set(TEACHERS) == set(group_choices("reward/teacher", CONF_DIR))
    assert set(MODELS) == set(group_choices("reward/model", CONF_DIR))

    default = build_reward(check_composes(["reward=preference"]).reward)
    assert isinstance(default.teacher, SyntheticTeacher) and default.teacher.equal_within == 1e-6
    assert type(default.model_factory) is MlpRewardModel and default.model_factory.hidden == (64, 64)
    assert default.needs == frozenset() and not default.rescale and default.device.type == "cpu"

    chosen = [
        "reward=preference",
        "reward/teacher=hierarchical",
        "reward.teacher.ranking=[forward,ctrl]",
        "reward.teacher.mistake=0.1",
        "reward/model=cnn",
        "reward.model.members=2",
        "reward.model.channels=[4,8,8]",
        "device=cpu",
    ]
    provider = build_reward(check_composes(chosen).reward)
    assert isinstance(provider.teacher, HierarchicalTeacher) and provider.teacher.ranking == ["forward", "ctrl"]
    assert provider.teacher.mistake == 0.1
    assert isinstance(provider.model_factory, CnnRewardModel) and provider.model_factory.channels == (4, 8, 8)
    assert provider.needs == frozenset({"frame"}) and not provider.rescale  # with pre-training on, rescaling hurt the CNN too (docs/figures.md)

    clip = check_composes(["reward=preference", "reward/teacher=clip", "reward.teacher.goal=a pole", "device=cpu"])
    assert clip.reward.teacher._target_.endswith(VlmTeacher.__name__) and clip.reward.teacher.device == "cpu"
    assert VlmTeacher.needs == frozenset({"frame"})

    # the old form (a dot) would replace the node by a string: refused with the group's form and its choices
    for old, group in (("reward.teacher=clip", "teacher"), ("reward.model=cnn", "model")):
        with pytest.raises(ConfigError, match=rf"write reward/{group}=<name> \(choices: "):
            build_reward(check_composes(["reward=preference", old]).reward)
    with pytest.raises(ConfigError, match=r"reward\.teacher\.ranking"):
        build_reward(check_composes(["reward=preference", "reward/teacher=hierarchical"]).reward)
