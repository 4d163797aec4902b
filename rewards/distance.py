"""Comparing two rewards: Pearson and Spearman correlation, the EPIC distance and STARC distances.

EPIC (Gleave et al., 2021, "Quantifying Differences in Reward Functions") compares rewards up to
potential shaping and positive rescaling. Each reward is first *canonicalised* over a coverage
distribution of states ``S, S'`` and actions ``A`` (sample-based estimate, their Sec. 4)::

    C(R)(s, a, s') = R(s, a, s') + E[gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S')]

which removes any shaping term ``gamma phi(s') - phi(s)`` (up to a constant that the next step
ignores); then ``D_EPIC = sqrt((1 - rho) / 2)`` with ``rho`` the Pearson correlation of the two
canonical rewards over the evaluation transitions. ``D = 0``: the same reward up to shaping and
rescaling; ``D = 1``: a negated one. Expectations use ``m`` joint samples ``(A_j, S'_j)`` from the
coverage set, the same for both rewards, and the constant's ``S`` are the same ``S'_j`` in another
order, so a shaped copy's canonical reward is exactly the original's (no residual constant). Providers
compute in float32: a canonical reward whose every value is below ``1e-6`` of the reward's own largest
magnitude (float32 rounding is ~1e-7) is set to zero, so a reward that is constant up to shaping is
recognised as such (EPIC undefined, STARC's ``s = 0``) rather than compared as rounding noise.

Rewards are functions on batches, ``reward_fn(obs, action, next_obs, next_frames) -> (batch,)``, so
any provider can be compared once it can be evaluated on transitions that never happened (the
env's own reward needs a closed form for that: the ``reward_fn`` of its env card, as numpy with
``envs.cards.numpy_fn(envs.cards.closed_forms(env_cfg)[0])``).

STARC (Skalse et al., 2024, "STARC: A General Framework For Quantifying Differences Between Reward
Functions", ICLR) is a family ``d(R1, R2) = m(s(R1), s(R2))`` of pseudometrics with
``s(R) = c(R) / n(c(R))`` (``s(R) = c(R)`` when ``n(c(R)) = 0``): a *canonicalisation* ``c`` (linear;
``c(R1) = c(R2)`` exactly when the rewards differ by potential shaping and S'-redistribution), a
*norm* ``n`` and a *metric* ``m``. Here ``n`` is the L2 norm and ``m`` the L2 distance, and the
distance is halved so that it lies in [0, 1] like EPIC's (``||s(R)|| = 1``, so ``m <= 2``):
0 for rewards equal up to shaping and positive rescaling, 1 for a negated one, ``1/2`` between a
constant reward (``s = 0``) and any other. Two canonicalisations:

* ``"epic"``: EPIC's, above, with uniform distributions over states and actions;
* ``"val"``: the paper's *value-adjusted levelling* under a policy ``pi`` (uniform here),
  ``c(R)(s, a, s') = E_{S' ~ tau(s, a)}[R(s, a, S') - V^pi(s) + gamma V^pi(S')]``, i.e. the advantage
  ``Q^pi(s, a) - V^pi(s)`` of ``R``; it needs the transition function, so it is exact on finite
  (tabular) MDPs only (:func:`canonicalize_tabular`).

:func:`starc_tabular` computes STARC exactly on a tabular reward ``(S, A, S')`` (the L2 norm over
all ``(s, a, s')`` with equal weight). :func:`starc_distance` is the sample-based estimate for
continuous spaces: EPIC's sample-based canonicalisation (the value-based one would need ``V^pi``
learned) and the L2 norm and distance under the empirical distribution of the evaluation
transitions (root mean square), halved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` with ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    new_group = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two ``(n,)`` arrays; ``None`` if either is constant."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if denom <= 1e-12 * max(1.0, float(len(a))):
        return None
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def pearson_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """``sqrt((1 - rho) / 2)`` in [0, 1] for the Pearson correlation ``rho``; ``None`` if either is constant."""
    rho = pearson(a, b)
    return None if rho is None else float(np.sqrt(max(0.0, (1.0 - rho) / 2.0)))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two ``(n,)`` arrays; ``None`` if either is constant."""
    return pearson(_rank(np.asarray(a)), _rank(np.asarray(b)))


@dataclass
class Transitions:
    """Transitions with a leading batch axis; ``next_frames`` ``(n, H, W, 3)`` uint8 or ``None``."""

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    next_frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.obs)


