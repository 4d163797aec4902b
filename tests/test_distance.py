"""STARC distances (Skalse et al., 2024) beside EPIC: the known answers, exact on tabular MDPs and sample-based.

Known answers (the paper's Sec. 3): potential shaping and positive rescaling give 0, negation the
maximum (1 after halving), an unrelated random reward is far; and the value-adjusted
canonicalisation is the advantage ``Q^pi - V^pi`` under the uniform policy, checked by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from rewards import distance

S, A, GAMMA = 6, 3, 0.9


def _mdp(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random tabular MDP: ``(S, A, S)`` transition probabilities, an ``(S, A, S)`` reward, an ``(S,)`` potential."""
    rng = np.random.default_rng(seed)
    tau = rng.random((S, A, S)) ** 3
    tau /= tau.sum(axis=2, keepdims=True)
    return tau, rng.normal(size=(S, A, S)), 3.0 * rng.normal(size=S)


def _shape(reward: np.ndarray, phi: np.ndarray) -> np.ndarray:
    return reward + GAMMA * phi[None, None, :] - phi[:, None, None]


@pytest.mark.parametrize("kind", ["val", "epic"])
def test_starc_tabular_known_answers(kind: str) -> None:
    tau, r, phi = _mdp()
    d = lambda a, b: distance.starc_tabular(a, b, GAMMA, kind, tau)  # noqa: E731
    assert d(r, r) == pytest.approx(0.0, abs=1e-12)
    assert d(r, _shape(r, phi)) == pytest.approx(0.0, abs=1e-9)  # potential shaping
    assert d(r, 4.0 * _shape(r, phi)) == pytest.approx(0.0, abs=1e-9)  # and a positive rescaling
    assert d(r, -r) == pytest.approx(1.0, abs=1e-9)  # negation: the maximum
    assert d(_shape(r, phi), -2.0 * r) == pytest.approx(1.0, abs=1e-9)
    unrelated = np.random.default_rng(99).normal(size=r.shape)
    assert d(r, unrelated) > 0.5  # two random unit vectors in many dimensions: ~ sqrt(2) / 2
    assert d(r, np.full_like(r, 3.0)) == pytest.approx(0.5)  # a constant reward standardises to 0
    # the test has teeth: without canonicalisation the shaped copy is far from the original
    assert distance.starc_from_canonical(r, _shape(r, phi)) > 0.2


def test_value_adjusted_levelling_is_the_uniform_policy_advantage_by_hand() -> None:
    # two states, two actions; action 0 stays, action 1 moves to the other state; R(s, a, s') = [s' == 1]
    tau = np.zeros((2, 2, 2))
    tau[0, 0, 0] = tau[1, 0, 1] = tau[0, 1, 1] = tau[1, 1, 0] = 1.0
    r = np.zeros((2, 2, 2))
    r[:, :, 1] = 1.0
    gamma = 0.5
    # by hand: under the uniform policy both states go to either state with prob 1/2, so r_pi = 1/2 and
    # V = 1/2 / (1 - 1/2) = 1 in both; Q(s, a) = R(s, a, next) + gamma V(next) = [next == 1] + 1/2
    # A = Q - V: state 0: stay -1/2, move +1/2; state 1: stay +1/2, move -1/2
    c = distance.canonicalize_tabular(r, gamma, "val", tau)
    assert c[:, :, 0] == pytest.approx(np.array([[-0.5, 0.5], [0.5, -0.5]]))
    assert np.array_equal(c[:, :, 0], c[:, :, 1])  # constant along s'


def test_val_is_invariant_to_redistribution_over_next_states_and_epic_is_not() -> None:
    tau, r, _ = _mdp(1)
    # move reward between next states of a transition keeping its expectation E_{S'~tau}[R]: the
    # value-adjusted canonicalisation sees only that expectation
    noise = np.random.default_rng(3).normal(size=r.shape)
    noise -= (tau * noise).sum(axis=2, keepdims=True)  # E_tau[noise] = 0 (rows of tau sum to 1)
    assert distance.starc_tabular(r, r + noise, GAMMA, "val", tau) == pytest.approx(0.0, abs=1e-9)
    assert distance.starc_tabular(r, r + noise, GAMMA, "epic") > 0.1


def _transitions(n: int, seed: int) -> distance.Transitions:
    rng = np.random.default_rng(seed)
    return distance.Transitions(rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.normal(size=(n, 3)))


def _base(o, a, s, f=None):  # type: ignore[no-untyped-def]
    return np.sin(o[:, 0]) + a[:, 0] * s[:, 1] - 0.5 * s[:, 2] ** 2


def _phi(x: np.ndarray) -> np.ndarray:
    return 5.0 * np.cos(x[:, 0]) + 2.0 * x[:, 1] ** 2


def test_sample_based_starc_known_answers() -> None:
    data = _transitions(500, 0)
    kw = dict(gamma=GAMMA, samples=128, seed=1)
    shaped = lambda o, a, s, f=None: 3.0 * (_base(o, a, s) + GAMMA * _phi(s) - _phi(o)) + 2.0  # noqa: E731
    assert distance.starc_distance(_base, shaped, data, **kw) == pytest.approx(0.0, abs=1e-9)
    assert distance.starc_distance(_base, lambda o, a, s, f=None: -_base(o, a, s), data, **kw) == pytest.approx(
        1.0, abs=1e-9
    )
    w = np.random.default_rng(7).normal(size=8)
    unrelated = lambda o, a, s, f=None: np.tanh(np.concatenate([o, a, s], 1)) @ w  # noqa: E731
    assert distance.starc_distance(_base, unrelated, data, **kw) > 0.4
    # skipping the canonicalisation: the shaped copy would look far
    raw = distance.starc_from_canonical(
        _base(data.obs, data.action, data.next_obs), shaped(data.obs, data.action, data.next_obs)
    )
    assert raw > 0.2
    # with zero-mean canonical rewards L2-STARC is EPIC: 0.5 ||a/|a| - b/|b||| = sqrt((1 - rho) / 2)
    ca, cb = distance._canonical_pair(_base, unrelated, data, None, GAMMA, 128, 1, (False, False))
    assert distance.starc_from_canonical(ca - ca.mean(), cb - cb.mean()) == pytest.approx(
        distance.pearson_distance(ca, cb), abs=1e-9
    )


def test_float32_rounding_of_a_shaped_constant_is_recognised_as_constant() -> None:
    data = _transitions(300, 5)

    def shaped_one(o, a, s, f=None):  # type: ignore[no-untyped-def]  # 1 + shaping, computed in float32 as providers do
        return (1.0 + GAMMA * _phi(s) - _phi(o)).astype(np.float32)

    c = distance.canonicalize(shaped_one, data, data, GAMMA, 64, np.random.default_rng(0))
    assert not c.any()  # rounding noise (~1e-7 of the reward) is not a reward
    assert distance.epic_distance(shaped_one, _base, data, gamma=GAMMA, samples=64) is None
    assert distance.starc_distance(shaped_one, _base, data, gamma=GAMMA, samples=64) == pytest.approx(0.5)
