"""Conformance: every agent and every reward provider through one harness each (d3rlpy's shared
algorithm tester, Gymnasium's ``check_env`` over every registered env: tests/test_envs.py).

The lists come from the configs (``experiments/conf/agent``, ``experiments/conf/reward``, plus the toy
agent and reward of ``tests/toys`` found through Hydra's search path, the way a user adds their own),
and which env an agent runs on from its own requirements, so a new agent or provider is tested here
without editing this file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from agents.base import LearnsFromDataset
from envs.errors import ConfigError
from experiments.builders import (
    agent_requirements,
    build_agent,
    build_dataset,
    build_envs,
    build_reward,
    check_agent,
    env_card,
)
from experiments.cli import check_composes, expand_shorthands, group_choices
from rewards.base import RewardProvider, TransitionBatch, check_rewards
from rewards.labels import label
from tests.helpers import REPO

TOYS = REPO / "tests" / "toys" / "conf"
SEARCH = f"hydra.searchpath=[file://{TOYS}]"
AGENTS = group_choices("agent", extra_dirs=[TOYS])
REWARDS = group_choices("reward", extra_dirs=[TOYS])
ENVS = ("cartpole", "pendulum", "jobshop", "text-positive")  # an agent is tested on the first one it can run on
DATASETS = {"cartpole": "local/cartpole/random-v0", "pendulum": "local/pendulum/random-v0"}
#: small budgets for whatever hyperparameters an agent's config has
SMALL_HYPERPARAMS = {"n_steps": 16, "batch_size": 16, "learning_starts": 10, "buffer_size": 2000}
SMALL = {"batch_size": 16, "hidden": "[16,16]", "log_every": 10, "learning_starts": 20, "population": 32}
#: text agents (their configs have ``model``): the tiny test LM, one reference sample per prompt, small batches
TEXT_SMALL = {"model": "tiny", "k_samples": 1, "value_steps": 20, "batch_size": 2}
#: what a provider needs to be built at all (everything else: its config's defaults)
REWARD_ARGS: dict[str, list[str]] = {
    "fn": ["reward.target=rewards.examples:cartpole_upright"],
    "shaped": ["reward.scale=-2", "reward.potential=rewards.examples:cartpole_potential"],
    "clip": ["reward.model=rewardlab-tiny", "reward.pretrained=null", "reward.goal=pole upright", "reward.device=cpu"],
    "code": ["reward.source=rewards/code/programs/cartpole.py"],
    "preference": ["reward.epochs=3"],  # + reward.pairs=<file> (made in the fixture)
}


class _Quiet:
    def on_step(self, num_steps: int) -> bool:
        return True

    def on_log(self, num_steps: int, values: Mapping[str, float]) -> None:
        assert all(np.isfinite(v) for v in values.values()), values


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Small random datasets of cartpole and pendulum, and preference pairs cut from cartpole's."""
    from experiments import collect, prefs

    root = tmp_path_factory.mktemp("datasets")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    collect.main(["env=cartpole", "policy=random", "episodes=8", f"name={DATASETS['cartpole']}"])
    collect.main(["env=pendulum", "policy=random", "episodes=2", f"name={DATASETS['pendulum']}"])
    prefs.main([f"dataset={DATASETS['cartpole']}", "pairs=60", "segment=5", "name=default"])
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


def _compose(*overrides: str) -> Any:
    return check_composes(expand_shorthands([SEARCH, *overrides]))


def _env_overrides(env: str) -> list[str]:
    small = {"jobshop": ["env.instance=ft06"], "text-positive": ["env.n_prompts=16", "env.max_response_tokens=8"]}
    return [f"env={env}", *small.get(env, [])]


