"""Teachers: who says which of two segments is better.

:class:`SyntheticTeacher` is B-Pref's simulated human (Lee et al. 2021, "B-Pref: Benchmarking
Preference-Based Reinforcement Learning"). With segment returns weighted myopically,
``R(σ) = Σ_t γ^(H-1-t) r_t`` (γ = 1: the plain return; γ < 1: later steps count more), it

1. skips the query when both segments are uninformative: ``max(R(σ0), R(σ1)) < skip_below``;
2. calls the pair equal when ``|R(σ0) - R(σ1)| < equal_within``;
3. otherwise prefers σ0 with probability ``exp(β R(σ0)) / (exp(β R(σ0)) + exp(β R(σ1)))``
   (β = None: always the larger return, the "oracle" teacher);
4. then flips the answer with probability ``mistake`` (ε).

:class:`HierarchicalTeacher` is HERON's (Bukharin et al. 2023, "Deep Reinforcement Learning from
Hierarchical Weak Preference Feedback"): the user only ranks reward components by importance; a
pair is decided by the most important component whose segment sums differ by more than its margin,
falling to the next one on a near-tie, and is equal when every component ties.


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

from collections.abc import Mapping, Sequence
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
    """Flip each LEFT/RIGHT label with probability ``mistake`` (EQUAL stays), in place; returns ``labels``."""
    flip = (labels != EQUAL) & (rng.random(len(labels)) < mistake)
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


def myopic_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``(n,)`` returns of ``(n, H)`` segment rewards, step ``t`` weighted by ``gamma ** (H - 1 - t)``."""
    h = rewards.shape[1]
    w = float(gamma) ** np.arange(h - 1, -1, -1, dtype=np.float64)
    return rewards.astype(np.float64) @ w


class SyntheticTeacher:
    """B-Pref's simulated teacher on the env's true reward (module docstring).

    Args:
        beta: Rationality of the Boltzmann choice; None: perfectly rational (deterministic).
        gamma: Myopic discount of the segment return (1: none).
        mistake: Probability ε of flipping an answer.
        skip_below: Skip when both segments' returns are below this (None: never skip).
        equal_within: Equal when the returns differ by less than this (None: never equal).
    """

    needs: frozenset[str] = frozenset()  # the true reward is in every segment

    def __init__(
        self,
        beta: float | None = None,
        gamma: float = 1.0,
        mistake: float = 0.0,
        skip_below: float | None = None,
        equal_within: float | None = None,
    ) -> None:
        if beta is not None and float(beta) < 0:
            raise ConfigError(f"teacher beta={beta!r} must be >= 0 or null (perfectly rational)")
        if not 0.0 < float(gamma) <= 1.0:
            raise ConfigError(f"teacher gamma={gamma!r} must be in (0, 1]")
        self.mistake = _mistake(mistake)
        if equal_within is not None and float(equal_within) < 0:
            raise ConfigError(f"teacher equal_within={equal_within!r} must be >= 0 or null")
        self.beta = None if beta is None else float(beta)
        self.gamma = float(gamma)
        self.skip_below = None if skip_below is None else float(skip_below)
        self.equal_within = None if equal_within is None else float(equal_within)

    def describe(self) -> str:
        """One line naming the teacher and its settings (stored with the labels)."""
        return (
            f"synthetic(beta={self.beta}, gamma={self.gamma}, mistake={self.mistake}, "
            f"skip_below={self.skip_below}, equal_within={self.equal_within})"
        )

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        """``(pairs,)`` int8 labels for ``left[i]`` vs ``right[i]``."""
        r0 = myopic_returns(left.true_rewards, self.gamma)
        r1 = myopic_returns(right.true_rewards, self.gamma)
        return self._decide(r0, r1, rng)

    def _decide(self, r0: np.ndarray, r1: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
        if self.equal_within is not None:
            labels[np.abs(r0 - r1) < self.equal_within] = EQUAL
        if self.skip_below is not None:
            labels[np.maximum(r0, r1) < self.skip_below] = SKIP
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
        """``(pairs,)`` int8 labels; EQUAL where every component ties."""
        sums = self._sums(left, right)
        n = len(left)
        labels = np.full(n, EQUAL, dtype=np.int8)
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
