"""Relabelling an off-policy agent's replay buffer (issue 17, fault 1): every stored reward equals the
reward of the transition the env really made, ``(s, a, s')`` with the real last ``s'`` of each
episode, in SB3's plain buffer and in its memory-optimised one (``optimize_memory_usage``), which keeps
``s'`` only as the next row's ``s`` (wrapping around) and loses it at every episode end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from agents.base import SilentCallback
from agents.sb3 import CompactReplayBuffer, SB3Agent, _save_buffer
from envs.errors import ConfigError
from envs.make import make_vec_env
from rewards.base import LearnedReward, TransitionBatch
from rewards.wrapper import RewardVecEnv
from tests.helpers import REPO

N_ENVS, ROWS, STEPS, MAX_STEPS = 2, 64, 152, 16  # 64 rows per env, 152 steps per env: the buffer wraps
# (152: a multiple of DQN's train_freq 4; SB3 drops the step a callback stops it at inside a train_freq window)


class Recorder(LearnedReward):
    """A reward of the whole transition that records every transition the training env makes, in order.

    ``f(s, a, s', terminated, truncated)`` reads every part, so a wrong ``s'``, an unscaled action or a
    lost episode end changes it.
    """

    def __init__(self) -> None:
        self.steps: list[TransitionBatch] = []

    def reward(self, batch: TransitionBatch) -> np.ndarray:
        a = np.asarray(batch.action, dtype=np.float64).reshape(len(batch), -1)
        s = np.asarray(batch.obs, dtype=np.float64).reshape(len(batch), -1)
        s2 = np.asarray(batch.next_obs, dtype=np.float64).reshape(len(batch), -1)
        weights = np.arange(1, s.shape[1] + 1)
        return (
            0.1 * s @ weights + 10.0 * s2 @ weights + a.sum(1) + 100.0 * batch.terminated + 1000.0 * batch.truncated
        ).astype(np.float32)

    def observe(self, batch: TransitionBatch, components: dict[str, np.ndarray] | None = None) -> None:
        self.steps.append(batch)

    def save(self, path: Path) -> None:
        pass

    def load(self, path: Path) -> None:
        pass

    def expected(self, rows: int, cursor: int, full: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, n_envs)`` rewards of the transitions each buffer row holds, and which rows are valid."""
        out = np.full((rows, N_ENVS), np.nan, dtype=np.float32)
        for t, batch in enumerate(self.steps):  # vector step t is row t % rows; later steps overwrite
            out[t % rows] = self.reward(batch)
        valid = np.ones(rows, dtype=bool) if full else np.arange(rows) < cursor
        return out, valid


def _venv(name: str, provider: Recorder) -> RewardVecEnv:
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / f"experiments/conf/env/{name}.yaml"))
    assert isinstance(cfg, dict)
    cfg["max_episode_steps"] = MAX_STEPS  # many episode ends, some truncated
    return RewardVecEnv(make_vec_env(cfg, N_ENVS, 0), provider, observe=True)


def _agent(algo: str, compact: bool, provider: Recorder, timeouts: bool = True) -> tuple[SB3Agent, RewardVecEnv]:
    env = _venv("pendulum" if algo == "SAC" else "cartpole", provider)
    hyper: dict[str, object] = {"buffer_size": ROWS * N_ENVS, "learning_starts": 10**6}  # random actions, no updates
    if compact:
        hyper["optimize_memory_usage"] = True
    if not timeouts:  # SB3's only setting with optimize_memory_usage: a time limit counts as a failure in TD targets
        hyper["replay_buffer_kwargs"] = {"handle_timeout_termination": False}
    return SB3Agent(algo, env, reward=provider, seed=0, device="cpu", hyperparams=hyper), env


@pytest.mark.parametrize("compact", [False, True], ids=["plain", "memory-optimised"])
@pytest.mark.parametrize("algo", ["SAC", "DQN"])  # pendulum (Box actions, time limits), cartpole (failures)
def test_relabelled_rewards_are_those_of_the_real_transitions(algo: str, compact: bool, tmp_path: Path) -> None:
    provider = Recorder()
    agent, env = _agent(algo, compact, provider)
    agent.train(STEPS * N_ENVS, SilentCallback())
    buffer = agent.model.replay_buffer
    assert isinstance(buffer, CompactReplayBuffer) == compact and buffer.full and buffer.optimize_memory_usage == compact
    ends = buffer.dones[buffer.dones > 0].size
    assert ends > 6, "the test needs many episode ends in the buffer"
    if compact:  # SB3's next row holds the next episode's first observation there, not the real s'
        assert buffer.handle_timeout_termination and buffer.timeouts.any()
    buffer.rewards[:] = -1.0
    agent.relabel(provider, chunk=50)  # chunks that do not divide the rows
    expected, valid = provider.expected(ROWS, buffer.pos, buffer.full)
    if compact:  # the oldest row's s was overwritten by the newest row's s': never sampled, not compared
        valid[buffer.pos] = False
    np.testing.assert_allclose(buffer.rewards[valid], expected[valid], rtol=1e-5, atol=1e-3)

    # a checkpoint keeps what relabelling needs: a reloaded buffer relabels the same
    agent.save(tmp_path / "agent")
    other, other_env = _agent(algo, compact, Recorder())
    other.load(tmp_path / "agent")
    other.model.replay_buffer.rewards[:] = -1.0
    other.relabel(provider)
    np.testing.assert_allclose(other.model.replay_buffer.rewards[valid], expected[valid], rtol=1e-5, atol=1e-3)
    env.close()
    other_env.close()


