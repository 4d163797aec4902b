"""Checks a reward program must pass before any RL compute is spent on it.

1. static: parse, import allow-list, signature, forbidden names (:mod:`rewards.code.contract`);
2. load: the program's top level runs in the sandbox;
3. smoke test on states sampled from the env (random actions): the reward and every component have
   shape ``(batch,)`` and finite values, two calls on the same batch agree (determinism), and a
   batch takes less than the per-call limits. The reward's Pearson correlation with the env's own
   reward on the sample is reported (``None`` where either is constant).

Failures come back as :class:`CheckResult` with the stage and feedback text (the error and the
offending line) for the next model call; the text is the program's own in part, so it is cleaned
of control characters and cut to :data:`MESSAGE_CHARS` (:func:`rewards.code.contract.clean_text`). ``python -m rewards.code check --env ENV FILE.py`` runs
the same checks on a user's file.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rewards.code.contract import check_source, clean_text, feedback
from rewards.code.sandbox import Sandbox, SandboxError, SandboxLimits
from rewards.distance import pearson

MESSAGE_CHARS = 4000  # feedback text kept per failed check


@dataclass
class Transitions:
    """Sampled transitions: ``obs``/``next_obs`` ``(n, *obs_shape)``, ``action`` ``(n, *act_shape)``, ``env_reward`` ``(n,)``."""

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    env_reward: np.ndarray


@dataclass
class CheckResult:
    """Outcome of :func:`check_program`.

    Attributes:
        ok: The program passed every stage.
        stage: ``"static"``, ``"load"``, ``"smoke"`` or ``"passed"``.
        message: Feedback text (empty when ok).
        line: The program line a failure points at, when known.
        ms_per_batch: Median wall milliseconds of one sandboxed call on the smoke batch.
        components: Component names the program returns.
        pearson_true: Correlation of its reward with the env's on the sample (None if undefined).
    """

    ok: bool
    stage: str
    message: str = ""
    line: int | None = None
    ms_per_batch: float | None = None
    components: list[str] = field(default_factory=list)
    pearson_true: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a plain dict (for JSON)."""
        return asdict(self)


def sample_transitions(env_cfg: Mapping[str, Any], n: int = 256, seed: int = 0) -> Transitions:
    """``n`` transitions from uniform random actions (valid ones where the env masks actions).

    Args:
        env_cfg: Env config mapping (as in ``experiments/conf/env``).
        n: Number of transitions.
        seed: Seeds the env's resets and the action sampling.
    """
    from envs.make import make_env

    env = make_env(env_cfg)
    rng = np.random.default_rng(seed)
    env.action_space.seed(int(rng.integers(2**31)))
    obs_l, act_l, next_l, rew_l = [], [], [], []
    obs, _ = env.reset(seed=seed)
    masks = getattr(env.unwrapped, "action_masks", None)
    try:
        for i in range(n):
            if masks is not None:
                action = int(rng.choice(np.flatnonzero(masks())))
            else:
                action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            obs_l.append(obs)
            act_l.append(action)
            next_l.append(next_obs)
            rew_l.append(float(reward))
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset(seed=seed + 1 + i)
    finally:
        env.close()
    return Transitions(
        obs=np.stack(obs_l),
        action=np.asarray(act_l),
        next_obs=np.stack(next_l),
        env_reward=np.asarray(rew_l, dtype=np.float64),
    )


def check_program(
    source: str,
    sample: Transitions,
    limits: SandboxLimits | None = None,
    filename: str = "<reward program>",
    batch: int = 64,
) -> CheckResult:
    """Run the static, load and smoke checks (module docstring) on ``source``.

    Args:
        source: The program's Python source.
        sample: Transitions to test on (:func:`sample_transitions`).
        limits: Sandbox limits for the smoke test.
        filename: Names the program in messages.
        batch: Transitions per smoke call (the rest of the sample is scored too, for correlation).
    """
    problems = check_source(source)
    if problems:
        return CheckResult(False, "static", clean_text(feedback(problems), MESSAGE_CHARS), problems[0].line)
    limits = limits or SandboxLimits()
    with Sandbox(limits) as sandbox:
        try:
            sandbox.load(source, filename)
        except SandboxError as exc:
            return CheckResult(False, "load", clean_text(str(exc), MESSAGE_CHARS), exc.line)
        head = slice(0, min(batch, len(sample.env_reward)))
        try:
            first = sandbox.call(sample.obs[head], sample.action[head], sample.next_obs[head])
            times = []
            for _ in range(3):
                t = time.perf_counter()
                again = sandbox.call(sample.obs[head], sample.action[head], sample.next_obs[head])
                times.append(time.perf_counter() - t)
            proxies = [first.reward]
            for start in range(head.stop, len(sample.env_reward), batch):
                part = slice(start, start + batch)
                proxies.append(sandbox.call(sample.obs[part], sample.action[part], sample.next_obs[part]).reward)
        except SandboxError as exc:
            return CheckResult(False, "smoke", clean_text(str(exc), MESSAGE_CHARS), exc.line)
    ms = 1000.0 * float(np.median(times))
    if not (np.array_equal(first.reward, again.reward) and first.components.keys() == again.components.keys()):
        diff = float(np.max(np.abs(first.reward - again.reward))) if first.reward.shape == again.reward.shape else None
        return CheckResult(
            False,
            "smoke",
            f"{filename}: not deterministic: two calls on the same batch differ (max difference {diff}); "
            "a reward must be a function of (obs, action, next_obs) only — no random numbers or state kept between calls",
            ms_per_batch=ms,
        )
    proxy = np.concatenate(proxies)
    return CheckResult(
        True,
        "passed",
        ms_per_batch=ms,
        components=sorted(first.components),
        pearson_true=pearson(proxy, sample.env_reward[: len(proxy)]),
    )
