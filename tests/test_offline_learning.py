"""Offline agents learn what their papers say they learn, on tasks where a wrong algorithm visibly fails.

* a two-step chain (discrete and Box actions) where only an *upper* expectile (IQL's tau = 0.7, not
  the mean, tau = 0.5) values the detour through the second state above a sure one-step reward;
* a tracking task with Box actions in ``[-2, 2]`` (the Gaussian path the hopper figures use): half of
  each episode's actions follow a target function, the rest are uniform; BC averages them, IQL's
  advantage weights and CPL's preferences pick the target out, whatever the units of the reward for IQL
  (its return-range scaling: unscaled labels x 0.01 make the weights ``exp(beta A)`` all about 1);
* IQL's reward rules per kind of reward (:mod:`agents.offline.iql`), over complete episodes only;
* BC cloning a scripted swing-up controller on Pendulum (Box actions, evaluated in the env).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.base import SilentCallback
from agents.offline.base import complete_episodes
from agents.offline.bc import BC
from agents.offline.cpl import CPL
from agents.offline.iql import IQL
from envs import data as ds
from envs.data import Episode, Episodes
from envs.errors import ConfigError
from rewards.env import EnvReward
from rewards.preference.segments import EQUAL, LEFT, RIGHT, PreferencePairs, Segments
from tests.helpers import offline_agent, reward_venv
from tests.test_offline import root  # noqa: F401  (fixture)

# --- a two-step chain: the expectile ------------------------------------------------------------

CHAIN_OBS = gym.spaces.Box(0.0, 1.0, (3,), np.float32)


def chain(box: bool, n: int = 25) -> Episodes:
    """One-hot states s0, s1, end. From s0: action 0 -> s1 (reward 0.05), action 1 -> end (0.65).
    From s1: action 0 -> end (1), action 1 -> end (0). The data takes every action half the time.

    With gamma = 0.99, ``Q(s0, 0) = 0.05 + 0.99 V(s1)``: 0.743 with the 0.7-expectile ``V(s1) = 0.7``
    (above the sure 0.65: go through s1), 0.545 with the mean ``V(s1) = 0.5`` (below it).
    Box actions: -0.5 for action 0, +0.5 for action 1.
    """
    eye = np.eye(3, dtype=np.float32)

    def act(k: int) -> np.ndarray:
        return np.array([-0.5 if k == 0 else 0.5], np.float32) if box else np.array(k, np.int64)

    episodes = []
    for kind in ["A"] * n + ["B"] * n + ["C"] * (2 * n):
        if kind == "C":
            obs, acts, rewards = [eye[0], eye[2]], [act(1)], [0.65]
        else:
            obs, acts, rewards = [eye[0], eye[1], eye[2]], [act(0), act(0 if kind == "A" else 1)], [0.05, float(kind == "A")]
        t = len(acts)
        episodes.append(Episode(np.stack(obs), np.stack(acts), np.array(rewards), np.arange(t) == t - 1, np.zeros(t, bool)))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if box else gym.spaces.Discrete(2)
    return Episodes.from_episodes(episodes, CHAIN_OBS, action_space, "chain")


@pytest.mark.parametrize("box", [False, True], ids=["discrete", "box"])
def test_iql_values_the_upper_expectile_and_takes_the_detour(box: bool) -> None:
    data = chain(box)
    agent = IQL(CHAIN_OBS, data.action_space, seed=0, hidden=(32, 32), batch_size=64, reward_scale=10.0)
    agent.set_dataset(data)  # (x 10: the value margins of +-0.1 become +-1, so the policy decides clearly)
    agent.train(1500, SilentCallback())
    s = agent.normalize(torch.eye(3)[:2])
    actions = torch.tensor([[-0.5], [0.5]]) if box else torch.tensor([0, 1])
    with torch.no_grad():
        v1 = float(agent.value(s[1:]).squeeze()) / 10.0
        q0 = agent.critic(s[:1].expand(2, -1), actions).min(0).values / 10.0  # Q(s0, action 0), Q(s0, action 1)
    assert v1 == pytest.approx(0.7, abs=0.06), v1  # the 0.7-expectile of {0, 1}; the mean would be 0.5
    assert float(q0[0]) > float(q0[1]) + 0.03, q0  # the detour is worth more than the sure 0.65
    if not box:  # the policy takes the detour at s0, then the rewarding action at s1
        np.testing.assert_array_equal(agent.act(np.eye(3, dtype=np.float32)[:2]), [0, 0])


# --- a tracking task with Box actions: BC, IQL, CPL ------------------------------------------------

TRACK_OBS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
TRACK_ACT = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def target(x: np.ndarray) -> np.ndarray:
    """``(batch, 2)`` states -> ``(batch, 1)`` the good action, in ``[-2, 2]``."""
    return 2.0 * np.tanh(1.5 * x[:, :1] - x[:, 1:2])


def tracking(seed: int = 0, episodes: int = 40, length: int = 25) -> Episodes:
    """Episodes of random states; each step takes the target action (w.p. the episode's skill) or a uniform
    one; reward ``-(a - target(s))^2``; every episode ends at its time limit (truncated, bootstrapped)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        x = rng.uniform(-1, 1, (length + 1, 2)).astype(np.float32)
        good = rng.random((length, 1)) < rng.random()
        noisy = target(x[:-1]) + 0.05 * rng.standard_normal((length, 1))
        a = np.where(good, noisy, rng.uniform(-2, 2, (length, 1))).clip(-2, 2).astype(np.float32)
        r = -((a - target(x[:-1])) ** 2).sum(1)
        out.append(Episode(x, a, r, np.zeros(length, bool), np.arange(length) == length - 1))
    return Episodes.from_episodes(out, TRACK_OBS, TRACK_ACT, "tracking")


def tracking_pairs(data: Episodes, path: Path, pairs: int = 400, length: int = 10, seed: int = 1) -> Path:
    """Segment pairs cut from ``data``, labelled by their true return (the oracle teacher), saved to ``path``."""
    rng = np.random.default_rng(seed)

    def cut() -> Segments:
        ep = rng.integers(data.num_episodes, size=pairs)
        first = data.episode_starts[ep] + rng.integers(0, np.diff(data.episode_starts)[ep] - length + 1)
        t = first[:, None] + np.arange(length)
        rows = data.obs_index[t]
        return Segments(data.observations[rows], data.actions[t], data.observations[rows + 1], data.true_rewards[t], ep, first)

    left, right = cut(), cut()
    diff = left.true_rewards.sum(1) - right.true_rewards.sum(1)
    labels = np.where(diff > 0, LEFT, np.where(diff < 0, RIGHT, EQUAL)).astype(np.int8)
    return PreferencePairs(left, right, labels, teacher="oracle", source="tracking").save(path)


def tracking_error(agent: object) -> float:
    """Mean ``|action - target|`` of the agent's deterministic actions on 500 fresh states."""
    x = np.random.default_rng(123).uniform(-1, 1, (500, 2)).astype(np.float32)
    return float(np.abs(agent.act(x) - target(x)).mean())  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def bc_tracking_error() -> float:
    agent = BC(TRACK_OBS, TRACK_ACT, seed=0, hidden=(64, 64))
    agent.set_dataset(tracking())
    agent.train(1000, SilentCallback())
    return tracking_error(agent)


def test_bc_averages_the_tracking_data(bc_tracking_error: float) -> None:
    assert bc_tracking_error > 0.35  # about half the target: the mean of target and uniform actions


@pytest.mark.parametrize("units", [1.0, 0.01])
def test_iql_picks_the_good_actions_whatever_the_reward_units(units: float, bc_tracking_error: float) -> None:
    data = tracking()
    agent = IQL(TRACK_OBS, TRACK_ACT, seed=0, hidden=(64, 64))
    agent.set_dataset(data.with_rewards(data.rewards * units))
    agent.train(1000, SilentCallback())
    assert agent.reward_info["rule"] == "locomotion"
    assert tracking_error(agent) < 0.1 < bc_tracking_error


def test_cpl_learns_the_good_actions_from_preferences(tmp_path: Path, bc_tracking_error: float) -> None:
    data = tracking()
    path = tracking_pairs(data, tmp_path / "oracle.npz")
    agent = CPL(TRACK_OBS, TRACK_ACT, seed=0, hidden=(64, 64), batch_size=32, preferences=str(path))
    agent.set_dataset(data)
    agent.train(1000, SilentCallback())  # 400 steps of BC (the average), then 600 of CPL
    assert tracking_error(agent) < 0.3 < bc_tracking_error - 0.05


def test_agent_iql_has_the_papers_defaults_and_the_tests_use_them() -> None:
    """``agent=iql`` as composed for a run: the paper's MuJoCo settings (CORL's iql.py), and the same values as
    the class's own defaults, which the learning tests above build on (so they test what a run gets)."""
    import inspect

    from experiments.cli import check_composes

    node = check_composes(["env=hopper", "agent=iql"]).agent
    paper = {"expectile": 0.7, "beta": 3.0, "gamma": 0.99, "polyak": 0.005, "learning_rate": 3e-4,
             "actor_learning_rate": 3e-4, "max_steps": None, "reward_scale": "auto", "actor_dropout": None,
             "batch_size": 256, "normalize_obs": True}  # fmt: skip
    assert {k: node[k] for k in paper} == paper and list(node.hidden) == [256, 256]
    defaults = {k: p.default for cls in reversed(IQL.__mro__) if "__init__" in vars(cls)
                for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not p.empty}  # fmt: skip
    assert {k: defaults[k] for k in paper} == paper and tuple(defaults["hidden"]) == (256, 256)


# --- IQL's reward rules ---------------------------------------------------------------------------


def test_iql_reward_rules_per_kind_of_reward() -> None:
    data = tracking()
    dense = IQL(TRACK_OBS, TRACK_ACT, hidden=(8,))
    dense.set_dataset(data)
    returns = data.episode_returns()
    assert dense.reward_info["rule"] == "locomotion"
    assert dense.reward_scale == pytest.approx(1000.0 / (returns.max() - returns.min()))
    np.testing.assert_allclose(dense._rewards.numpy(), data.rewards * dense.reward_scale, rtol=1e-5)

    step = np.arange(len(data))
    sparse = data.with_rewards(((step % 25 == 24) & (step // 25 % 2 == 0)).astype(np.float32))  # 1 at the goal
    # (the end of every other episode: returns 0 or 1)
    goal = IQL(TRACK_OBS, TRACK_ACT, hidden=(8,))
    goal.set_dataset(sparse)
    assert goal.reward_info["rule"] == "antmaze"
    np.testing.assert_allclose(goal._rewards.numpy(), sparse.rewards - 1.0)  # the paper's AntMaze rule

    for rule, expected in (("none", sparse.rewards), (0.5, 0.5 * sparse.rewards), ("locomotion", sparse.rewards * 1000.0)):
        agent = IQL(TRACK_OBS, TRACK_ACT, hidden=(8,), reward_scale=rule)
        agent.set_dataset(sparse)
        np.testing.assert_allclose(agent._rewards.numpy(), expected, rtol=1e-6)  # (returns 0..1: range 1)
    with pytest.raises(ConfigError, match=r"reward_scale='dense' must be one of auto, locomotion, antmaze, none"):
        IQL(TRACK_OBS, TRACK_ACT, reward_scale="dense")


def test_iql_return_range_leaves_out_pieces_cut_by_the_collection_budget(root: Path) -> None:  # noqa: F811
    """``collect.py env=pendulum policy=random steps=1000``: 4 envs give 4 episodes of 200 steps and 4
    pieces of 50 cut by the budget (issue 17, fault 5); the range is over the 200-step episodes."""
    from experiments import collect

    collect.main(["env=pendulum", "policy=random", "steps=1000", "name=local/pendulum/random-v0", "ref_episodes=0"])
    data = ds.load("local/pendulum/random-v0")
    lengths = np.diff(data.episode_starts)
    assert (lengths < 200).any() and (lengths == 200).any()  # cut pieces and complete episodes
    np.testing.assert_array_equal(complete_episodes(data), lengths == 200)
    full = data.episode_returns()[lengths == 200]
    env = reward_venv("pendulum", EnvReward())
    agent = offline_agent(IQL, env, dataset="local/pendulum/random-v0", hidden=(8,))
    assert agent.reward_info["episodes"] == int((lengths == 200).sum())
    assert agent.reward_scale == pytest.approx(1000.0 / (full.max() - full.min()), rel=1e-5)

    ends = np.zeros(len(data), dtype=bool)
    cut_only = replace(data, terminations=ends, truncations=ends)  # every episode cut short: no return to scale by
    with pytest.raises(ConfigError, match="no complete episode"):
        IQL(env.observation_space, env.action_space, hidden=(8,)).set_dataset(cut_only)
    env.close()


# --- BC on Pendulum, Box actions in [-2, 2], evaluated in the env ----------------------------------


def swing_up(obs: np.ndarray) -> np.ndarray:
    """A scripted Pendulum controller: pump energy to the upright level, then a PD law near the top.

    Args:
        obs: ``(batch, 3)`` observations ``cos(theta), sin(theta), theta_dot`` (theta = 0 upright).

    Returns:
        ``(batch, 1)`` torques in ``[-2, 2]`` (mean return about -140 over 200 steps; random: about -1200).
    """
    c, s, w = (np.asarray(obs, np.float64)[:, i] for i in range(3))
    energy = 0.5 * w**2 + 15.0 * c  # theta'' = 15 sin(theta) + 3 u: 15 at rest upright
    pump = 2.0 * np.sign(w * (15.0 - energy) + 1e-6)
    pd = -(10.0 * np.arctan2(s, c) + 2.0 * w)
    return np.clip(np.where(c > 0.8, pd, pump), -2.0, 2.0)[:, None].astype(np.float32)


def test_bc_clones_a_swing_up_controller_on_pendulum(root: Path) -> None:  # noqa: F811
    from experiments import collect
    from experiments.evaluation import evaluate

    policy = f"{__name__}:swing_up"
    collect.main(["env=pendulum", f"policy={policy}", "episodes=10", "recipe=expert", "name=local/pendulum/expert-v0"])
    env = reward_venv("pendulum", EnvReward())
    agent = offline_agent(BC, env, seed=0, dataset="local/pendulum/expert-v0", hidden=(64, 64))
    agent.train(2000, SilentCallback())
    eval_env = reward_venv("pendulum", EnvReward(), n=4)
    score = float(np.mean([e.true_return for e in evaluate(agent, eval_env, 8, seed=0)]))
    eval_env.close()
    env.close()
    assert score > -400, score  # the controller's level (about -140 to -300); hanging down is about -1200
