"""Comparing two rewards: Pearson and Spearman correlation, and the EPIC distance.

EPIC (Gleave et al., 2021, "Quantifying Differences in Reward Functions") compares rewards up to
potential shaping and positive rescaling. Each reward is first *canonicalised* over a coverage
distribution of states ``S, S'`` and actions ``A`` (sample-based estimate, their Sec. 4)::

    C(R)(s, a, s') = R(s, a, s') + E[gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S')]

which removes any shaping term ``gamma phi(s') - phi(s)`` (up to a constant that the next step
ignores); then ``D_EPIC = sqrt((1 - rho) / 2)`` with ``rho`` the Pearson correlation of the two
canonical rewards over the evaluation transitions. ``D = 0``: the same reward up to shaping and
rescaling; ``D = 1``: a negated one. Expectations use ``m`` joint samples ``(A_j, S'_j)`` from the
coverage set, the same for both rewards, so a shaped copy's residual is an exact constant.

Rewards are functions on batches, ``reward_fn(obs, action, next_obs, next_frames) -> (batch,)``, so
any provider can be compared once it can be evaluated on transitions that never happened (the
env's own reward needs a closed form for that: the ``reward_fn`` of its env card, as numpy with
``envs.cards.numpy_fn(envs.cards.closed_forms(env_cfg)[0])``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    k_state = rng.integers(0, len(coverage), size=m)
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
        return direct - mean_all  # f(s') + gamma mu - mu - gamma mu

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

    return direct + gamma * expectation(data.next_obs) - expectation(data.obs) - gamma * mean_all


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
    coverage = data if coverage is None else coverage
    ca = canonicalize(reward_a, data, coverage, gamma, samples, np.random.default_rng(seed), state_only[0])
    cb = canonicalize(reward_b, data, coverage, gamma, samples, np.random.default_rng(seed), state_only[1])
    return pearson_distance(ca, cb)
