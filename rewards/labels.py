"""Labelling recorded data with a reward provider: the proxy beside the true reward, offline.

Offline agents learn from :class:`envs.data.Episodes` whose ``rewards`` are the run's proxy:
:func:`label` scores every transition with the run's provider in chunks (the env's true reward is
each batch's ``env_reward``), so ``reward=env`` trains on the true reward and any other provider on
its proxy. :func:`labelled` is what a run uses: labels from the provider, or (``labels=stored``) the
rewards a dataset was relabelled with by ``experiments/relabel.py``, after checking they were written
by the same kind of provider.
"""

from __future__ import annotations

import sys

import numpy as np

from envs.data import META, Episodes
from envs.errors import ConfigError
from rewards.base import RewardProvider, check_rewards

LABELS = ("provider", "stored")


def label(
    data: Episodes, provider: RewardProvider, chunk: int = 65536, components: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """``(steps,)`` float32 rewards from ``provider`` over the whole dataset, in chunks.

    Args:
        data: The episodes (their true reward is the batches' ``env_reward``; their extras are passed on).
        provider: The reward provider, already bound to the data's spaces.
        chunk: Transitions per provider call.
        components: If given, filled with the provider's named components, ``{name: (steps,)}``.

    Raises:
        ConfigError: The provider returned a wrong shape or a non-finite reward.
    """
    from tqdm import tqdm

    out = np.empty(len(data), dtype=np.float32)
    source = type(provider).__name__
    show = sys.stderr.isatty() and len(data) > 4 * chunk
    with tqdm(total=len(data), desc=f"labelling with {source}", unit="transition", disable=not show) as bar:
        for sl, batch in data.transition_batches(chunk):
            out[sl] = check_rewards(provider.reward(batch), len(batch), source=source)
            if components is not None:
                for k, v in provider.last_components.items():
                    components.setdefault(k, np.zeros(len(data), dtype=np.float32))[sl] = v
            bar.update(len(batch))
    return out


def labelled(data: Episodes, provider: RewardProvider, labels: str = "provider") -> Episodes:
    """``data`` with the rewards a run learns from: the provider's labels or the stored ones.

    Args:
        data: The dataset (loaded with the extras the provider needs when ``labels="provider"``).
        provider: The run's reward provider (bound to the data's spaces here).
        labels: ``provider`` (score every transition now) or ``stored`` (the dataset's own rewards,
            written by ``experiments/relabel.py`` with a provider of the same class).

    Raises:
        ConfigError: An unknown ``labels``, or stored labels written by another kind of provider.
    """
    if labels not in LABELS:
        raise ConfigError(f"dataset.labels={labels!r} must be one of {', '.join(LABELS)}")
    if labels == "stored":
        stored_by = (data.metadata.get(META) or {}).get("labels")
        if stored_by and stored_by.get("provider") != type(provider).__name__:
            raise ConfigError(
                f"labels=stored: dataset {data.dataset_id!r} was labelled by {stored_by.get('provider')} "
                f"({stored_by.get('reward')}), but this run evaluates the proxy with {type(provider).__name__}; "
                "give the reward= the dataset was relabelled with, or labels=provider"
            )
        return data
    provider.bind(data.observation_space, data.action_space)
    components: dict[str, np.ndarray] = {}
    rewards = label(data, provider, components=components)
    return data.with_rewards(rewards, components, labelled_by=type(provider).__name__)
