"""``reward=preference`` on the text envs: a Bradley-Terry reward on sentence embeddings, learned from teacher pairs.

On a ``text-<task>`` env (:mod:`envs.text`; its action is the response text) the preference provider
(:class:`~rewards.preference.provider.PreferenceReward`) learns *offline*, once, before the agent
trains: a text agent (:class:`agents.text.base.TextAgent`) hands it its scored records (per training
prompt, the human reply and the reference policy's samples) through :meth:`PreferenceReward.learn_from_records`,
and only then labels them with the provider (the proxy the agent learns from; the true reward stays
beside it, and the evaluation on held-out prompts logs both). The pieces are those of the control envs:

* **features** (``reward.text_features``): the all-MiniLM-L6-v2 sentence embedding (the packaged model
  the ``text-helpful`` scorer uses, :func:`envs.text._minilm`; unit length, 384 numbers) of

  - ``response`` (the default): the response alone, ``e_r``. A reward on ``(prompt, response)`` is
    compared only between two responses to *one* prompt, so the prompt's own embedding is the same on
    both sides of every pair;
  - ``prompt_response``: ``[e_r, e_p * e_r]`` (768 numbers), the response's embedding and its
    element-wise product with the prompt's. The product, not the prompt's embedding itself, because
    of the above: ``e_p`` alone cancels within a pair, while ``sum(e_p * e_r)`` is the cosine of prompt
    and response (``text-helpful``'s relevance term), a linear function of these features. It needs
    the prompt, which the text env puts in ``info["prompt"]`` (the ``prompt`` extra, :mod:`envs.extras`).

* **pairs**: two different responses to the same prompt (a one-step episode each, so segments of
  length 1). Prompts with at least two different responses are shuffled; ``min(held_out, prompts // 5)``
  of them are set aside (never in a training pair): their pairs, labelled by the true reward, measure
  the model (``reward_model_accuracy``; ``reward_model_spearman``: Spearman's rank correlation of
  proxy and true reward over their responses). The pairs of the other prompts are the candidates.
* **teacher** (``reward/teacher=synthetic``, B-Pref's simulated teacher on the true reward, with its
  ``mistake`` rate, Boltzmann ``beta``, skip and equal thresholds; or ``hierarchical``, HERON's, on the
  task's reward components, e.g. ``relevance`` and ``length`` of ``text-helpful``) labels ``budget``
  pairs (``reward.budget``; fewer when the data has fewer candidates, with a warning), ``queries`` per
  round: the first round uniformly, later ones by ``sampling`` (``disagreement`` / ``entropy`` of the
  ensemble over ``candidates`` x ``queries`` candidates), as in the online rounds.
* **model**: the ``reward/model=mlp`` ensemble (its ``members``, ``hidden``, ``output``) on the
  standardised features, retrained after each round (:func:`~rewards.preference.model.train_reward_model`,
  ``epochs``, ``batch_size``, ``lr``); ``use_action`` does not apply (the response is in the features).
  The proxy is the ensemble's ``blend``, divided by its mean absolute value over the records with
  ``rescale=true``. Before it has learned, the proxy is 0 (no pre-training: the state-entropy reward of
  the control envs means nothing on prompt token ids).

The labelled pairs are kept in the run's ``preferences.npz`` (features as the segments' observations).
Settings of the online rounds that have no meaning here (``segment``, ``every``, ``first_after``,
``keep_episodes``, ``frame_*``, ``pretrain*``) are ignored; ``reward.pairs`` (a file of control-env
segments), ``reward/model=cnn`` and ``reward/teacher=clip`` (frames) are refused on a text env, and
``reward.text_features`` on any other env (:func:`check_text_env`, ``PreferenceReward.check_env``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from envs.errors import ConfigError
from rewards.base import TransitionBatch
from rewards.preference.model import RewardEnsemble, RewardModelFactory, train_reward_model
from rewards.preference.segments import SKIP, PreferencePairs, Segments, concat
from rewards.preference.teachers import Calibrates, RanksComponents, SyntheticTeacher

if TYPE_CHECKING:
    from rewards.preference.provider import PreferenceReward

log = logging.getLogger("rewardlab")

#: ``reward.text_features`` choices (module docstring).
FEATURES = ("response", "prompt_response")
EMBED_DIM = 384  # all-MiniLM-L6-v2
_CACHE: dict[str, np.ndarray] = {}  # sentence -> embedding, per process (records are embedded once)
_CACHE_MAX = 200_000


def embed(texts: Sequence[str]) -> np.ndarray:
    """``(n, 384)`` float32 unit-length MiniLM embeddings of ``texts`` (each distinct text encoded once per process)."""
    from envs.text import _minilm

    if not texts:
        return np.zeros((0, EMBED_DIM), np.float32)
    todo = sorted({t for t in texts if t not in _CACHE})
    if len(todo) > _CACHE_MAX:  # more than the cache holds: encode as they come
        return np.asarray(_minilm().encode(list(texts), batch_size=64, normalize_embeddings=True), np.float32)
    if todo:
        out = _minilm().encode(todo, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        if len(_CACHE) + len(todo) > _CACHE_MAX:
            _CACHE.clear()
        _CACHE.update(zip(todo, np.asarray(out, dtype=np.float32), strict=True))
    return np.stack([_CACHE[t] for t in texts])


class TextFeatures:
    """``(prompt, response)`` -> the reward model's input (module docstring).

    Args:
        kind: ``response`` or ``prompt_response``.

    Attributes:
        dim: Features per response (384 or 768).
        needs: Extras a batch must carry (``{"prompt"}`` for ``prompt_response``).
    """

    def __init__(self, kind: str = "response") -> None:
        if kind not in FEATURES:
            raise ConfigError(f"reward.text_features={kind!r} must be one of {', '.join(FEATURES)} (or null: response)")
        self.kind = kind
        self.dim = EMBED_DIM * (2 if kind == "prompt_response" else 1)
        self.needs = frozenset({"prompt"}) if kind == "prompt_response" else frozenset()

    def __call__(self, batch: TransitionBatch) -> np.ndarray:
        """``(batch, dim)`` float32 features of a batch whose actions are response strings."""
        responses = [str(a) for a in np.asarray(batch.action, dtype=object).reshape(-1)]
        e_r = embed(responses)
        if self.kind == "response":
            return e_r
        prompts = batch.extras.get("prompt")
        if prompts is None:
            raise ConfigError("reward.text_features=prompt_response needs each step's prompt (the 'prompt' extra)")
        e_p = embed([str(p) for p in np.asarray(prompts, dtype=object).reshape(-1)])
        return np.concatenate([e_r, e_p * e_r], axis=1)


def build_model(factory: RewardModelFactory, dim: int, seed: int) -> RewardEnsemble:
    """The factory's ensemble as MLPs on ``dim`` features, no action input (seeded like the control envs' model)."""
    if factory.inputs != "obs":
        raise ConfigError(
            f"reward=preference on a text env: reward/model={type(factory).__name__} looks at frames, which a text env "
            "does not have; use reward/model=mlp (an MLP on sentence embeddings)"
        )
    space = gym.spaces.Box(-np.inf, np.inf, shape=(int(dim),), dtype=np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return RewardEnsemble(
            space, gym.spaces.Discrete(1), factory.hidden, factory.members, use_action=False, output=factory.output
        )


def frames_on_text(parts: Mapping[str, str]) -> str:
    """The refusal of a reward model and/or teacher that looks at frames on a text env.

    Args:
        parts: ``{"model" | "teacher": the setting as given}`` for each part that needs frames.
    """
    verb = "looks" if len(parts) == 1 else "look"
    advice = {"model": "reward/model=mlp (sentence embeddings)", "teacher": "reward/teacher=synthetic or hierarchical"}
    return (
        f"reward=preference on a text env: {' and '.join(parts.values())} {verb} at frames, which a text env does "
        f"not score; use {' and '.join(advice[k] for k in parts)}"
    )


def _frame_part(key: str, target: str) -> str:
    """``reward/model=cnn`` for the shipped choices, else ``reward.<key>._target_=<class path>`` (a user's own)."""
    shipped = {"rewards.preference.model.CnnRewardModel": "cnn", "rewards.preference.teachers.VlmTeacher": "clip"}
    return f"reward/{key}={shipped[target]}" if target in shipped else f"reward.{key}._target_={target}"


def check_text_config(reward_cfg: Mapping[str, Any]) -> None:
    """Refuse, from the config alone, a reward model or teacher that looks at frames (on a text env).

    Called before anything is built (``experiments/cli.py``), so that a CLIP teacher is not loaded first.

    Args:
        reward_cfg: The ``reward`` node of a ``reward=preference`` run on a text env.

    Raises:
        ConfigError: Its provider would need frames (:func:`rewards.base.config_needs`: ``reward.model`` or
            ``reward.teacher`` names a class whose ``needs`` holds ``"frame"``).
    """
    from rewards.base import config_needs

    parts = {
        key: _frame_part(key, str(node["_target_"]))
        for key in ("model", "teacher")
        if isinstance(node := reward_cfg.get(key), Mapping) and node.get("_target_") and "frame" in config_needs(node)
    }
    if parts:
        raise ConfigError(frames_on_text(parts))


def check_text_env(provider: PreferenceReward, env: gym.Env) -> None:
    """Refuse what the preference provider cannot do on a text env (before the run directory exists).

    Raises:
        ConfigError: ``reward.pairs`` given; a model or teacher that looks at frames; a ranking of
            components the task does not report (HERON's teacher).
    """
    if provider.pairs_file:
        raise ConfigError(
            f"reward.pairs={provider.pairs_file} is a file of control-env segments; on a text env the pairs are two "
            "responses to one prompt from the text agent's data, labelled by the teacher (set reward.budget instead)"
        )
    parts = {
        key: _frame_part(key, f"{type(part).__module__}.{type(part).__qualname__}")
        for key, part in (("model", provider.model_factory), ("teacher", provider.teacher))
        if "frame" in getattr(part, "needs", frozenset())
    }
    if parts:
        raise ConfigError(frames_on_text(parts))
    if isinstance(provider.teacher, RanksComponents):
        from rewards.wrapper import env_components

        env.reset(seed=0)
        info = env.step("Thanks, that sounds great!")[4]
        provider.teacher.check_components(env_components([info]).keys())


@dataclass
class PairPlan:
    """Candidate pairs of record indices, ``(m, 2)`` each: the training candidates (shuffled) and the held-out pairs."""

    train: np.ndarray
    held_out: np.ndarray
    held_out_records: np.ndarray  # (k,) the records of the held-out prompts
    prompts: int  # prompts with two different responses
    train_prompts: int  # of these, the ones whose pairs are training candidates (the rest are held out)


def plan_pairs(groups: np.ndarray, responses: Sequence[str], held_out: int, rng: np.random.Generator) -> PairPlan:
    """Every pair of two different responses to one prompt, split by prompt into training and held-out ones.

    Args:
        groups: ``(n,)`` the prompt of each record.
        responses: ``(n,)`` the response texts.
        held_out: Most held-out pairs wanted (their prompts: ``min(held_out, prompts // 5)``).
        rng: Shuffles prompts and pairs.

    Raises:
        ConfigError: No prompt has two different responses.
    """
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(np.asarray(groups).tolist()):
        by_group.setdefault(int(g), []).append(i)
    pairs: dict[int, list[tuple[int, int]]] = {}
    for g, idx in by_group.items():
        found = [(a, b) for n, a in enumerate(idx) for b in idx[n + 1 :] if responses[a] != responses[b]]
        if found:
            pairs[g] = found
    if not pairs:
        raise ConfigError(
            "reward=preference on a text env compares two different responses to one prompt, and the text data has "
            "none (one response per prompt?); give agent.k_samples >= 1"
        )
    order = rng.permutation(sorted(pairs))
    n_hold = min(int(held_out), len(order) // 5) if int(held_out) > 0 else 0
    hold, train = order[:n_hold], order[n_hold:]
    held = np.array([p for g in hold for p in pairs[int(g)]], dtype=np.int64).reshape(-1, 2)
    if len(held) > int(held_out):
        held = held[rng.permutation(len(held))[: int(held_out)]]
    cand = np.array([p for g in train for p in pairs[int(g)]], dtype=np.int64).reshape(-1, 2)
    cand = cand[rng.permutation(len(cand))]
    swap = rng.random(len(cand)) < 0.5  # which response is on the left: at random
    cand[swap] = cand[swap][:, ::-1]
    hold_records = np.array(sorted(i for g in hold for i in by_group[int(g)]), dtype=np.int64)
    return PairPlan(cand, held, hold_records, len(pairs), len(train))


def one_step_segments(
    features: np.ndarray, true: np.ndarray, components: Mapping[str, np.ndarray], index: np.ndarray
) -> Segments:
    """Length-1 segments of the records ``index``: features as observations, the true reward, the components."""
    x = features[index][:, None]
    return Segments(
        obs=x,
        actions=np.zeros((len(index), 1), dtype=np.float32),
        next_obs=x,
        true_rewards=np.asarray(true, dtype=np.float32)[index][:, None],
        episode=np.asarray(index, dtype=np.int64),
        start=np.zeros(len(index), dtype=np.int64),
        components={k: np.asarray(v, dtype=np.float32)[index][:, None] for k, v in components.items()},
    )


def learn_from_records(
    provider: PreferenceReward,
    batch: TransitionBatch,
    groups: np.ndarray,
    components: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Learn the provider's reward model from a text agent's records (module docstring); once per provider.

    Args:
        provider: The preference provider, bound to a text env.
        batch: ``n`` one-step transitions: actions the response strings, ``env_reward`` their true reward,
            ``extras["prompt"]`` the prompts when the features need them.
        groups: ``(n,)`` the prompt of each record (responses of one group are compared).
        components: ``{name: (n,)}`` the task's reward components (HERON's teacher ranks them).

    Raises:
        ConfigError: No two different responses to one prompt; the teacher skipped every pair.
    """
    from rewards.distance import spearman
    from rewards.preference.provider import select_queries

    assert provider.text is not None and provider.model is not None
    if provider.rounds > 0:  # learned already (this run, or restored from a checkpoint)
        return
    model, teacher, rng = provider.model, provider.teacher, provider.rng
    features = provider.text(batch)
    true = np.asarray(batch.env_reward, dtype=np.float32)
    parts = dict(components or {})
    responses = [str(a) for a in np.asarray(batch.action, dtype=object).reshape(-1)]
    plan = plan_pairs(groups, responses, provider.held_out, rng)
    budget = min(provider.budget, len(plan.train))
    if budget < provider.budget:
        log.warning(
            "reward.budget=%d: the text data offers %d training pairs (two different responses to one of %d training "
            "prompts; %d more prompts are held out to measure the reward model); labelling all of them",
            provider.budget,
            len(plan.train),
            plan.train_prompts,
            plan.prompts - plan.train_prompts,
        )
    model.fit_normalizer(features)

    def seg(index: np.ndarray) -> Segments:
        return one_step_segments(features, true, parts, index)

    unused, fit = plan.train, {"loss_reward": float("nan"), "train_accuracy": float("nan")}
    while provider.labels_used < budget:
        want = min(provider.queries, budget - provider.labels_used)
        sampling = provider.sampling if provider.rounds > 0 else "uniform"  # B-Pref's first round is uniform
        cand = unused[: want * (provider.candidates if sampling != "uniform" else 1)]
        left, right = seg(cand[:, 0]), seg(cand[:, 1])
        if isinstance(teacher, Calibrates):
            teacher.calibrate(concat(left, right))
        pick = select_queries(model, left, right, want, sampling)
        unused = np.delete(unused, pick, axis=0)
        left, right = left.take(pick), right.take(pick)
        new = PreferencePairs(left, right, teacher.label(left, right, rng), teacher.describe(), "text records")
        provider.pairs = new if provider.pairs is None else provider.pairs + new
        if len(provider.pairs.answered()):
            fit = train_reward_model(
                model, provider.pairs, provider.torch_gen, provider.epochs, provider.batch_size, provider.lr
            )
            provider.rounds += 1
            provider.version += 1
    if provider.rounds == 0:
        raise ConfigError(
            f"the teacher skipped every one of the {provider.labels_used} text pairs (reward.teacher.skip_below / "
            "eps_skip): nothing to learn the reward from"
        )
    pred = model.predict(features, None, provider.blend_how, provider.k)
    if provider.rescale:
        size = float(np.mean(np.abs(pred)))
        provider.scale = size if size > 1e-8 else 1.0
    accuracy = float("nan")
    if len(plan.held_out):
        left, right = seg(plan.held_out[:, 0]), seg(plan.held_out[:, 1])
        oracle = PreferencePairs(left, right, SyntheticTeacher(equal_within=1e-6).label(left, right, rng))
        accuracy = model.accuracy(oracle)
    rho = spearman(pred[plan.held_out_records], true[plan.held_out_records]) if len(plan.held_out_records) > 2 else None
    provider.stats = {
        "reward_scale": provider.scale,
        "loss_reward": fit["loss_reward"],
        "reward_model_train_accuracy": fit["train_accuracy"],
        "reward_model_accuracy": accuracy,
        "reward_model_spearman": float("nan") if rho is None else float(rho),
    }
    log.info(
        "text preference reward: %d labels (%d skipped) on %d prompts, %d rounds; held-out accuracy %.3f on %d pairs, "
        "Spearman %.3f with the true reward over %d held-out responses",
        provider.labels_used,
        int(np.sum(provider.pairs.labels == SKIP)) if provider.pairs is not None else 0,
        plan.train_prompts,
        provider.rounds,
        accuracy,
        len(plan.held_out),
        provider.stats["reward_model_spearman"],
        len(plan.held_out_records),
    )