def canonicalize(
    reward_fn: RewardFn,
    data: Transitions,
    coverage: Transitions,
    gamma: float,
    samples: int,
    rng: np.random.Generator,
    state_only: bool = False,
    chunk: int = 65536,
    frame_chunk: int = 512,
) -> np.ndarray:
    """Sample-based EPIC canonicalisation of ``reward_fn`` on ``data`` (module docstring).

    Args:
        reward_fn: Batched reward function (module docstring).
        data: The ``n`` transitions to canonicalise.
        coverage: Coverage set: its ``next_obs`` (with frames) are the states ``S, S'``, its
            ``action`` the actions ``A``.
        gamma: Discount of the shaping the distance is invariant to.
        samples: ``m``, the number of ``(A, S')`` samples per expectation.
        rng: Draws the coverage samples (pass equal generators to compare two rewards).
        state_only: The reward depends on the next state only (``R(s, a, s') = f(s')``): the
            expectations reduce to ``E[f(S')]`` and cost ``m`` evaluations instead of ``2 n m``.
        chunk: Maximum transitions per ``reward_fn`` call.
        frame_chunk: Maximum transitions per call when frames are passed (they are copied per call).

    Returns:
        ``(n,)`` float64 canonical rewards.
    """
    n, m = len(data), int(samples)
    j_action = rng.integers(0, len(coverage), size=m)
    j_next = rng.integers(0, len(coverage), size=m)
    # S for the constant E[R(S, A, S')]: the S' samples in another order, so that a potential's mean over S and
    # S' is the same number and a shaped copy's canonical reward differs by no constant at all (STARC's L2 sees constants)
    k_state = j_next[rng.permutation(m)]
    frames = coverage.next_frames

    def pool_frames(idx: np.ndarray) -> np.ndarray | None:
        return None if frames is None else frames[idx]

    def call(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, next_frames: np.ndarray | None) -> np.ndarray:
        out = [
            np.asarray(reward_fn(obs[i : i + chunk], action[i : i + chunk], next_obs[i : i + chunk],
                                 None if next_frames is None else next_frames[i : i + chunk]), dtype=np.float64)
            for i in range(0, len(obs), chunk)
        ]
        return np.concatenate(out) if out else np.zeros(0)

    direct = call(data.obs, data.action, data.next_obs, data.next_frames)
    mean_all = call(coverage.next_obs[k_state], coverage.action[j_action], coverage.next_obs[j_next], pool_frames(j_next)).mean()
    if state_only:
        return _rounding_to_zero(direct - mean_all, direct)  # f(s') + gamma mu - mu - gamma mu

    a_j, s_j, f_j = coverage.action[j_action], coverage.next_obs[j_next], pool_frames(j_next)

    def expectation(states: np.ndarray) -> np.ndarray:
        """``(n,)``: mean over j of R(states_i, A_j, S'_j)."""
        per_block = max(1, (chunk if f_j is None else frame_chunk) // m)
        out = np.empty(n)
        for start in range(0, n, per_block):
            block = states[start : start + per_block]
            b = len(block)
            obs = np.repeat(block, m, axis=0)
            act = np.tile(a_j, (b,) + (1,) * (a_j.ndim - 1))
            nxt = np.tile(s_j, (b,) + (1,) * (s_j.ndim - 1))
            frm = None if f_j is None else np.tile(f_j, (b,) + (1,) * (f_j.ndim - 1))
            out[start : start + b] = call(obs, act, nxt, frm).reshape(b, m).mean(1)
        return out

    return _rounding_to_zero(direct + gamma * expectation(data.next_obs) - expectation(data.obs) - gamma * mean_all, direct)


#: A canonical reward smaller than this fraction of the reward's own magnitude is rounding error (module docstring).
ROUNDING_RTOL = 1e-6


def _rounding_to_zero(canonical: np.ndarray, direct: np.ndarray) -> np.ndarray:
    """``canonical``, or zeros when all of it is below :data:`ROUNDING_RTOL` of ``max |direct|``."""
    scale = float(np.abs(direct).max(initial=0.0))
    return np.zeros_like(canonical) if float(np.abs(canonical).max(initial=0.0)) <= ROUNDING_RTOL * scale else canonical


def epic_distance(
    reward_a: RewardFn,
    reward_b: RewardFn,
    data: Transitions,
    coverage: Transitions | None = None,
    gamma: float = 0.99,
    samples: int = 256,
    seed: int = 0,
    state_only: tuple[bool, bool] = (False, False),
) -> float | None:
    """EPIC distance in [0, 1] between two batched reward functions (module docstring).

    Args:
        reward_a: First reward function.
        reward_b: Second reward function.
        data: Evaluation transitions.
        coverage: Coverage set (default: ``data`` itself).
        gamma: Discount of the shaping to be invariant to.
        samples: ``(A, S')`` samples per expectation.
        seed: Seed of the coverage samples (the same for both rewards).
        state_only: Per reward, whether it depends on the next state only (a fast path).

    Returns:
        The distance, or ``None`` if a canonical reward is constant (the distance is undefined).
    """
    return pearson_distance(*_canonical_pair(reward_a, reward_b, data, coverage, gamma, samples, seed, state_only))


def _canonical_pair(
    reward_a: RewardFn,
    reward_b: RewardFn,
    data: Transitions,
    coverage: Transitions | None,
    gamma: float,
    samples: int,
    seed: int,
    state_only: tuple[bool, bool],
) -> tuple[np.ndarray, np.ndarray]:
    """Both rewards canonicalised on ``data`` with the same coverage samples: two ``(n,)`` arrays."""
    coverage = data if coverage is None else coverage
    ca = canonicalize(reward_a, data, coverage, gamma, samples, np.random.default_rng(seed), state_only[0])
    cb = canonicalize(reward_b, data, coverage, gamma, samples, np.random.default_rng(seed), state_only[1])
    return ca, cb


def standardize(canonical: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """STARC's ``s = c / n(c)`` with the (weighted) L2 norm; ``c`` itself (all zeros) when its norm is 0.

    Args:
        canonical: A canonical reward, any shape (``(n,)`` samples or an ``(S, A, S')`` table).
        weights: Non-negative weights of the same shape summing to 1 (default: equal weights), so the
            norm is the root mean square under that distribution.

    Returns:
        Float64 array of ``canonical``'s shape with norm 1 (or 0).
    """
    c = np.asarray(canonical, dtype=np.float64)
    w = np.full(c.shape, 1.0 / max(c.size, 1)) if weights is None else np.asarray(weights, dtype=np.float64)
    norm = float(np.sqrt((w * c * c).sum()))
    scale = max(1.0, float(np.abs(c).max(initial=0.0)))
    return c if norm <= 1e-12 * scale else c / norm


def starc_from_canonical(ca: np.ndarray, cb: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Half the (weighted) L2 distance of two standardised canonical rewards: STARC in [0, 1] (module docstring)."""
    sa, sb = standardize(ca, weights), standardize(cb, weights)
    w = np.full(sa.shape, 1.0 / max(sa.size, 1)) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(min(1.0, 0.5 * np.sqrt((w * (sa - sb) ** 2).sum())))


def starc_distance(
    reward_a: RewardFn,
    reward_b: RewardFn,
    data: Transitions,
    coverage: Transitions | None = None,
    gamma: float = 0.99,
    samples: int = 256,
    seed: int = 0,
    state_only: tuple[bool, bool] = (False, False),
) -> float:
    """Sample-based STARC distance in [0, 1]: EPIC canonicalisation, L2 norm and metric (module docstring).

    Args: as :func:`epic_distance`.

    Returns:
        The distance; defined also for constant rewards (their standardised canonical reward is 0).
    """
    return starc_from_canonical(*_canonical_pair(reward_a, reward_b, data, coverage, gamma, samples, seed, state_only))


def canonicalize_tabular(
    reward: np.ndarray,
    gamma: float,
    kind: Literal["epic", "val"] = "val",
    transitions: np.ndarray | None = None,
) -> np.ndarray:
    """Exact canonicalisation of a tabular reward (module docstring).

    Args:
        reward: ``(S, A, S')`` rewards ``R(s, a, s')``.
        gamma: Discount, in [0, 1) for ``"val"`` (the value must exist).
        kind: ``"epic"`` (uniform state and action distributions) or ``"val"`` (value-adjusted
            levelling under the uniform policy; needs ``transitions``).
        transitions: ``(S, A, S')`` transition probabilities ``tau(s' | s, a)`` (rows sum to 1).

    Returns:
        ``(S, A, S')`` float64 canonical reward (for ``"val"`` constant along ``s'``).
    """
    r = np.asarray(reward, dtype=np.float64)
    if kind == "epic":
        per_state = r.mean(axis=(1, 2))  # E[R(x, A, S')] for each x
        return r + gamma * per_state[None, None, :] - per_state[:, None, None] - gamma * r.mean()
    if transitions is None:
        raise ValueError("the value-adjusted canonicalisation needs the transition probabilities")
    tau = np.asarray(transitions, dtype=np.float64)
    n_states, n_actions = r.shape[:2]
    expected = (tau * r).sum(axis=2)  # (S, A): E[R(s, a, S')]
    r_pi = expected.mean(axis=1)  # uniform policy
    p_pi = tau.mean(axis=1)  # (S, S')
    value = np.linalg.solve(np.eye(n_states) - gamma * p_pi, r_pi)
    advantage = expected + gamma * tau @ value - value[:, None]  # Q^pi(s, a) - V^pi(s)
    return np.broadcast_to(advantage[:, :, None], (n_states, n_actions, r.shape[2])).copy()


def starc_tabular(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    gamma: float,
    kind: Literal["epic", "val"] = "val",
    transitions: np.ndarray | None = None,
) -> float:
    """Exact STARC distance in [0, 1] between two ``(S, A, S')`` rewards (L2 norm and metric, equal weights)."""
    ca = canonicalize_tabular(reward_a, gamma, kind, transitions)
    cb = canonicalize_tabular(reward_b, gamma, kind, transitions)
    return starc_from_canonical(ca, cb)
