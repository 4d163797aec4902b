"""Preferences: segments, B-Pref's synthetic and HERON's hierarchical teachers, Bradley-Terry reward ensembles."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.data import Episodes
from envs.errors import ConfigError
from rewards.preference.model import RewardEnsemble, train_reward_model
from rewards.preference.segments import EQUAL, LEFT, RIGHT, SKIP, PreferencePairs, cut_segments
from rewards.preference.teachers import HierarchicalTeacher, SyntheticTeacher, myopic_returns
from tests.helpers import random_segments

OBS_DIM, ACT_DIM = 4, 2  # as tests.helpers.random_segments draws them
_segments = random_segments


def _data(lengths: list[int], seed: int = 0) -> Episodes:
    """A dataset of episodes of the given lengths whose reward is the first observation coordinate."""
    rng = np.random.default_rng(seed)
    steps = sum(lengths)
    obs_rows, obs_index, row = [], [], 0
    for n in lengths:
        obs_rows.append(rng.normal(size=(n + 1, OBS_DIM)).astype(np.float32))
        obs_index.extend(range(row, row + n))
        row += n + 1
    observations = np.concatenate(obs_rows)
    obs_index_arr = np.array(obs_index, dtype=np.int64)
    rewards = observations[obs_index_arr, 0].astype(np.float32)
    box = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    return Episodes(
        dataset_id="test/toy-v0",
        observations=observations,
        obs_index=obs_index_arr,
        actions=rng.uniform(-1, 1, size=(steps, ACT_DIM)).astype(np.float32),
        true_rewards=rewards,
        rewards=rewards,
        terminations=np.zeros(steps, bool),
        truncations=np.zeros(steps, bool),
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        observation_space=box,
        action_space=gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32),
        metadata={},
    )


# --- segments -------------------------------------------------------------------------------------


def test_segments_stay_inside_one_episode_and_carry_its_rewards() -> None:
    data = _data([5, 30, 12, 3])
    seg = cut_segments(data, 10, 500, np.random.default_rng(0), components={"x": data.true_rewards * 2})
    assert seg.obs.shape == (500, 10, OBS_DIM) and seg.actions.shape == (500, 10, ACT_DIM)
    assert set(np.unique(seg.episode)) == {1, 2}  # the only episodes with >= 10 steps
    lengths = np.diff(data.episode_starts)
    assert np.all(seg.start + 10 <= lengths[seg.episode])
    first = data.episode_starts[seg.episode] + seg.start
    np.testing.assert_array_equal(seg.true_rewards, data.true_rewards[first[:, None] + np.arange(10)])
    np.testing.assert_array_equal(seg.true_rewards, seg.obs[..., 0])  # reward is obs[0] of s_t
    np.testing.assert_array_equal(seg.next_obs[:, :-1], seg.obs[:, 1:])  # consecutive steps
    np.testing.assert_allclose(seg.components["x"], 2 * seg.true_rewards)
    # start positions are uniform over valid positions: episode 1 has 21, episode 2 has 3
    assert 0.8 < np.mean(seg.episode == 1) < 0.95


def test_segments_longer_than_every_episode_are_refused() -> None:
    with pytest.raises(ConfigError, match="longest 30"):
        cut_segments(_data([5, 30]), 31, 4, np.random.default_rng(0))


def test_pairs_round_trip_and_corrupted_file(tmp_path: Path) -> None:
    seg = _segments(np.arange(12, dtype=np.float32).reshape(4, 3), {"speed": np.ones((4, 3), np.float32)})
    pairs = PreferencePairs(
        seg, seg.take(np.array([3, 2, 1, 0])), np.array([LEFT, RIGHT, EQUAL, SKIP], np.int8), "t", "src"
    )
    path = pairs.save(tmp_path / "prefs.npz")
    back = PreferencePairs.load(path)
    np.testing.assert_array_equal(back.labels, pairs.labels)
    np.testing.assert_array_equal(back.right.obs, pairs.right.obs)
    np.testing.assert_array_equal(back.left.components["speed"], 1.0)
    assert (back.teacher, back.source) == ("t", "src")
    np.testing.assert_array_equal(back.targets()[:3], [1.0, 0.0, 0.5]) and np.isnan(back.targets()[3])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="unreadable"):
        PreferencePairs.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        PreferencePairs.load(tmp_path / "nope.npz")


# --- the synthetic teacher -------------------------------------------------------------------------


def test_oracle_teacher_prefers_the_larger_return() -> None:
    rng = np.random.default_rng(0)
    r0, r1 = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    labels = SyntheticTeacher().label(_segments(r0), _segments(r1), rng)
    np.testing.assert_array_equal(labels == LEFT, r0.sum(1) > r1.sum(1))


def test_mistake_rate_flips_that_fraction() -> None:
    rng = np.random.default_rng(1)
    r0, r1 = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4))
    labels = SyntheticTeacher(mistake=0.2).label(_segments(r0), _segments(r1), rng)
    wrong = np.mean((labels == LEFT) != (r0.sum(1) > r1.sum(1)))
    assert abs(wrong - 0.2) < 0.015


def test_stochastic_teacher_follows_the_boltzmann_model() -> None:
    rng = np.random.default_rng(2)
    n = 20000
    r0 = np.full((n, 1), 1.0)  # returns differ by 1 in every pair
    r1 = np.zeros((n, 1))
    for beta in (0.5, 2.0):
        labels = SyntheticTeacher(beta=beta).label(_segments(r0), _segments(r1), rng)
        assert abs(np.mean(labels == LEFT) - 1 / (1 + np.exp(-beta))) < 0.015
    labels = SyntheticTeacher(beta=0.0).label(_segments(r0), _segments(r1), rng)  # beta 0: a coin
    assert abs(np.mean(labels == LEFT) - 0.5) < 0.015


def test_myopic_teacher_weighs_late_steps_more() -> None:
    left = np.array([[3.0, 0.0, 0.0, 0.0]])  # more in total, early
    right = np.array([[0.0, 0.0, 0.0, 2.0]])  # less, late
    rng = np.random.default_rng(0)
    assert SyntheticTeacher(gamma=1.0).label(_segments(left), _segments(right), rng)[0] == LEFT
    assert SyntheticTeacher(gamma=0.5).label(_segments(left), _segments(right), rng)[0] == RIGHT
    np.testing.assert_allclose(myopic_returns(left, 0.5), [3.0 * 0.125])


def test_skip_and_equal_thresholds() -> None:
    left = np.array([[0.1], [5.0], [5.0]])
    right = np.array([[0.2], [5.05], [1.0]])
    labels = SyntheticTeacher(skip_below=1.0, equal_within=0.1).label(
        _segments(left), _segments(right), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(labels, [SKIP, EQUAL, LEFT])


def test_teacher_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="mistake"):
        SyntheticTeacher(mistake=0.7)
    with pytest.raises(ConfigError, match="gamma"):
        SyntheticTeacher(gamma=0.0)


# --- HERON's hierarchical teacher ------------------------------------------------------------------


def test_hierarchical_teacher_falls_to_the_next_component_on_near_ties() -> None:
    # pair 0: goal decides; pair 1: goal ties, speed decides; pair 2: all tie (HERON: skipped);
    # pair 3: lower energy is better
    goal0, goal1 = np.array([[1.0], [0.5], [0.5], [0.5]]), np.array([[0.0], [0.5], [0.5], [0.5]])
    speed0, speed1 = np.array([[0.0], [0.0], [1.0], [1.0]]), np.array([[3.0], [3.0], [1.0], [1.0]])
    energy0, energy1 = np.array([[0.0], [0.0], [0.0], [5.0]]), np.array([[0.0], [0.0], [0.0], [1.0]])
    left = _segments(np.zeros((4, 1)), {"goal": goal0, "speed": speed0, "energy": energy0})
    right = _segments(np.zeros((4, 1)), {"goal": goal1, "speed": speed1, "energy": energy1})
    teacher = HierarchicalTeacher(["goal", "speed", "energy"], margins=0.05, higher_is_better=[True, True, False])
    np.testing.assert_array_equal(teacher.label(left, right, np.random.default_rng(0)), [LEFT, RIGHT, SKIP, RIGHT])
    # mistakes flip decided answers only: a skipped pair stays skipped
    noisy = HierarchicalTeacher(["goal", "speed", "energy"], margins=0.05, higher_is_better=[True, True, False], mistake=0.5)
    for seed in range(20):
        assert noisy.label(left, right, np.random.default_rng(seed))[2] == SKIP
    with pytest.raises(ConfigError, match="components: energy, goal, speed"):
        HierarchicalTeacher(["height"]).label(left, right, np.random.default_rng(0))


# --- Bradley-Terry reward ensembles -----------------------------------------------------------------


def _pairs(n: int, seed: int, teacher: SyntheticTeacher | None = None) -> PreferencePairs:
    """Pairs whose true reward is linear in (obs, action): r = w . [obs, a]."""
    rng = np.random.default_rng(seed)
    w = np.array([1.0, -0.5, 0.0, 0.3, 0.8, 0.0])
    segs = []
    for _ in range(2):
        s = _segments(np.zeros((n, 10)), seed=int(rng.integers(1 << 30)))
        s.true_rewards = (np.concatenate([s.obs, s.actions], -1) @ w).astype(np.float32)
        segs.append(s)
    labels = (teacher or SyntheticTeacher()).label(segs[0], segs[1], rng)
    return PreferencePairs(segs[0], segs[1], labels)


def _ensemble(members: int = 3, seed: int = 0) -> RewardEnsemble:
    torch.manual_seed(seed)
    box = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    return RewardEnsemble(box, gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32), hidden=(32, 32), members=members)


def test_bradley_terry_ensemble_learns_the_preferences() -> None:
    torch.set_num_threads(1)
    train, held_out = _pairs(400, 0), _pairs(400, 1)
    model = _ensemble()
    assert 0.3 < model.accuracy(held_out) < 0.7  # untrained: chance
    stats = train_reward_model(model, train, torch.Generator().manual_seed(0), epochs=40, batch_size=64, lr=1e-3)
    assert stats["train_accuracy"] > 0.95
    assert model.accuracy(held_out) > 0.9
    # the learned reward ranks transitions like the true one
    r = model.predict(held_out.left.obs.reshape(-1, OBS_DIM), held_out.left.actions.reshape(-1, ACT_DIM))
    assert np.corrcoef(r, held_out.left.true_rewards.reshape(-1))[0, 1] > 0.9


def test_ensemble_disagrees_more_off_the_data_and_blends_pessimistically() -> None:
    torch.set_num_threads(1)
    model = _ensemble(members=4)
    train_reward_model(model, _pairs(300, 0), torch.Generator().manual_seed(0), epochs=30, batch_size=64, lr=1e-3)
    near = _pairs(200, 5)
    obs, act = near.left.obs.reshape(-1, OBS_DIM), near.left.actions.reshape(-1, ACT_DIM)
    assert model.reward_std(8.0 * obs, act).mean() > 3 * model.reward_std(obs, act).mean()  # far off the data
    d = model.disagreement(near.left, near.right)
    assert d.shape == (200,) and np.all(d >= 0) and d.max() > 0
    x = model.features(near.left.obs.reshape(-1, OBS_DIM), near.left.actions.reshape(-1, ACT_DIM))
    per = model(*x).detach()
    assert torch.all(model.blend(per, "pessimistic", 1.0) <= model.blend(per, "mean") + 1e-6)
    assert torch.all(model.blend(per, "min") <= model.blend(per, "mean") + 1e-6)
    ent = model.entropy(near.left, near.right)
    assert ent.shape == (200,) and np.all((ent >= 0) & (ent <= np.log(2) + 1e-6))


def test_equal_labels_train_toward_equal_returns() -> None:
    torch.set_num_threads(1)
    pairs = _pairs(200, 0)
    pairs.labels[:] = EQUAL
    model = _ensemble(members=1)
    train_reward_model(model, pairs, torch.Generator().manual_seed(0), epochs=30, batch_size=64, lr=1e-3)
    p = torch.sigmoid(model.logits(pairs.left, pairs.right)).detach().numpy()
    assert np.abs(p - 0.5).mean() < 0.1


def test_all_skipped_is_an_error() -> None:
    pairs = _pairs(10, 0)
    pairs.labels[:] = SKIP
    with pytest.raises(ConfigError, match="skipped"):
        train_reward_model(_ensemble(), pairs, torch.Generator().manual_seed(0))


def test_segments_run_past_a_terminal_state_into_the_absorbing_state() -> None:
    data = _data([3, 40])
    data.terminations[2] = True  # the 3-step episode ends in failure; the long one is truncated
    seg = cut_segments(data, 10, 400, np.random.default_rng(0))
    short = seg.episode == 0
    assert short.any() and seg.mask is not None
    assert np.all(seg.mask[short].sum(1) == 3 - seg.start[short])  # real steps up to the end
    assert np.all(seg.mask[~short])  # windows of the truncated episode stay inside it
    pad = ~seg.mask
    assert np.all(seg.true_rewards[pad] == 0) and np.all(seg.actions[pad] == 0)
    last = data.observations[data.obs_index[2] + 1]
    np.testing.assert_array_equal(seg.obs[pad], np.broadcast_to(last, seg.obs[pad].shape))
    with pytest.raises(ConfigError):
        cut_segments(data, 41, 2, np.random.default_rng(0), pad_terminal=False)