def test_memory_optimised_sampling_bootstraps_from_the_real_last_observation() -> None:
    provider = Recorder()
    agent, env = _agent("SAC", True, provider)
    agent.train(STEPS * N_ENVS, SilentCallback())
    buffer = agent.model.replay_buffer
    truth = {}  # (row, env) -> real s' of the transition stored there
    for t, batch in enumerate(provider.steps):
        for j in range(N_ENVS):
            truth[(t % ROWS, j)] = (batch.next_obs[j], bool(batch.truncated[j]))
    rows = np.array([r for r in range(ROWS) if r != buffer.pos] * 4)
    np.random.seed(0)
    samples = buffer._get_samples(rows)
    np.random.seed(0)
    envs = np.random.randint(0, N_ENVS, size=len(rows))  # the env of each sample, as SB3 draws it
    want = np.stack([truth[(int(r), int(e))][0] for r, e in zip(rows, envs, strict=True)])
    np.testing.assert_allclose(samples.next_observations.numpy(), want, rtol=1e-6)
    cut = np.array([truth[(int(r), int(e))][1] for r, e in zip(rows, envs, strict=True)])
    assert cut.any()  # time limits: no "done" for the TD target, as SB3's plain buffer does
    np.testing.assert_array_equal(samples.dones.numpy()[cut, 0], 0.0)
    env.close()


@pytest.mark.parametrize("given", ["class", "config"])  # a config names it "package.module:Class"
def test_sb3s_own_memory_optimised_buffer_is_refused_for_a_learned_reward(given: str) -> None:
    from stable_baselines3.common.buffers import ReplayBuffer

    env = _venv("pendulum", Recorder())
    hyper = {
        "buffer_size": 100,
        "optimize_memory_usage": True,
        "replay_buffer_class": ReplayBuffer if given == "class" else "stable_baselines3.common.buffers:ReplayBuffer",
        "replay_buffer_kwargs": {"handle_timeout_termination": False},
    }
    with pytest.raises(ConfigError, match="keeps no next observation at episode ends"):
        SB3Agent("SAC", env, reward=Recorder(), seed=0, device="cpu", hyperparams=hyper)
    if given == "config":
        hyper["replay_buffer_class"] = "stable_baselines3.buffers:Nope"
        with pytest.raises(ConfigError, match=r"replay_buffer_class='stable_baselines3.buffers:Nope' cannot be imported"):
            SB3Agent("SAC", env, seed=0, device="cpu", hyperparams=hyper)
    env.close()


@pytest.mark.parametrize(
    ("compact", "timeouts"), [(False, True), (True, True), (True, False)], ids=["plain", "compact", "compact-no-timeouts"]
)
def test_medium_replay_reads_the_real_episodes_from_a_saved_buffer(compact: bool, timeouts: bool, tmp_path: Path) -> None:
    from experiments.collect import replay_episodes

    provider = Recorder()
    agent, env = _agent("SAC", compact, provider, timeouts)
    agent.train(STEPS * N_ENVS, SilentCallback())
    buffer = agent.model.replay_buffer
    run = tmp_path / "run"
    (run / "ckpt" / "agent").mkdir(parents=True)
    (run / "config.yaml").write_text("reward: {name: env}\n")
    _save_buffer(buffer, run / "ckpt" / "agent" / "replay_buffer.npz")
    episodes = replay_episodes(run, run / "ckpt", env.action_space)

    # the real episodes, from the recorded transitions: those that end inside the buffer's window
    first_kept = STEPS - ROWS + 1 if compact else STEPS - ROWS  # compact: the oldest row is invalid
    want = []
    for j in range(N_ENVS):
        start = None
        for t, batch in enumerate(provider.steps):
            start = t if start is None else start
            if batch.terminated[j] or batch.truncated[j]:
                if start >= first_kept:
                    steps = provider.steps[start : t + 1]
                    obs = np.stack([b.obs[j] for b in steps] + [batch.next_obs[j]])
                    want.append((obs, np.stack([b.action[j] for b in steps]), bool(batch.truncated[j])))
                start = None
    assert len(episodes) == len(want) > 4
    got = sorted(episodes, key=lambda e: e.observations[0].tobytes())
    want.sort(key=lambda w: w[0][0].tobytes())
    for e, (obs, actions, cut) in zip(got, want, strict=True):
        np.testing.assert_allclose(e.observations, obs, rtol=1e-6)
        np.testing.assert_allclose(e.actions, actions, rtol=1e-5, atol=1e-6)
        assert bool(e.truncations[-1]) == cut and bool(e.terminations[-1]) == (not cut)
    # the saved file says what it holds
    with np.load(run / "ckpt" / "agent" / "replay_buffer.npz") as data:
        assert ("next_observations" in data.files) != compact and ("ends_obs" in data.files) == compact
        assert json.loads(data["meta"].tobytes().decode())["full"]
    env.close()
