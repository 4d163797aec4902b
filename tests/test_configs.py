"""Hydra configs: every env x agent combination composes, per-env tuning applies, the CLI wins."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest
from omegaconf import OmegaConf

from envs.errors import ConfigError
from experiments.builders import build_agent, build_envs, build_reward, check_agent, env_card
from experiments.cli import check_composes, check_group_choices, group_choices, validate

ENVS = group_choices("env")
AGENTS = group_choices("agent")


def _compose(*overrides: str):
    return check_composes(list(overrides))


def test_groups() -> None:
    assert AGENTS == [
        "a2c", "alol", "bc", "coplanner", "cpl", "cpsat", "dpo", "dqn", "iql", "maskable_ppo", "mbpo", "nll", "pdr", "pets", "ppo", "pro", "sac",
        "td3", "wbc",
    ]  # fmt: skip
    assert group_choices("reward") == ["clip", "code", "env", "fn", "preference", "shaped"]
    assert group_choices("preset") == ["smoke"]


def test_per_env_tuning_applies_and_the_command_line_wins() -> None:
    cfg = _compose("env=cartpole", "agent=ppo")
    assert cfg.agent.n_envs == 8 and cfg.agent.hyperparams.learning_rate == "lin_0.001"
    cfg = _compose("env=cartpole", "agent=ppo", "agent.hyperparams.learning_rate=0.01", "agent.n_envs=2")
    assert cfg.agent.hyperparams.learning_rate == 0.01 and cfg.agent.n_envs == 2
    cfg = _compose("env=halfcheetah", "agent=ppo")  # shared MuJoCo file + the env's own values
    assert cfg.agent.normalize_obs and cfg.agent.policy_kwargs.activation_fn == "relu"
    assert cfg.agent.hyperparams.learning_rate == pytest.approx(2.0633e-05)
    cfg = _compose("env=minigrid-fourrooms", "agent=ppo")
    assert cfg.agent.hyperparams.n_steps == 512 and cfg.agent.normalize_reward
    cfg = _compose("env=hopper", "agent=sac")
    assert cfg.agent.hyperparams.learning_starts == 10000
    cfg = _compose("env=minigrid-unlock", "agent=a2c")  # no tuned file: the agent's defaults
    assert cfg.agent.n_envs == 8 and cfg.agent.hyperparams.n_steps == 5


def test_preset_smoke_shrinks_budgets() -> None:
    cfg = _compose("preset=smoke")
    assert cfg.steps == 2000 and cfg.eval.episodes == 2 and cfg.video.max_frames == 40
    validate(cfg)


@pytest.mark.parametrize("env", ENVS)
def test_every_agent_builds_where_its_requirements_hold_and_is_refused_elsewhere(env: str) -> None:
    """Which agent runs on which env comes from the agents' own requirements (no hand lists here):
    an agent whose requirements hold builds and acts; any other is refused with the same one-line reason."""
    env_overrides = [f"env={env}", *(["env.instance=ft06"] if env == "jobshop" else [])]
    env_cfg = OmegaConf.to_container(_compose(*env_overrides).env, resolve=True)
    card = env_card(env_cfg)
    built, refused = set(), {}
    for agent in AGENTS:
        cfg = _compose(*env_overrides, f"agent={agent}")
        if "n_envs" in cfg.agent:
            cfg = _compose(*env_overrides, f"agent={agent}", "agent.n_envs=1")
        if "model" in cfg.agent:  # text agents: the tiny test LM
            cfg = _compose(*env_overrides, f"agent={agent}", "agent.model=tiny")
        validate(cfg)
        reward = build_reward(cfg.reward)
        venv = build_envs(env_cfg, 1, 0, reward)
        try:
            check_agent(cfg.agent, venv.action_space, card, has_dataset=False, reward=reward)
        except ConfigError as exc:
            refused[agent] = str(exc)
            with pytest.raises(ConfigError, match=re.escape(str(exc).split(";")[0])):
                build_agent(cfg.agent, venv, reward, seed=0, device="cpu")
        else:
            agent_obj = build_agent(cfg.agent, venv, reward, seed=0, device="cpu")
            obs = venv.reset()
            assert venv.action_space.contains(agent_obj.act(obs)[0])
            agent_obj.close()
            built.add(agent)
        venv.close()
    # the requirements are not vacuous: general agents run everywhere, specialised ones only where they fit
    text = {"alol", "dpo", "nll", "pro", "wbc"}
    if card is not None and "text" in card.features:  # a response-text action: text agents only
        assert built == text and all("action space" in refused[a] for a in ("ppo", "sac", "iql")), refused
        return
    assert {"ppo", "a2c"} <= built and not (text & built), refused
    discrete = isinstance(venv.action_space, gym.spaces.Discrete)
    assert ("dqn" in built) == discrete and ("sac" in built) == ("td3" in built) == (not discrete)
    assert not ({"iql", "bc", "cpl"} & built) and all("give dataset=<id>" in refused[a] for a in ("iql", "bc", "cpl"))
    assert ({"pdr", "cpsat", "maskable_ppo"} <= built) == (env == "jobshop"), refused


def test_a_dataset_given_to_an_online_agent_is_refused() -> None:
    cfg = _compose("env=cartpole", "agent=ppo")
    with pytest.raises(ConfigError, match="learns online and would ignore dataset="):
        check_agent(cfg.agent, gym.spaces.Discrete(2), None, has_dataset=True)


def test_group_choice_and_compose_errors() -> None:
    with pytest.raises(ConfigError, match="unknown env 'nope'"):
        check_group_choices(["env=nope"])
    with pytest.raises(ConfigError, match="unknown agent 'x'"):
        check_group_choices(["agent=choice(ppo,x)", "-m"])
    check_group_choices(["env=cartpole", "agent=ppo,sac", "reward=env", "preset=null", "hydra/launcher=joblib"])
    with pytest.raises(ConfigError, match="Could not override 'nope': Key 'nope' is not in struct"):
        check_composes(["nope=1"])
    assert check_composes(["-m", "nope=1"]) is None  # sweeps are checked per job by the runner


@pytest.mark.parametrize(
    "override,message",
    [
        ("steps=0", "steps=0 must be an integer >= 1"),
        ("seed=-1", "seed=-1 must be an integer >= 0"),
        ("eval.episodes=0", "eval.episodes=0"),
        ("checkpoint.keep=0", "checkpoint.keep=0"),
        ("video.fps=-3", "video.fps=-3"),
        ("progress=maybe", "progress='maybe'"),
        ("device=gpu", "device='gpu'"),
    ],
)
def test_validate(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(_compose(override))


@pytest.mark.parametrize(
    "overrides,steps,message",
    [
        (["env=hopper", "agent=sac"], 5000, r"steps=5000 gives SAC no update: .*learning_starts=10000 .*step 10001"),
        (["env=pendulum", "agent=ppo", "agent.n_envs=2", "agent.hyperparams.n_steps=64"], 100, r"n_steps=64 x agent\.n_envs=2"),
    ],
)
def test_a_budget_that_leaves_no_update_is_refused(overrides: list[str], steps: int, message: str) -> None:
    cfg = _compose(*overrides)
    space = gym.spaces.Box(-1, 1, (3,))
    with pytest.raises(ConfigError, match=message):
        check_agent(cfg.agent, space, None, has_dataset=False, steps=steps)
    check_agent(cfg.agent, space, None, has_dataset=False, steps=20000)  # enough: accepted
