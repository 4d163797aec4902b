"""Building a run's parts from their config nodes: the factory library every entry point shares.

``run.py`` (through :mod:`experiments.runner`), ``collect.py``, ``relabel.py``, ``reward_eval.py``,
``rollout.py`` and the benchmarks build envs, rewards, datasets and agents only here, from the
``_target_`` of their ``experiments/conf/<group>/<name>.yaml`` node, so a new env, reward or agent is
one code file plus one config and nothing here changes:

* :func:`build_reward`: the provider of a ``conf/reward`` node;
* :func:`build_envs`: a seeded vector env of a ``conf/env`` node under the reward wrapper, gathering
  exactly the extras the provider needs;
* :func:`check_agent` / :func:`build_agent`: an agent of a ``conf/agent`` node; its requirements are
  checked against the env and the run first, then the constructor is given, by name, the run-derived
  arguments it declares (``env``, ``reward``, ``observation_space``, ``action_space``, ``card``,
  ``seed``, ``device``);
* :func:`build_dataset`: the data of a ``conf/dataset`` node, labelled with the run's reward.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from agents.base import Agent, LearnsFromDataset, Requirements, check_compatible, check_number_settings
from envs.cards import EnvCard, card
from envs.data import Episodes
from envs.errors import ConfigError
from envs.make import make_vec_env
from experiments.cli import config_dict
from rewards.base import RewardProvider
from rewards.wrapper import RewardVecEnv

#: What a run can hand an agent's constructor, by parameter name (module docstring).
RUN_ARGUMENTS = ("env", "reward", "observation_space", "action_space", "card", "seed", "device")


def _node(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return config_dict(cfg)
    return dict(cfg)


def _instantiate(node: Mapping[str, Any], what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that surfaces a component's ConfigError as itself."""
    try:
        return instantiate(dict(node), _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if cause is None or isinstance(cause, (ImportError, AttributeError)):
            raise ConfigError(f"{what}: {' '.join(str(exc).split())}") from exc
        raise


def build_reward(reward_cfg: Mapping[str, Any] | DictConfig) -> RewardProvider:
    """The reward provider described by a ``conf/reward/*.yaml`` node.

    Raises:
        ConfigError: The node cannot be built, or what it builds is not a :class:`RewardProvider`.
    """
    node = _node(reward_cfg)
    name = node.pop("name", "?")
    provider = _instantiate(node, f"reward {name}")
    if not isinstance(provider, RewardProvider):
        raise ConfigError(f"reward {name}: {type(provider).__name__} is not a rewards.base.RewardProvider")
    return provider


def build_envs(
    env_cfg: Mapping[str, Any],
    n_envs: int,
    seed: int,
    reward: RewardProvider,
    observe: bool = False,
    stream: str = "train",
) -> RewardVecEnv:
    """``n_envs`` envs of an env config under the reward wrapper, seeded from the run's seed stream.

    Args:
        env_cfg: A ``conf/env`` node as a mapping.
        n_envs: Parallel envs.
        seed: The run's seed (:func:`envs.make.env_seeds` derives each env's).
        reward: The provider whose proxy the wrapper returns (its ``needs`` are gathered from the envs).
        observe: The training env: a learned reward sees every batch.
        stream: What the envs are for (``train``, ``eval``, ``collect``): each purpose its own seeds.
    """
    venv = make_vec_env(env_cfg, n_envs, seed, extras=reward.needs, stream=stream)
    return RewardVecEnv(venv, reward, observe=observe)


def card_or_none(env_id: str) -> EnvCard | None:
    """The card of a registered env id, ``None`` for an env rewardlab registers no card for."""
    try:
        return card(env_id)
    except ConfigError:
        return None


def env_card(env_cfg: Mapping[str, Any]) -> EnvCard | None:
    """The card of an env config's id (``None`` for an env rewardlab registers no card for)."""
    return card_or_none(str(env_cfg.get("id")))


def agent_class(agent_cfg: Mapping[str, Any] | DictConfig) -> type[Agent]:
    """The :class:`Agent` subclass named by an agent node's ``_target_``.

    Raises:
        ConfigError: Missing or unimportable ``_target_``, or not an agent.
    """
    node = _node(agent_cfg)
    name, target = node.get("name", "?"), node.get("_target_")
    if not target:
        raise ConfigError(f"agent {name}: its config has no _target_ (the agent class, package.module.Class)")
    try:
        cls = get_class(str(target))
    except Exception as exc:  # Hydra raises ImportError or a plain Exception
        raise ConfigError(
            f"agent {name}: _target_={target} cannot be imported ({' '.join(str(exc).split())[:300]}); "
            "is its extra installed (pip install -e '.[all]')?"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(f"agent {name}: {target} is not an agents.base.Agent")
    return cls


def agent_requirements(agent_cfg: Mapping[str, Any] | DictConfig) -> Requirements:
    """What the configured agent needs of the env and the run (:meth:`Agent.requirements`)."""
    node = _node(agent_cfg)
    return agent_class(node).requirements(node)


def check_agent(
    agent_cfg: Mapping[str, Any] | DictConfig,
    action_space: Any,
    card: EnvCard | None,
    has_dataset: bool,
    dataset_root: str | None = None,
    steps: int | None = None,
    reward: RewardProvider | None = None,
) -> None:
    """Refuse an agent the env or the run cannot serve (or that would not update within ``steps``), before anything is built.

    Args:
        agent_cfg: The agent's config node.
        action_space: The env's action space.
        card: The env's card (``None``: an env rewardlab has none for).
        has_dataset: The run names a dataset.
        dataset_root: Where local datasets are (listed in the refusal of an agent that needs one).
        steps: The run's budget: an agent that would not update within it is refused (``None``: not checked).
        reward: The run's provider: an agent that scores imagined transitions refuses one that cannot
            (``None``: not checked).

    Raises:
        ConfigError: The agent's requirements are not met (the message says what would work; an agent
            that needs a dataset lists the local ones).
    """
    node = _node(agent_cfg)
    cls = agent_class(node)
    check_number_settings(cls, node, "agent")
    reqs = cls.requirements(node)
    if reqs.dataset and not has_dataset:
        from envs import data as ds

        local = ", ".join(ds.list_datasets(dataset_root)) or "none"
        reqs = dataclasses.replace(
            reqs,
            hint=f"local datasets under {ds.dataset_root(dataset_root)}: {local} (make one with experiments/collect.py)",
        )
    check_compatible(str(node.get("name", "?")), reqs, action_space, card, has_dataset, steps)
    if reqs.imagined_rewards and reward is not None:
        from rewards.env import check_imagined

        check_imagined(reward, f"agent={node.get('name', '?')}")


def build_dataset(dataset_cfg: Mapping[str, Any] | DictConfig, reward: RewardProvider) -> Episodes:
    """The data of a ``conf/dataset`` node, with ``rewards`` = the run's labels (:func:`rewards.labels.labelled`).

    The node's ``labels`` (``provider`` or ``stored``) says where the labels come from; the loader
    (its ``_target_``) is given ``extras=`` the provider's needs when the provider labels.
    """
    from rewards.labels import labelled

    node = _node(dataset_cfg)
    labels = str(node.pop("labels", "provider"))
    data = _instantiate(node, "dataset", extras=reward.needs if labels == "provider" else ())
    if not isinstance(data, Episodes):
        raise ConfigError(f"dataset: {node.get('_target_')} did not return envs.data.Episodes")
    return labelled(data, reward, labels)


def build_agent(
    agent_cfg: Mapping[str, Any] | DictConfig,
    env: Any,
    reward: RewardProvider,
    seed: int,
    device: str,
    card: EnvCard | None = None,
    dataset: Episodes | None = None,
) -> Agent:
    """The agent described by a ``conf/agent/*.yaml`` node, built for this run (module docstring).

    Args:
        agent_cfg: The agent node.
        env: The training vector env (its spaces are the agent's).
        reward: The run's reward provider.
        seed: The run's seed.
        device: ``cpu``, ``cuda`` ...
        card: The env's card (features, closed forms); looked up by the env's id when ``None``.
        dataset: Labelled data for an agent that learns from a dataset (:func:`build_dataset`).

    Raises:
        ConfigError: Requirements not met, or the agent refuses its configuration.
    """
    node = _node(agent_cfg)
    name = node.pop("name", "?")
    node.pop("n_envs", None)
    cls = agent_class({**node, "name": name})
    if card is None:
        spec = getattr(env, "get_attr", None)
        env_id = spec("spec")[0].id if spec is not None else None
        card = card_or_none(str(env_id)) if env_id else None
    check_compatible(str(name), cls.requirements(node), env.action_space, card, dataset is not None)
    available = {
        "env": env,
        "reward": reward,
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "card": card,
        "seed": int(seed),
        "device": device,
    }
    params = inspect.signature(cls).parameters
    given = {k: v for k, v in available.items() if k in params}
    # the config's arguments through Hydra, the run's objects (envs, the card) passed as they are
    factory = _instantiate({**node, "_partial_": True}, f"agent {name}")
    agent = factory(**given)
    if not isinstance(agent, Agent):
        raise ConfigError(f"agent {name}: {type(agent).__name__} is not an agents.base.Agent")
    if dataset is not None and isinstance(agent, LearnsFromDataset):
        agent.set_dataset(dataset)
    return agent
