"""Reward functions and utilities used by the tests (importable as ``tests.helpers``)."""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rewards.base import RewardProvider, TransitionBatch

if TYPE_CHECKING:
    from rewards.preference.segments import Segments
    from rewards.wrapper import RewardVecEnv

REPO = Path(__file__).resolve().parents[1]
#: Debian's chromium and chromium-driver, for the tests that open a page in a real browser (None: absent).
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def browser():  # type: ignore[no-untyped-def]
    """A headless Chromium driven by Selenium (autoplay allowed; needs :data:`CHROMIUM` and :data:`DRIVER`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file (a run's metrics.csv, train.csv) as dicts."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def reward_venv(name: str, provider: RewardProvider, n: int = 1, observe: bool = False) -> RewardVecEnv:
    """``n`` envs of ``experiments/conf/env/<name>.yaml`` (seed 0) under ``provider``, as the runner builds them:
    frames in ``info`` when the provider needs them; ``observe`` for the training env."""
    from omegaconf import OmegaConf

    from envs.make import make_vec_env
    from rewards.wrapper import RewardVecEnv

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / f"experiments/conf/env/{name}.yaml"))
    return RewardVecEnv(make_vec_env(cfg, n, 0, extras=provider.needs), provider, observe=observe)


def constant_one(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """1 per transition: on CartPole this equals the env's own reward."""
    return np.ones(len(obs), dtype=np.float32)


def slow_constant_one(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """As :func:`constant_one`, 10 ms per batch: makes a short run slow enough to interrupt."""
    time.sleep(0.01)
    return constant_one(obs, action, next_obs)


def brightness(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Mean pixel value of the next frame (a frame-based reward)."""
    assert frames.ndim == 4 and frames.shape[0] == len(obs) and frames.dtype == np.uint8
    return frames.reshape(len(frames), -1).mean(axis=1).astype(np.float32) / 255.0


def wrong_shape(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    return np.ones((len(obs), 2), dtype=np.float32)


def nan_reward(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    out = np.zeros(len(obs), dtype=np.float32)
    out[-1] = np.nan
    return out


NOT_CALLABLE = 3


def crash_later(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Raises a bug-like error once the cart has moved right: a run that fails part way."""
    if (next_obs[:, 0] > 0.05).any():
        raise RuntimeError("bug in the reward function")
    return constant_one(obs, action, next_obs)


def offline_agent(cls: type, env: RewardVecEnv, dataset: str | None = None, seed: int = 0, labels: str = "provider", **kwargs: object) -> object:
    """An offline agent ``cls`` on ``env`` built as the runner builds it: requirements checked, ``dataset``
    loaded and labelled with ``env``'s reward provider (or its stored rewards), then given to the agent."""
    from experiments.builders import build_agent, build_dataset, check_agent

    node = {"name": cls.name, "_target_": f"{cls.__module__}.{cls.__qualname__}", **kwargs}
    check_agent(node, env.action_space, None, has_dataset=dataset is not None)
    data = None
    if dataset is not None:
        data = build_dataset({"_target_": "envs.data.load", "dataset_id": dataset, "root": None, "labels": labels}, env.provider)
    return build_agent(node, env, env.provider, seed, "cpu", dataset=data)


def random_segments(
    rewards: np.ndarray,
    components: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    mask: np.ndarray | None = None,
    obs_dim: int = 4,
    act_dim: int = 2,
) -> Segments:
    """Segments with the given ``(n, length)`` true rewards and random observations and actions in ``[-1, 1]``."""
    from rewards.preference.segments import Segments

    n, h = rewards.shape
    rng = np.random.default_rng(seed)
    return Segments(
        obs=rng.normal(size=(n, h, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, h, act_dim)).astype(np.float32),
        next_obs=rng.normal(size=(n, h, obs_dim)).astype(np.float32),
        true_rewards=rewards.astype(np.float32),
        episode=np.zeros(n, np.int64),
        start=np.zeros(n, np.int64),
        components=components or {},
        mask=mask,
    )


class FramesReward(RewardProvider):
    """A provider that scores rendered frames (``needs = {"frame"}``): rewards 0; for refusals of frame-based rewards."""

    needs = frozenset({"frame"})

    def reward(self, batch: TransitionBatch) -> np.ndarray:
        return np.zeros(len(batch), np.float32)



class TrainLog:
    """A :class:`~agents.base.TrainCallback` that keeps every logged row and checks that its values are finite."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_step(self, num_steps: int) -> bool:
        return True

    def on_log(self, num_steps: int, values: Mapping[str, float]) -> None:
        assert all(np.isfinite(v) for v in values.values()), values
        self.rows.append(dict(values))


def agent_on_env(
    overrides: Sequence[str], seed: int = 0, card: Any = None, reward: RewardProvider | None = None
) -> tuple[Any, Any]:
    """The agent and its 1-env training vec env of a run's CLI ``overrides`` (e.g. ``["env=pendulum", "agent=mbpo"]``),
    checked and built as the runner does; ``card`` replaces the env's card, ``reward`` the configured provider."""
    from experiments.builders import build_agent, build_envs, build_reward, check_agent, env_card
    from experiments.cli import check_composes, config_dict, expand_shorthands

    cfg = check_composes(expand_shorthands(list(overrides)))
    env_cfg = config_dict(cfg.env)
    provider = reward if reward is not None else build_reward(cfg.reward)
    venv = build_envs(env_cfg, 1, seed, provider, observe=True)
    check_agent(cfg.agent, venv.action_space, env_card(env_cfg), has_dataset=False)
    return build_agent(cfg.agent, venv, provider, seed, "cpu", card=card or env_card(env_cfg)), venv
