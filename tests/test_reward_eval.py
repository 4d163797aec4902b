"""Reward comparisons: correlations, EPIC's known answers, closed-form true rewards, reward_eval.py."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs.cards import card, numpy_fn
from rewards import distance
from rewards.base import TransitionBatch
from rewards.shaped import ShapedReward

cartpole = numpy_fn(card("rewardlab/CartPole-v1").reward_fn)
pendulum = numpy_fn(card("rewardlab/Pendulum-v1").reward_fn)


def _random_transitions(n: int, seed: int = 0) -> distance.Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3))
    action = rng.normal(size=(n, 2))
    next_obs = rng.normal(size=(n, 3))
    return distance.Transitions(obs, action, next_obs)


def _base(o, a, s, f=None):  # a reward that depends on all three arguments
    return np.sin(o[:, 0]) + a[:, 0] * s[:, 1] - 0.5 * s[:, 2] ** 2


def _phi(x):
    return 5.0 * np.cos(x[:, 0]) + 2.0 * x[:, 1] ** 2


GAMMA = 0.9


def _shaped(o, a, s, f=None):
    return _base(o, a, s) + GAMMA * _phi(s) - _phi(o)


W_RANDOM = np.random.default_rng(123).normal(size=(8, 3 + 2 + 3))
V_RANDOM = np.random.default_rng(124).normal(size=8)


def _random_reward(o, a, s, f=None):  # a fixed random function of (s, a, s'), unrelated to _base
    return np.tanh(np.concatenate([o, a, s], 1) @ W_RANDOM.T) @ V_RANDOM


def _epic_by_definition(reward_a, reward_b, data: distance.Transitions, coverage: distance.Transitions, gamma: float) -> float:
    """EPIC straight from its definition (Gleave et al. 2021, Def. 4.1 and 4.2), exact expectations.

    ``S, S'`` uniform over the coverage's next states and ``A`` uniform over its actions, independent:
    ``E[R(x, A, S')]`` is the mean over all (action, next state) pairs. The constant
    ``E[gamma R(S, A, S')]`` is left out (a correlation ignores constants); ``numpy.corrcoef`` then gives rho.
    """
    pair_a = np.repeat(coverage.action, len(coverage.next_obs), axis=0)
    pair_s = np.tile(coverage.next_obs, (len(coverage.action), 1))

    def mean_over_pairs(reward, states: np.ndarray, block: int = 16) -> np.ndarray:
        out = []
        for start in range(0, len(states), block):  # `block` states at a time, each against every pair
            x = states[start : start + block]
            values = reward(np.repeat(x, len(pair_a), axis=0), np.tile(pair_a, (len(x), 1)), np.tile(pair_s, (len(x), 1)), None)
            out.append(np.asarray(values, dtype=np.float64).reshape(len(x), len(pair_a)).mean(1))
        return np.concatenate(out)

    def canonical(reward) -> np.ndarray:
        direct = reward(data.obs, data.action, data.next_obs, None)
        return direct + gamma * mean_over_pairs(reward, data.next_obs) - mean_over_pairs(reward, data.obs)

    rho = np.corrcoef(canonical(reward_a), canonical(reward_b))[0, 1]
    return float(np.sqrt((1.0 - rho) / 2.0))


def test_rank_correlations_match_independent_values() -> None:
    a = np.array([1.0, 2.0, 2.0, 3.0, 10.0])
    b = np.array([2.0, 1.0, 4.0, 4.0, 5.0])
    # by hand: deviations give 16.4 / sqrt(53.2 * 10.8); average ranks (1, 2.5, 2.5, 4, 5) and
    # (2, 1, 3.5, 3.5, 5) give 7.25 / 9.5
    assert distance.pearson(a, b) == pytest.approx(16.4 / np.sqrt(53.2 * 10.8), abs=1e-9)
    assert distance.spearman(a, b) == pytest.approx(7.25 / 9.5, abs=1e-9)
    assert distance._rank(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert distance.pearson(np.ones(4), b[:4]) is None


def test_epic_known_answers() -> None:
    data = _random_transitions(600)
    kw = dict(gamma=GAMMA, samples=128, seed=1)
    assert distance.epic_distance(_base, _base, data, **kw) == pytest.approx(0.0, abs=1e-6)
    # a potential-shaped copy: shaping cancels up to a constant, so the distance is ~0
    assert distance.epic_distance(_base, _shaped, data, **kw) == pytest.approx(0.0, abs=1e-6)
    # positive rescaling and an offset: ~0; negation: the maximum, 1
    assert distance.epic_distance(_base, lambda o, a, s, f: 5.0 * _base(o, a, s) - 2.0, data, **kw) == pytest.approx(0.0, abs=1e-6)
    assert distance.epic_distance(_base, lambda o, a, s, f: -_base(o, a, s), data, **kw) == pytest.approx(1.0, abs=1e-6)
    # a shaped negation is still at the maximum
    assert distance.epic_distance(_shaped, lambda o, a, s, f: -_base(o, a, s), data, **kw) == pytest.approx(1.0, abs=1e-6)
    # a positively rescaled, shifted and potential-shaped copy of itself: 0
    assert distance.epic_distance(_base, lambda o, a, s, f: 3.0 * _shaped(o, a, s) + 7.0, data, **kw) == pytest.approx(0.0, abs=1e-6)
    # without canonicalisation the shaped copy looks different: the invariance is EPIC's doing
    assert distance.pearson(_base(data.obs, data.action, data.next_obs), _shaped(data.obs, data.action, data.next_obs)) < 0.5


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("random", _random_reward),  # an unrelated reward
        ("shaped + random", lambda o, a, s, f=None: _shaped(o, a, s) + 0.7 * _random_reward(o, a, s)),  # partly related
    ],
)
def test_epic_matches_a_direct_implementation_of_the_definition(name: str, other) -> None:
    data, coverage = _random_transitions(200, seed=3), _random_transitions(60, seed=4)
    # the coverage's next states follow its actions, as a policy's data do, while EPIC draws A and S' independently
    # (Def. 4.1: S' ~ D_S, A ~ D_A): pairing each sampled action with its own transition's next state shows here
    coverage.next_obs[:, :2] = 2.0 * coverage.action + 0.1 * coverage.next_obs[:, :2]
    expected = _epic_by_definition(_base, other, data, coverage, GAMMA)
    # the sample-based estimate (1024 (A, S') samples per expectation) agrees with the exact value
    got = distance.epic_distance(_base, other, data, coverage, gamma=GAMMA, samples=1024, seed=0)
    assert got == pytest.approx(expected, abs=0.01), name
    # canonicalisation matters here: the raw rewards' Pearson distance is far from EPIC's
    raw = distance.pearson_distance(_base(data.obs, data.action, data.next_obs), other(data.obs, data.action, data.next_obs))
    if name != "random":
        assert abs(raw - expected) > 0.1


def test_epic_state_only_fast_path_matches_the_general_estimate() -> None:
    data = _random_transitions(300, seed=2)

    def f(o, a, s, frames=None):
        return np.tanh(s[:, 0]) + s[:, 1]

    general = distance.canonicalize(f, data, data, GAMMA, 64, np.random.default_rng(5))
    fast = distance.canonicalize(f, data, data, GAMMA, 64, np.random.default_rng(5), state_only=True)
    np.testing.assert_allclose(general - general.mean(), fast - fast.mean(), atol=1e-9)


def test_shaped_reward_provider() -> None:
    obs = np.array([[0.0, 0.0, 0.1], [1.0, 0.0, 0.0]])
    batch = TransitionBatch(obs=obs, action=np.zeros((2, 1)), next_obs=obs[::-1].copy(), env_reward=np.array([1.0, 2.0], np.float32),
                            terminated=np.array([False, True]), truncated=np.zeros(2, bool))
    provider = ShapedReward(scale=-2.0, offset=0.5, potential="rewards.examples:pendulum_potential", gamma=0.5)
    # phi = cos theta = obs[:, 0]; terminal next states have phi = 0
    expected = [-2.0 * 1.0 + 0.5 + 0.5 * 1.0 - 0.0, -2.0 * 2.0 + 0.5 + 0.0 - 1.0]
    np.testing.assert_allclose(provider.reward(batch), expected, rtol=1e-6)


@pytest.mark.parametrize("sutton_barto", [False, True])
def test_cartpole_true_reward_reproduces_the_env(sutton_barto: bool) -> None:
    env = gym.make("CartPole-v1", sutton_barto_reward=sutton_barto)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(400):
        action = int(rng.integers(2))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, reward))
        obs = env.reset()[0] if terminated or truncated else next_obs
    o, a, s, r = (np.array(x) for x in zip(*rows, strict=True))
    np.testing.assert_array_equal(cartpole(o, a, s, sutton_barto_reward=sutton_barto), r.astype(np.float32))
    assert sutton_barto == bool((r == -1).any())


def test_pendulum_true_reward_reproduces_the_env() -> None:
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(300):
        action = rng.uniform(-3, 3, size=1).astype(np.float32)  # beyond the limits: the env clips
        next_obs, reward, _, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, reward))
        obs = env.reset()[0] if truncated else next_obs
    o, a, s, r = (np.array(x) for x in zip(*rows, strict=True))
    np.testing.assert_allclose(pendulum(o, a, s), r, atol=1e-4)


@pytest.mark.parametrize(
    ("args", "pearson", "epic"),
    [
        (["reward=env"], 1.0, 0.0),
        (["reward=shaped", "reward.scale=-1"], -1.0, 1.0),
        (["reward=shaped", "reward.scale=3", "reward.potential=rewards.examples:cartpole_potential"], None, 0.0),
    ],
)
def test_reward_eval_on_cartpole(run_cli, tmp_path: Path, args: list[str], pearson: float | None, epic: float) -> None:
    out = tmp_path / "eval"
    proc = run_cli("reward_eval.py", ["env=cartpole", "env.sutton_barto_reward=true", *args, "samples=600", f"out={out}"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "reward_eval.json").read_text())
    assert result["samples"] == 600 and result["true_reward"]["min"] == -1.0
    if pearson is not None:
        assert result["pearson"] == pytest.approx(pearson, abs=1e-6)
    assert result["epic_distance"] == pytest.approx(epic, abs=1e-4)
    assert result["epic"]["true_reward_max_error"] == 0.0
    assert (out / "reward_eval.png").stat().st_size > 1000


def test_reward_eval_says_why_figures_are_missing(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = run_cli("reward_eval.py", ["env=cartpole", "samples=100", f"out={out}"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "reward_eval.json").read_text())
    assert result["pearson"] is None and result["epic_distance"] is None
    assert any("constant (1)" in note for note in result["notes"])
    proc = run_cli("reward_eval.py", ["env=halfcheetah", "samples=8", "n_envs=2", f"out={out}"])
    assert proc.returncode == 0, proc.stderr
    assert any("no true_reward" in note for note in json.loads((out / "reward_eval.json").read_text())["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reward=nope"], "unknown reward 'nope'"),
        (["samples=0"], "samples=0 must be an integer >= 2"),
        (["policy=/nonexistent"], "neither 'random' nor a rewardlab run directory"),
        (["epic.gamma=2"], "epic.gamma=2"),
    ],
)
def test_reward_eval_bad_input(run_cli, tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli("reward_eval.py", args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("agent", ["ppo", pytest.param("sac", marks=pytest.mark.slow)])  # SAC restores a replay buffer too
def test_reward_eval_with_a_trained_policy(run_cli, tmp_path: Path, agent: str) -> None:
    from rewards.examples import pendulum_upright

    run = tmp_path / "run"
    budget = ["agent.hyperparams.n_steps=128"] if agent == "ppo" else []  # an update within the smoke budget
    proc = run_cli("run.py", ["env=pendulum", f"agent={agent}", "preset=smoke", *budget, "video.final_episodes=0", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "eval"
    proc = run_cli("reward_eval.py", ["env=pendulum", "reward=fn", "reward.target=rewards.examples:pendulum_upright",
                                      f"policy={run}", "samples=120", "epic.samples=1024", f"out={out}"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "reward_eval.json").read_text())
    assert result["policy"] == str(run)
    saved = np.load(out / "reward_eval_samples.npz")
    obs, action, next_obs = saved["obs"], saved["action"], saved["next_obs"]
    # the provider scored the transitions that were saved, and the figures follow from them
    np.testing.assert_allclose(saved["proxy_reward"], pendulum_upright(obs, action, next_obs), rtol=1e-6)
    np.testing.assert_allclose(saved["true_reward"], pendulum(obs, action, next_obs), atol=1e-4)
    assert result["pearson"] == pytest.approx(np.corrcoef(saved["true_reward"], saved["proxy_reward"])[0, 1], abs=1e-6)
    assert result["pearson"] > 0.5  # the tip height tracks the env's angle cost
    # EPIC: the reported estimate agrees with the definition computed on the same transitions
    idx = saved["epic_index"]
    expected = _epic_by_definition(
        lambda o, a, s, f=None: pendulum(o, a, s).astype(np.float64),
        lambda o, a, s, f=None: pendulum_upright(o, a, s).astype(np.float64),
        distance.Transitions(obs[idx], action[idx], next_obs[idx]), distance.Transitions(obs, action, next_obs), gamma=0.99,
    )
    assert len(idx) == 120 and result["epic_distance"] == pytest.approx(expected, abs=0.01)
    proc = run_cli("reward_eval.py", ["env=cartpole", f"policy={run}"])
    assert proc.returncode == 2 and "pass env=pendulum" in proc.stderr