def _agent_config(agent: str) -> tuple[str, Any]:
    """The env the agent is tested on and its config there, with small budgets."""
    for env in ENVS:
        cfg = _compose(*_env_overrides(env), f"agent={agent}")
        needs_data = agent_requirements(cfg.agent).dataset
        if needs_data and env not in DATASETS:
            continue
        env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
        probe = build_envs(env_cfg, 1, 0, build_reward(cfg.reward))
        try:
            check_agent(cfg.agent, probe.action_space, env_card(env_cfg), has_dataset=needs_data)
        except ConfigError:
            continue
        finally:
            probe.close()
        small = [f"agent.hyperparams.{k}={v}" for k, v in SMALL_HYPERPARAMS.items() if k in (cfg.agent.get("hyperparams") or {})]
        small += [f"agent.{k}={v}" for k, v in SMALL.items() if k in cfg.agent]
        small += [f"agent.{k}={v}" for k, v in TEXT_SMALL.items() if k in cfg.agent] if "model" in cfg.agent else []
        small += ["agent.n_envs=2"] if cfg.agent.get("n_envs", 1) > 2 else []
        small += [f"dataset={DATASETS[env]}"] if needs_data else []
        return env, _compose(*_env_overrides(env), f"agent={agent}", *small)
    raise AssertionError(f"agent={agent} runs on none of {ENVS}: give the harness an env it can run on")


def _build(cfg: Any, seed: int) -> tuple[Any, Any]:
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    reward = build_reward(cfg.reward)
    venv = build_envs(env_cfg, int(cfg.agent.get("n_envs", 1)), seed, reward, observe=True)
    data = build_dataset(cfg.dataset, reward) if cfg.get("dataset") is not None else None
    agent = build_agent(cfg.agent, venv, reward, seed, "cpu", card=env_card(env_cfg), dataset=data)
    return agent, venv


def _params(agent: Any) -> list[torch.Tensor]:
    modules = getattr(agent, "modules", None)
    if isinstance(modules, dict):
        return [p.detach().clone() for m in modules.values() for p in m.state_dict().values()]
    return []


@pytest.mark.parametrize("name", AGENTS)
def test_agent_conformance(name: str, datasets: Path, tmp_path: Path) -> None:
    """Built from its real config; trains to the budget; acts in the action space; a save/load round
    trip acts the same; a loaded agent resumes to the next budget (exactly, for offline agents)."""
    _env, cfg = _agent_config(name)
    agent, venv = _build(cfg, seed=0)
    budget = 24 if isinstance(agent, LearnsFromDataset) else 64
    agent.train(budget, _Quiet())
    assert agent.num_steps == (budget if agent.learns else 0)
    obs = venv.reset()
    actions = agent.act(obs, deterministic=True)
    assert len(actions) == len(obs) and all(venv.action_space.contains(a) for a in actions), actions

    agent.save(tmp_path / "ckpt")
    fresh, fresh_env = _build(cfg, seed=1)  # another seed: what it acts on must come from the checkpoint
    fresh.load(tmp_path / "ckpt")
    if np.asarray(actions).dtype == object:  # text actions
        assert list(fresh.act(obs, True)) == list(actions)
    else:
        np.testing.assert_allclose(np.asarray(fresh.act(obs, True), dtype=float), np.asarray(actions, dtype=float), atol=1e-5)
    assert fresh.num_steps == agent.num_steps

    if agent.learns:
        agent.train(2 * budget, _Quiet())
        fresh.train(2 * budget, _Quiet())
        assert agent.num_steps == fresh.num_steps == 2 * budget
        if isinstance(agent, LearnsFromDataset):  # no env state: resuming is exact
            for a, b in zip(_params(agent), _params(fresh), strict=True):
                torch.testing.assert_close(a, b)
    for a in (agent, fresh):
        a.close()
    for v in (venv, fresh_env):
        v.close()


def _reward_config(name: str, datasets: Path) -> Any:
    extra = list(REWARD_ARGS.get(name, []))
    if name == "preference":
        extra.append(f"reward.pairs={datasets / DATASETS['cartpole'] / 'preferences' / 'default.npz'}")
    return _compose("env=cartpole", "env.render.width=64", "env.render.height=48", f"reward={name}", *extra)


