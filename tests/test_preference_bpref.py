"""B-Pref's pieces checked against their definitions (Lee et al. 2021 and rll-research/BPref): relative skip and
equal thresholds on plain returns, query selection by ensemble disagreement and by member-averaged entropy,
each member's own bootstrap resample, the tanh-bounded reward, and an accuracy a constant reward cannot pass."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.errors import ConfigError
from rewards.preference.model import RewardEnsemble, bootstrap_indices, train_reward_model
from rewards.preference.provider import select_queries
from rewards.preference.segments import EQUAL, LEFT, RIGHT, SKIP, PreferencePairs, Segments
from rewards.preference.teachers import SyntheticTeacher
from tests.helpers import random_segments

OBS_DIM, ACT_DIM = 4, 2  # as tests.helpers.random_segments draws them
_segments = random_segments


def _ensemble(members: int = 3, seed: int = 0, output: str = "linear") -> RewardEnsemble:
    torch.manual_seed(seed)
    box = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    act = gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32)
    return RewardEnsemble(box, act, hidden=(16,), members=members, output=output)


# --- the synthetic teacher's thresholds ---------------------------------------------------------------


def test_relative_thresholds_follow_the_mean_segment_return_of_each_round() -> None:
    """B-Pref: equal when |R0 - R1| < eps_equal * mean segment return; skip when both < eps_skip * that mean."""
    teacher = SyntheticTeacher(eps_equal=0.1, eps_skip=0.5)
    left = _segments(np.array([[5.0, 5.0], [1.0, 1.0], [10.0, 0.5]]))  # returns 10, 2, 10.5
    right = _segments(np.array([[5.0, 4.5], [0.5, 1.0], [2.0, 2.0]]))  # returns 9.5, 1.5, 4
    rng = np.random.default_rng(0)
    teacher.calibrate(_segments(np.full((4, 2), 5.0)))  # mean segment return 10: equal within 1, skip below 5
    np.testing.assert_array_equal(teacher.label(left, right, rng), [EQUAL, SKIP, LEFT])
    teacher.calibrate(_segments(np.full((4, 2), 2.0)))  # the next round's data: mean 4: equal within 0.4, skip below 2
    np.testing.assert_array_equal(teacher.label(left, right, rng), [LEFT, LEFT, LEFT])
    assert teacher.scale == 4.0 and "eps_equal=0.1" in teacher.describe()
    # before any calibration: the mean return of the batch it labels (here (10+2+10.5+9.5+1.5+4)/6 = 6.25)
    fresh = SyntheticTeacher(eps_equal=0.1)
    assert fresh.thresholds(6.25) == (None, pytest.approx(0.625))
    np.testing.assert_array_equal(fresh.label(left, right, rng), [EQUAL, EQUAL, LEFT])  # both differ by 0.5
    # B-Pref's skip rule is for rewards >= 0: a negative mean segment return skips nothing; |mean| for equal
    teacher.calibrate(_segments(np.full((4, 2), -5.0)))
    assert teacher.thresholds(0.0) == (None, pytest.approx(1.0))


def test_thresholds_compare_plain_returns_and_the_choice_the_myopic_ones() -> None:
    """Skip and equal read the undiscounted sums (B-Pref's get_label); only the preference is myopic (gamma)."""
    left = _segments(np.array([[3.0, 0.0, 0.0, 0.0]]))  # plain 3, myopic (gamma 0.5) 0.375
    right = _segments(np.array([[0.0, 0.0, 0.0, 2.95]]))  # plain 2.95, myopic 2.95
    rng = np.random.default_rng(0)
    assert SyntheticTeacher(gamma=0.5).label(left, right, rng)[0] == RIGHT  # myopia decides the choice
    assert SyntheticTeacher(gamma=0.5, equal_within=0.1).label(left, right, rng)[0] == EQUAL  # |3 - 2.95| < 0.1
    assert SyntheticTeacher(gamma=0.5, skip_below=2.0).label(left, right, rng)[0] == RIGHT  # plain 3 is not below 2
    assert SyntheticTeacher(gamma=0.5, skip_below=3.5).label(left, right, rng)[0] == SKIP


def test_a_threshold_is_set_one_way_only() -> None:
    with pytest.raises(ConfigError, match=r"eps_equal .* and equal_within .* set the same threshold"):
        SyntheticTeacher(eps_equal=0.1, equal_within=1e-6)
    with pytest.raises(ConfigError, match="eps_skip"):
        SyntheticTeacher(eps_skip=-0.1)


# --- query selection ---------------------------------------------------------------------------------


def _member_probabilities(model: RewardEnsemble, left: Segments, right: Segments) -> np.ndarray:
    """``(members, n)`` P(left preferred) per member, summed step by step here (not through the ensemble's logits)."""
    out = []
    with torch.no_grad():
        (xl,), (xr,) = model.features(left.obs, left.actions), model.features(right.obs, right.actions)
        for member in model.members:
            rl = member(xl).numpy().astype(np.float64).sum(1)
            rr = member(xr).numpy().astype(np.float64).sum(1)
            out.append(1.0 / (1.0 + np.exp(rr - rl)))
    return np.stack(out)


def test_disagreement_and_entropy_sampling_choose_the_most_uncertain_pairs() -> None:
    model = _ensemble(members=4, seed=1)
    rng = np.random.default_rng(0)
    left, right = _segments(rng.normal(size=(60, 5)), seed=1), _segments(rng.normal(size=(60, 5)), seed=2)
    p = _member_probabilities(model, left, right)
    disagreement = p.std(0)  # B-Pref: np.std over members
    entropy = (-(p * np.log(p) + (1 - p) * np.log(1 - p))).mean(0)  # each member's entropy, averaged
    np.testing.assert_allclose(model.disagreement(left, right), p.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.entropy(left, right), entropy, rtol=1e-4, atol=1e-6)
    for sampling, score in (("disagreement", disagreement), ("entropy", entropy)):
        pick = select_queries(model, left, right, 10, sampling)
        assert len(pick) == 10 and len(set(pick.tolist())) == 10
        rest = np.setdiff1d(np.arange(60), pick)
        assert score[pick].min() >= score[rest].max()  # the ten most uncertain, no other
    np.testing.assert_array_equal(select_queries(model, left, right, 10, "uniform"), np.arange(10))


def test_entropy_is_each_members_entropy_averaged_not_the_entropy_of_the_mean() -> None:
    """Two members sure of opposite answers are each certain (B-Pref's get_entropy), though their mean is 0.5."""
    model = _ensemble(members=2)
    confident_opposite = torch.tensor([8.0, -8.0])  # P = 0.9997 and 0.0003: mean 0.5
    both_unsure = torch.tensor([0.4, 0.4])  # P = 0.6 for both
    model.logits = lambda left, right: torch.stack([confident_opposite, both_unsure], dim=1)  # type: ignore[method-assign]
    segs = _segments(np.zeros((2, 3)))
    h = model.entropy(segs, segs)
    p = 1 / (1 + np.exp(-0.4))
    assert h[0] < 0.01 and h[1] == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)), rel=1e-5)
    assert select_queries(model, segs, segs, 1, "entropy")[0] == 1


