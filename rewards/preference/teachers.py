"""Teachers: who says which of two segments is better.

:class:`SyntheticTeacher` is B-Pref's simulated human (Lee et al. 2021, "B-Pref: Benchmarking
Preference-Based Reinforcement Learning"; its reference code, rll-research/BPref ``reward_model.py``
``get_label``). With ``R(σ) = Σ_t r_t`` a segment's plain (undiscounted) return, it

1. skips the query when both segments are uninformative: ``max(R(σ0), R(σ1)) < skip threshold``;
2. calls the pair equal when ``|R(σ0) - R(σ1)| < equal threshold``;
3. otherwise prefers σ0 with probability ``exp(β R_γ(σ0)) / (exp(β R_γ(σ0)) + exp(β R_γ(σ1)))`` on
   the myopic return ``R_γ(σ) = Σ_t γ^(H-1-t) r_t`` (γ = 1: the plain return; γ < 1: later steps
   count more; β = None: always the larger one, the "oracle" teacher);
4. flips that answer with probability ``mistake`` (ε).

B-Pref's thresholds are relative: ``ε_skip`` and ``ε_equal`` times the mean return of a segment of
recent experience, updated each round (:meth:`SyntheticTeacher.calibrate`; the provider calibrates the
teacher on each round's candidate segments). Absolute thresholds (``skip_below``, ``equal_within``)
are offered too: ``equal_within=1e-6``, exact ties called equal, is the default here (on CartPole,
where every real step pays 1, that is what teaches the model that two surviving segments are alike).

:class:`HierarchicalTeacher` is HERON's (Bukharin et al. 2023, "Deep Reinforcement Learning from
Hierarchical Weak Preference Feedback"): the user only ranks reward components by importance; a
pair is decided by the most important component whose segment sums differ by more than its margin,
falling to the next one on a near-tie; a pair on which every component ties is skipped (it says
nothing about the ranking).


:class:`VlmTeacher` is RL-VLM-F's idea with CLIP as the judge (Wang et al. 2024, "RL-VLM-F: Reinforcement
Learning from Vision Language Foundation Model Feedback"; VLM-RM's score, Rocamonde et al. 2023): the
segment whose frames lie closer to a goal sentence, on average, is preferred
(:class:`rewards.clip.ClipTeacher`).

All label whole batches of pairs at once and take their randomness from a ``np.random.Generator``,
and declare in ``needs`` the extras their segments must carry (``{"frame"}`` for the CLIP teacher).
Each is the ``_target_`` of a node of the ``reward/teacher`` config group
(``experiments/conf/reward/teacher/{synthetic,hierarchical,clip}.yaml``): on the command line
``reward/teacher=clip`` chooses one and ``reward.teacher.<setting>=...`` sets its arguments.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from envs.errors import ConfigError
from rewards.preference.segments import EQUAL, LEFT, RIGHT, SKIP, Segments


def _mistake(value: float) -> float:
    """The mistake rate ε, checked: a probability of flipping an answer, at most 0.5."""
    if not 0.0 <= float(value) <= 0.5:
        raise ConfigError(f"teacher mistake={value!r} must be in [0, 0.5] (a probability of flipping the answer)")
    return float(value)


def _flip_decided(labels: np.ndarray, mistake: float, rng: np.random.Generator) -> np.ndarray:
    """Flip each LEFT/RIGHT label with probability ``mistake`` (EQUAL and SKIP stay), in place; returns ``labels``."""
    flip = ((labels == LEFT) | (labels == RIGHT)) & (rng.random(len(labels)) < mistake)
    labels[flip] = np.where(labels[flip] == LEFT, RIGHT, LEFT)
    return labels


@runtime_checkable
class Teacher(Protocol):
    """Who labels segment pairs (what :class:`~rewards.preference.provider.PreferenceReward` asks).

    Attributes:
        needs: Extras the segments must carry (``{"frame"}``: frames rendered after each step).
    """

    needs: frozenset[str]

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        """``(pairs,)`` int8 labels (LEFT, RIGHT, EQUAL or SKIP) for ``left[i]`` vs ``right[i]``."""
        ...

    def describe(self) -> str:
        """One line naming the teacher and its settings (stored with the labels)."""
        ...


@runtime_checkable
class Calibrates(Protocol):
    """A teacher whose thresholds follow the data (B-Pref's relative skip and equal thresholds)."""

    def calibrate(self, segments: Segments) -> None:
        """Set the scale of the thresholds from a sample of recent segments (called once per round)."""
        ...


@runtime_checkable
class RanksComponents(Protocol):
    """A teacher that compares the env's named reward components (HERON's), which the env must report."""

    ranking: list[str]

    def check_components(self, available: Collection[str]) -> None:
        """Refuse (ConfigError) when a ranked component is not among ``available``, the env's ``reward_*`` info keys."""
        ...


def myopic_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``(n,)`` returns of ``(n, H)`` segment rewards, step ``t`` weighted by ``gamma ** (H - 1 - t)``."""
    h = rewards.shape[1]
    w = float(gamma) ** np.arange(h - 1, -1, -1, dtype=np.float64)
    return rewards.astype(np.float64) @ w


class SyntheticTeacher:
    """B-Pref's simulated teacher on the env's true reward (module docstring).

    Args:
        beta: Rationality of the Boltzmann choice; None: perfectly rational (deterministic).
        gamma: Myopic discount of the segment return the choice is made on (1: none).
        mistake: Probability ε of flipping an answer.
        eps_skip: B-Pref's ε_skip: skip when both plain returns are below ``eps_skip`` x the mean segment
            return (:meth:`calibrate`; None or 0: never). B-Pref's rule, made for rewards >= 0: with a
            negative mean segment return nothing is skipped.
        eps_equal: B-Pref's ε_equal: equal when the plain returns differ by less than ``eps_equal`` x
            the absolute mean segment return (None or 0: never).
        skip_below: Absolute skip threshold on the plain returns (None: never); not with ``eps_skip``.
        equal_within: Absolute equal threshold on the plain returns (None: never); not with ``eps_equal``.

    Attributes:
        scale: The mean plain segment return the relative thresholds multiply (None until
            :meth:`calibrate`; an uncalibrated teacher takes the mean of the batch it labels).
    """

    needs: frozenset[str] = frozenset()  # the true reward is in every segment

    def __init__(
        self,
        beta: float | None = None,
        gamma: float = 1.0,
        mistake: float = 0.0,
        eps_skip: float | None = None,
        eps_equal: float | None = None,
        skip_below: float | None = None,
        equal_within: float | None = None,
    ) -> None:
        if beta is not None and float(beta) < 0:
            raise ConfigError(f"teacher beta={beta!r} must be >= 0 or null (perfectly rational)")
        if not 0.0 < float(gamma) <= 1.0:
            raise ConfigError(f"teacher gamma={gamma!r} must be in (0, 1]")
        self.mistake = _mistake(mistake)
        for name, value in (("eps_skip", eps_skip), ("eps_equal", eps_equal), ("equal_within", equal_within)):
            if value is not None and float(value) < 0:
                raise ConfigError(f"teacher {name}={value!r} must be >= 0 or null")
        both = (("eps_skip", eps_skip, "skip_below", skip_below), ("eps_equal", eps_equal, "equal_within", equal_within))
        for rel, rel_value, absolute, abs_value in both:
            if rel_value is not None and abs_value is not None:
                raise ConfigError(
                    f"teacher {rel} (relative, B-Pref) and {absolute} (absolute) set the same threshold: "
                    f"give one, and the other null (reward.teacher.{absolute}=null)"
                )
        self.beta = None if beta is None else float(beta)
        self.gamma = float(gamma)
        self.eps_skip = None if eps_skip is None else float(eps_skip)
        self.eps_equal = None if eps_equal is None else float(eps_equal)
        self.skip_below = None if skip_below is None else float(skip_below)
        self.equal_within = None if equal_within is None else float(equal_within)
        self.scale: float | None = None

    def describe(self) -> str:
        """One line naming the teacher and its settings (stored with the labels)."""
        thresholds = (
            f"eps_skip={self.eps_skip}, eps_equal={self.eps_equal}, "
            if self.eps_skip is not None or self.eps_equal is not None
            else ""
        )
        return (
            f"synthetic(beta={self.beta}, gamma={self.gamma}, mistake={self.mistake}, {thresholds}"
            f"skip_below={self.skip_below}, equal_within={self.equal_within})"
        )

    def calibrate(self, segments: Segments) -> None:
        """Set :attr:`scale` to the mean plain return of ``segments`` (B-Pref's per-round margin)."""
        if len(segments):
            self.scale = float(segments.true_rewards.astype(np.float64).sum(1).mean())

    def thresholds(self, batch_scale: float) -> tuple[float | None, float | None]:
        """``(skip, equal)`` thresholds on plain returns now (None: off); ``batch_scale`` if uncalibrated."""
        scale = self.scale if self.scale is not None else batch_scale
        skip, equal = self.skip_below, self.equal_within
        if self.eps_skip:
            skip = self.eps_skip * scale if self.eps_skip * scale > 0 else None
        if self.eps_equal:
            equal = self.eps_equal * abs(scale)
        return skip, equal

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        """``(pairs,)`` int8 labels for ``left[i]`` vs ``right[i]``."""
        plain0 = left.true_rewards.astype(np.float64).sum(1)
        plain1 = right.true_rewards.astype(np.float64).sum(1)
        r0 = myopic_returns(left.true_rewards, self.gamma)
        r1 = myopic_returns(right.true_rewards, self.gamma)
        batch_scale = float(np.concatenate([plain0, plain1]).mean()) if len(left) else 0.0
        skip, equal = self.thresholds(batch_scale)
        return self._decide(r0, r1, plain0, plain1, skip, equal, rng)

    def _decide(
        self,
        r0: np.ndarray,
        r1: np.ndarray,
        plain0: np.ndarray,
        plain1: np.ndarray,
        skip: float | None,
        equal: float | None,
        rng: np.random.Generator,
    ) -> np.ndarray:
        n = len(r0)
        if self.beta is None:
            prefer_left = r0 > r1
            # exact ties are broken at random (an oracle has no reason to pick a side)
            tie = r0 == r1
            prefer_left = np.where(tie, rng.random(n) < 0.5, prefer_left)
        else:
            p_left = 1.0 / (1.0 + np.exp(np.clip(self.beta * (r1 - r0), -500, 500)))
            prefer_left = rng.random(n) < p_left
        flip = rng.random(n) < self.mistake
        prefer_left = prefer_left ^ flip
        labels = np.where(prefer_left, LEFT, RIGHT).astype(np.int8)
        if equal is not None:
            labels[np.abs(plain0 - plain1) < equal] = EQUAL
        if skip is not None:
            labels[np.maximum(plain0, plain1) < skip] = SKIP
        return labels


class HierarchicalTeacher:
    """HERON's teacher: reward components compared in order of importance (module docstring).

    Args:
        ranking: Component names, most important first (each must be in the segments' ``components``).
        margins: Per component, the difference of segment sums below which it is a tie, as a
            fraction of that component's spread (std of segment sums) over the batch; one number
            applies to all.
        higher_is_better: Per component, whether a larger sum is preferred (default: all True).
        mistake: Probability of flipping a decided answer.
    """

    needs: frozenset[str] = frozenset()  # the env's reward components come with every observed step

    def __init__(
        self,
        ranking: Sequence[str] | None = None,
        margins: float | Sequence[float] = 0.1,
        higher_is_better: Sequence[bool] | None = None,
        mistake: float = 0.0,
    ) -> None:
        if isinstance(ranking, str):
            ranking = [ranking]
        self.ranking = [str(c) for c in ranking or ()]
        if not self.ranking:
            raise ConfigError(
                "reward/teacher=hierarchical needs reward.teacher.ranking=[component, ...] (the env's reward "
                "components, most important first)"
            )
        # numpy types isscalar as a TypeGuard (to generic | complex | str | ...): it narrows neither branch for mypy
        m = [float(margins)] * len(self.ranking) if np.isscalar(margins) else [float(x) for x in margins]  # type: ignore[arg-type, union-attr]
        if len(m) != len(self.ranking) or min(m) < 0:
            raise ConfigError(f"teacher margins={margins!r}: give one number >= 0, or one per ranked component")
        self.margins = m
        self.higher = [True] * len(self.ranking) if higher_is_better is None else [bool(h) for h in higher_is_better]
        if len(self.higher) != len(self.ranking):
            raise ConfigError("teacher higher_is_better needs one entry per ranked component")
        self.mistake = _mistake(mistake)

    def describe(self) -> str:
        """One line naming the teacher and its settings (stored with the labels)."""
        return f"hierarchical(ranking={self.ranking}, margins={self.margins}, mistake={self.mistake})"

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        """``(pairs,)`` int8 labels; SKIP where every component ties (HERON discards such pairs)."""
        sums = self._sums(left, right)
        n = len(left)
        labels = np.full(n, SKIP, dtype=np.int8)
        undecided = np.ones(n, dtype=bool)
        for name, margin, higher in zip(self.ranking, self.margins, self.higher, strict=True):
            a, b = sums[name]
            spread = float(np.concatenate([a, b]).std())
            diff = (a - b) if higher else (b - a)
            decided = undecided & (np.abs(diff) > margin * spread)
            labels[decided & (diff > 0)] = LEFT
            labels[decided & (diff < 0)] = RIGHT
            undecided &= ~decided
        return _flip_decided(labels, self.mistake, rng)

    def check_components(self, available: Collection[str]) -> None:
        """Refuse a ranking of components the env does not report (checked before the run starts).

        Args:
            available: The env's reward components (its ``info["reward_<name>"]`` scalars, without the prefix).

        Raises:
            ConfigError: A ranked component is missing; the message lists what the env has.
        """
        missing = [name for name in self.ranking if name not in available]
        if missing:
            have = ", ".join(sorted(available)) or "none (its info has no reward_* terms)"
            raise ConfigError(
                f"reward/teacher=hierarchical ranks {', '.join(map(repr, missing))}, but this env's reward components "
                f"are: {have}; rank those (reward.teacher.ranking=[...]) or use an env that reports its reward terms "
                "(e.g. the MuJoCo locomotion envs)"
            )

    def _sums(self, left: Segments, right: Segments) -> Mapping[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for name in self.ranking:
            if name not in left.components or name not in right.components:
                have = sorted(left.components) or ["none"]
                raise ConfigError(
                    f"hierarchical teacher ranks component {name!r}, but the segments have components: {', '.join(have)}"
                )
            out[name] = (
                left.components[name].sum(1).astype(np.float64),
                right.components[name].sum(1).astype(np.float64),
            )
        return out


class VlmTeacher:
    """Labels from CLIP: the segment whose frames score higher against the goal sentence (module docstring).

    A segment's score is the mean VLM-RM reward of its frames (every ``stride``-th one); within
    ``equal_margin`` the pair is equal; answers are flipped with probability ``mistake``.

    Args:
        goal: Goal sentence (or a list); required.
        stride: Score every ``stride``-th frame of a segment (CLIP on a CPU is slow).
        equal_margin: Score difference below which a pair is equal.
        mistake: Probability of flipping a decided answer.
        **scorer_kwargs: :class:`rewards.clip.ClipScorer`'s (model, pretrained, checkpoint, baseline, alpha, device, ...).
    """

    needs: frozenset[str] = frozenset({"frame"})  # CLIP judges the frames rendered after each step

    def __init__(
        self,
        goal: str | Sequence[str] | None = None,
        stride: int = 1,
        equal_margin: float = 0.0,
        mistake: float = 0.0,
        **scorer_kwargs: object,
    ) -> None:
        if not goal:
            raise ConfigError(
                'reward/teacher=clip needs reward.teacher.goal="a sentence describing the goal state" '
                "(and the clip extra: pip install -e .[clip])"
            )
        if int(stride) < 1:
            raise ConfigError(f"reward.teacher.stride={stride!r} must be >= 1")
        self.mistake = _mistake(mistake)
        from rewards.clip import ClipTeacher

        self.clip = ClipTeacher(equal_margin=equal_margin, goal=goal, **scorer_kwargs)
        self.goal, self.stride = goal, int(stride)

    def describe(self) -> str:
        """One line naming the teacher and its settings (stored with the labels)."""
        return f"clip(goal={self.goal!r}, stride={self.stride}, equal_margin={self.clip.equal_margin}, mistake={self.mistake})"

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        """``(pairs,)`` int8 labels from the two sides' frames."""
        if left.frames is None or right.frames is None:
            raise ConfigError("the CLIP teacher compares frames, and these segments have none")
        soft = self.clip.label(left.frames[:, :: self.stride], right.frames[:, :: self.stride])
        labels = np.where(soft == 0.0, LEFT, np.where(soft == 1.0, RIGHT, EQUAL)).astype(np.int8)
        return _flip_decided(labels, self.mistake, rng)