def _batches(provider: RewardProvider, cfg: Any, steps: int = 12) -> list[TransitionBatch]:
    """Transition batches of a random rollout as the training env's wrapper builds them."""
    seen: list[TransitionBatch] = []
    original = provider.reward

    def record(batch: TransitionBatch) -> np.ndarray:
        seen.append(batch)
        return original(batch)

    provider.reward = record  # type: ignore[method-assign]
    venv = build_envs(OmegaConf.to_container(cfg.env, resolve=True), 3, 0, provider, observe=True)
    venv.action_space.seed(0)
    venv.reset()
    for _ in range(steps):
        venv.step(np.stack([venv.action_space.sample() for _ in range(3)]))
    provider.reward = original  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("name", REWARDS)
def test_reward_provider_conformance(name: str, datasets: Path) -> None:
    """``(batch,)`` float32 finite rewards for the wrapper's batches (with the extras it declared);
    a NaN is refused where rewards enter training (the wrapper) and labelling; the torch path, where
    there is one, gives the same rewards."""
    cfg = _reward_config(name, datasets)
    provider = build_reward(cfg.reward)
    batches = _batches(provider, cfg)
    assert batches, "the wrapper never called the provider"
    for batch in batches:
        assert set(batch.extras) == set(provider.needs)
        out = provider.reward(batch)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (len(batch),), (out.dtype, out.shape)
        assert np.isfinite(out).all()

    torch_fn = provider.torch_reward()
    if torch_fn is not None:
        b = batches[-1]
        got = torch_fn(*(torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in (b.obs, b.action, b.next_obs)))
        np.testing.assert_allclose(got.detach().numpy(), provider.reward(b), rtol=1e-5, atol=1e-5)

    original = provider.reward

    def poisoned(batch: TransitionBatch) -> np.ndarray:
        out = np.array(original(batch), dtype=np.float32)
        out[-1] = np.nan
        return out

    provider.reward = poisoned  # type: ignore[method-assign]
    venv = build_envs(OmegaConf.to_container(cfg.env, resolve=True), 2, 0, provider)
    venv.reset()
    with pytest.raises(ConfigError, match="non-finite reward"):
        venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    from envs import data as ds

    data = ds.load(DATASETS["cartpole"], extras=provider.needs) if not provider.needs else None
    if data is not None:
        with pytest.raises(ConfigError, match="non-finite reward"):
            label(data, provider)
    provider.reward = original  # type: ignore[method-assign]
    provider.close()


def test_check_rewards_refuses_wrong_shapes_and_nan() -> None:
    assert check_rewards([1, 2], 2, "x").dtype == np.float32
    with pytest.raises(ConfigError, match=r"shape \(2, 1\); expected \(2,\)"):
        check_rewards(np.ones((2, 1)), 2, "x")
    with pytest.raises(ConfigError, match=r"non-finite reward .* at batch index 1"):
        check_rewards([0.0, np.inf], 2, "x")


def test_toy_agent_and_reward_run_through_run_py_from_the_search_path(run_cli: Any, tmp_path: Path) -> None:
    """A user's agent and reward, each one code file + one config outside experiments/conf, run end to end."""
    run = tmp_path / "toy"
    res = run_cli(
        "run.py",
        [SEARCH, "env=cartpole", "reward=toy_upright", "agent=toy_search", "preset=smoke", "steps=600",
         "video.final_episodes=0", f"hydra.run.dir={run}"],
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    summary = (run / "summary.json").read_text()
    assert '"agent": "toy_search"' in summary and '"reward": "toy_upright"' in summary
    assert (run / "checkpoints" / "latest").exists() and (run / "metrics.csv").exists()
    res = run_cli("run.py", [SEARCH, "agent=nope", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert res.returncode == 2 and "toy_search" in res.stderr and not (tmp_path / "bad").exists()


def test_an_agent_that_is_not_an_agent_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"is not an agents\.base\.Agent"):
        build_agent({"name": "x", "_target_": "collections.OrderedDict"}, gym.vector, None, 0, "cpu")  # type: ignore[arg-type]