# --- the ensemble's bootstrap --------------------------------------------------------------------------


def test_each_member_trains_on_its_own_bootstrap_resample() -> None:
    idx = bootstrap_indices(2000, 3, torch.Generator().manual_seed(0)).numpy()
    assert idx.shape == (3, 2000) and idx.min() >= 0 and idx.max() < 2000
    for row in idx:  # drawn with replacement: about 1 - 1/e of the pairs appear
        assert abs(len(np.unique(row)) / 2000 - (1 - np.exp(-1))) < 0.03
    assert not np.array_equal(idx[0], idx[1]) and not np.array_equal(idx[1], idx[2])

    # behaviour: two members that start identical end apart, because they saw different resamples
    rng = np.random.default_rng(0)
    left, right = _segments(rng.normal(size=(200, 5)), seed=3), _segments(rng.normal(size=(200, 5)), seed=4)
    pairs = PreferencePairs(left, right, SyntheticTeacher().label(left, right, rng))
    model = _ensemble(members=2)
    model.members[1].load_state_dict(model.members[0].state_dict())
    train_reward_model(model, pairs, torch.Generator().manual_seed(0), epochs=3, batch_size=50, lr=1e-3)
    gap = max(
        float((a - b).detach().abs().max())
        for a, b in zip(model.members[0].parameters(), model.members[1].parameters(), strict=True)
    )
    assert gap > 1e-3


# --- tanh-bounded rewards --------------------------------------------------------------------------------


def test_tanh_output_bounds_each_steps_reward_and_keeps_the_checkpoint_layout() -> None:
    bounded, plain = _ensemble(output="tanh"), _ensemble(output="linear")
    assert list(bounded.state_dict()) == list(plain.state_dict())  # tanh has no parameters
    rng = np.random.default_rng(0)
    obs, act = 10 * rng.normal(size=(500, OBS_DIM)).astype(np.float32), rng.uniform(-1, 1, (500, ACT_DIM))
    bounded.load_state_dict(plain.state_dict())
    with torch.no_grad():  # per member: the linear model's reward squashed
        r_plain, r_bounded = plain(*plain.features(obs, act)), bounded(*bounded.features(obs, act))
    assert r_plain.abs().max() > 1.0 and r_bounded.abs().max() <= 1.0
    torch.testing.assert_close(r_bounded, torch.tanh(r_plain))
    assert np.abs(bounded.predict(obs, act)).max() <= 1.0
    with pytest.raises(ConfigError, match="output"):
        _ensemble(output="sigmoid")


# --- accuracy ---------------------------------------------------------------------------------------------


def _constant(model: RewardEnsemble, value: float) -> RewardEnsemble:
    with torch.no_grad():
        for member in model.members:
            last = [m for m in member.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.fill_(value)
    return model


def test_a_constant_reward_model_is_at_chance_on_the_accuracy_of_equal_length_pairs() -> None:
    rng = np.random.default_rng(0)
    # segments of a reward that varies (no padding): a constant model orders no pair
    left, right = _segments(rng.normal(size=(400, 6)), seed=5), _segments(rng.normal(size=(400, 6)), seed=6)
    labels = SyntheticTeacher().label(left, right, rng)
    labels[:300] = np.where(labels[:300] == LEFT, RIGHT, labels[:300])  # mostly "right": ties must not count as right
    pairs = PreferencePairs(left, right, labels)
    constant = _constant(_ensemble(), 2.0)
    assert constant.accuracy(pairs) == 0.5 and constant.accuracy(pairs, same_length=True) == 0.5
    # segments that end at a terminal state: a positive constant sums fewer steps for the shorter one, so it
    # orders every pair of different lengths "right" (CartPole, where every real step pays 1)
    mask = np.ones((400, 6), dtype=bool)
    mask[:200, 3:] = False  # the first 200 left segments fail after 3 steps
    short = _segments(np.where(mask, 1.0, 0.0), seed=7, mask=mask)
    full = _segments(np.ones((400, 6)), seed=8)
    cartpole = PreferencePairs(short, full, SyntheticTeacher(equal_within=1e-6).label(short, full, rng))
    assert constant.accuracy(cartpole) == 1.0  # every decided pair differs in length
    assert np.isnan(constant.accuracy(cartpole, same_length=True))  # equal lengths tie on CartPole: no decided pair
