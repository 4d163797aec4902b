"""Hydra configs: every env x agent combination composes, per-env tuning applies, the CLI wins."""

from __future__ import annotations

import gymnasium as gym
import pytest
from omegaconf import OmegaConf

from envs.errors import ConfigError
from envs.make import make_vec_env
from experiments.cli import check_composes, check_group_choices, group_choices, validate
from experiments.runner import build_agent, build_reward
from rewards.wrapper import RewardVecEnv

ENVS = group_choices("env")
AGENTS = group_choices("agent")
DISCRETE_ONLY, CONTINUOUS_ONLY = {"dqn"}, {"sac", "td3"}
JOBSHOP_ONLY = {"pdr", "cpsat", "maskable_ppo"}  # need the job table observation or action masks
OFFLINE = {"iql", "bc", "cpl"}  # need dataset= (tests/test_offline.py)


def _compose(*overrides: str):
    return check_composes(list(overrides))


def test_groups() -> None:
    assert AGENTS == ["a2c", "bc", "cpl", "cpsat", "dqn", "iql", "maskable_ppo", "pdr", "ppo", "sac", "td3"]
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
def test_every_compatible_agent_builds_on_every_env(env: str) -> None:
    env_overrides = [f"env={env}", *(["env.instance=ft06"] if env == "jobshop" else [])]
    cfg = _compose(*env_overrides)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    probe = make_vec_env(env_cfg, 1, 0)
    discrete = isinstance(probe.action_space, gym.spaces.Discrete)
    probe.close()
    for agent in AGENTS:
        if (discrete and agent in CONTINUOUS_ONLY) or (not discrete and agent in DISCRETE_ONLY):
            continue
        cfg = _compose(*env_overrides, f"agent={agent}", *([] if agent in OFFLINE else ["agent.n_envs=1"]))
        if agent in JOBSHOP_ONLY and env != "jobshop":
            venv = RewardVecEnv(make_vec_env(env_cfg, 1, 0), build_reward(cfg.reward))
            with pytest.raises(ConfigError, match="jobshop|action space"):  # refused with a pointer, not a crash later
                build_agent(cfg.agent, env=venv, seed=0, device="cpu")
            venv.close()
            continue
        if agent in OFFLINE:
            venv = RewardVecEnv(make_vec_env(env_cfg, 1, 0), build_reward(cfg.reward))
            with pytest.raises(ConfigError, match="learns from a dataset: give dataset="):
                build_agent(cfg.agent, env=venv, seed=0, device="cpu")
            venv.close()
            continue
        validate(cfg)
        venv = RewardVecEnv(make_vec_env(env_cfg, 1, 0), build_reward(cfg.reward))
        built = build_agent(cfg.agent, env=venv, seed=0, device="cpu")
        obs = venv.reset()
        assert venv.action_space.contains(built.act(obs)[0])
        built.close()


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
