"""COPlanner (issue 21): UP-MPC's choice and its sign, the rollout penalty, exact resume, refusals (the conformance harness covers it from the configs: tests/test_conformance.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.model_based.coplanner import COPlanner, disagreement
from envs.errors import ConfigError
from experiments.builders import build_envs, build_reward, check_agent, env_card
from experiments.cli import check_composes, config_dict, expand_shorthands
from tests.helpers import TrainLog, agent_on_env
from tests.test_model_based_mbpo import TINY as MBPO_TINY

torch.set_num_threads(1)

#: COPlanner at sizes that train in about a second (as MBPO's tests), with a short plan
TINY = [*MBPO_TINY, "agent.plan_horizon=3", "agent.plan_candidates=4"]


def _coplanner(*overrides: str, seed: int = 0) -> tuple[COPlanner, Any]:
    agent, venv = agent_on_env(["env=pendulum", "agent=coplanner", *overrides], seed)
    assert isinstance(agent, COPlanner)
    return agent, venv


def _hand_built(agent: COPlanner, spread: float = 2.0) -> None:
    """An ensemble whose elites agree on ``s' = s`` except along ``a``: elite ``e`` predicts ``s + e spread a``
    in every dimension, with no noise: ``u(s, a) = spread |a| / 2`` (two elites; ``|a|`` by default)."""

    def predict(obs: torch.Tensor, action: torch.Tensor, members: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        e = torch.arange(obs.shape[0], dtype=obs.dtype).view(-1, 1, 1)
        mean = obs + e * spread * action[..., :1]
        return mean, torch.full_like(mean, -torch.inf)

    agent.model.predict = predict  # type: ignore[method-assign]
    agent.model.fitted = True
    assert len(agent.model.elites) == 2


def _candidates(scaled: list[float]) -> Any:
    """A policy that proposes the given first actions (scaled to [-1, 1]), one per candidate row, then 0."""
    calls = {"n": 0}

    def policy(state: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 1:
            assert len(state) == len(scaled)  # one start state: K rows
            return torch.tensor(scaled, dtype=torch.float32).view(-1, 1)
        return torch.zeros(len(state), 1)

    return policy


def test_disagreement_is_the_std_of_the_members_means() -> None:
    means = torch.tensor([[[0.0, 1.0, 5.0]], [[2.0, 1.0, 5.0]], [[4.0, 1.0, 5.0]]])  # (E=3, n=1, d=3)
    expected = np.std([0.0, 2.0, 4.0]) / 3  # only the first dimension disagrees
    torch.testing.assert_close(disagreement(means), torch.tensor([expected], dtype=torch.float32))
    assert disagreement(torch.ones(4, 7, 3)).eq(0).all()  # members that agree: no uncertainty


@pytest.mark.parametrize("rates", [(1.0, 1.0), (2.0, 0.75)])
def test_up_mpc_takes_the_best_reward_plus_bonus_and_its_sign_is_the_method(rates: tuple[float, float]) -> None:
    """Candidates a = 0, 0.5, 1 (env units) with r = -(a - 0.5)^2 and u = |a|: the reward alone picks 0.5;
    the optimistic bonus (real env) picks 1; the conservative penalty (rollouts) picks 0. A flipped sign
    swaps the two."""
    conservative, optimistic = rates
    agent, _ = _coplanner(*TINY, "agent.plan_horizon=1", "agent.plan_candidates=3",
                          f"agent.conservative_rate={conservative}", f"agent.optimistic_rate={optimistic}")  # fmt: skip
    _hand_built(agent)
    agent.reward_fn = lambda s, a, n: -((a[:, 0] - 0.5) ** 2)  # type: ignore[assignment,misc]
    scaled = [0.0, 0.25, 0.5]  # Pendulum's actions are in [-2, 2]: env actions 0, 0.5, 1
    obs = torch.tensor([[1.0, 0.0, 0.0]])

    def choose(rate: float) -> float:
        agent._policy = _candidates(scaled)  # type: ignore[method-assign]
        first, _ = agent.plan(obs, rate)
        return float(first[0, 0])

    # scores r + alpha u: (-0.25, 0, -0.25) + alpha (0, 0.5, 1)
    assert choose(0.0) == 0.25
    assert choose(optimistic) == 0.5 and choose(-conservative) == 0.0
    # the hooks carry the signs: rollouts are conservative, the real env optimistic
    agent._policy = _candidates(scaled)  # type: ignore[method-assign]
    assert float(agent._rollout_action(obs)[0, 0]) == 0.0
    agent._policy = _candidates(scaled)  # type: ignore[method-assign]
    np.testing.assert_array_equal(agent._collect_action(obs.numpy()), [[1.0]])
    agent.close()


def test_up_mpc_sums_the_discounted_plan_and_stops_at_termination() -> None:
    """H = 3 with gamma = 0.5: a candidate whose first step terminates earns only its first reward."""
    agent, _ = _coplanner(*TINY, "agent.plan_horizon=3", "agent.plan_candidates=2", "agent.plan_discount=0.5")
    _hand_built(agent, spread=0.0)  # no disagreement: reward only
    agent.reward_fn = lambda s, a, n: torch.ones(len(s))  # type: ignore[assignment,misc]
    # candidate 0 terminates at once (reward 1); candidate 1 runs on (1 + 0.5 + 0.25), despite a lower first action
    agent.termination_fn = lambda s, a, n: a[:, 0] > 0.5
    agent._policy = _candidates([1.0, 0.0])  # type: ignore[method-assign]
    first, risk = agent.plan(torch.tensor([[1.0, 0.0, 0.0]]), 1.0)
    assert float(first[0, 0]) == 0.0 and float(risk[0]) == 0.0
    agent.close()


def test_rollout_rewards_are_penalised_by_the_models_disagreement() -> None:
    agent, _ = _coplanner(*TINY, "agent.reward_penalty=2.0")
    agent.train(30, TrainLog())  # a model fit at step 20, then UP-MPC rollouts
    buf = agent.model_buffer
    assert agent.model.fitted and buf.size == 50
    obs, nxt = (torch.as_tensor(x[: buf.size]) for x in (buf.obs, buf.next_obs))
    action = agent._unscale(torch.as_tensor(buf.action[: buf.size]))
    provider = agent.reward_fn(obs, action, nxt).numpy()
    u = agent.uncertainty(obs, action).numpy()
    assert (u > 0).all()  # a fitted ensemble disagrees somewhat everywhere
    np.testing.assert_allclose(buf.reward[: buf.size], provider - 2.0 * u, rtol=1e-5, atol=1e-5)
    # members that agree: no penalty
    _hand_built(agent)
    zero = torch.zeros(5, 1)
    state = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(agent._model_reward(state, zero, state), agent.reward_fn(state, zero, state))
    torch.testing.assert_close(
        agent._model_reward(state, zero + 1.0, state), agent.reward_fn(state, zero + 1.0, state) - 2.0 * 1.0
    )
    agent.close()


def test_the_authors_default_stores_the_providers_reward() -> None:
    agent, _ = _coplanner(*TINY)
    assert agent.reward_penalty == 0.0 and (agent.conservative_rate, agent.optimistic_rate) == (2.0, 1.0)
    log = TrainLog()
    agent.train(30, log)
    buf = agent.model_buffer
    obs, nxt = (torch.as_tensor(x[: buf.size]) for x in (buf.obs, buf.next_obs))
    action = agent._unscale(torch.as_tensor(buf.action[: buf.size]))
    np.testing.assert_allclose(buf.reward[: buf.size], agent.reward_fn(obs, action, nxt).numpy(), rtol=1e-5, atol=1e-5)
    assert any(row.get("model_rollout_plan_uncertainty", 0.0) > 0 for row in log.rows)
    agent.close()


def test_a_resumed_coplanner_continues_exactly_as_the_uninterrupted_one(tmp_path: Path) -> None:
    agent, venv = _coplanner(*TINY)
    agent.train(35, TrainLog())
    agent.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "coplanner.pt").exists() and not (tmp_path / "ckpt" / "mbpo.pt").exists()
    fresh, fresh_venv = _coplanner(*TINY, seed=5)
    fresh.load(tmp_path / "ckpt")
    assert fresh.num_steps == 35
    info = fresh.describe()  # summary.json's agent_info: the planner's settings as run
    assert (info["conservative_rate"], info["optimistic_rate"], info["plan_horizon"]) == (2.0, 1.0, fresh.plan_horizon)
    for a, v in ((agent, venv), (fresh, fresh_venv)):  # both start a new episode from the same state
        v.seed(11)
        a._obs = None
        a.train(50, TrainLog())  # planned env actions, a model fit, planned rollouts and SAC updates after the resume
    np.testing.assert_array_equal(agent.real.actions[:50], fresh.real.actions[:50])
    np.testing.assert_array_equal(agent.model_buffer.arrays()["action"], fresh.model_buffer.arrays()["action"])
    for x, y in zip(agent.sac.policy.state_dict().values(), fresh.sac.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y)
    agent.close()
    fresh.close()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["agent.conservative_rate=-1"], r"agent\.conservative_rate=-1 must be >= 0"),
        (["agent.optimistic_rate=-0.5"], r"agent\.optimistic_rate=-0\.5 must be >= 0"),
        (["agent.reward_penalty=-1"], r"agent\.reward_penalty=-1 must be >= 0"),
        (["agent.plan_horizon=0"], r"agent\.plan_horizon=0 must be a positive integer"),
        (["agent.plan_candidates=-2"], r"agent\.plan_candidates=-2 must be a positive integer"),
        (["agent.plan_discount=0"], r"agent\.plan_discount=0 must be in \(0, 1\]"),
        (["agent.utd=0"], r"agent\.utd=0 must be a positive integer"),  # MBPO's own checks still apply
    ],
)
def test_coplanner_refuses_a_bad_config(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _coplanner(*TINY, *overrides)


def test_coplanner_refuses_through_the_runner_with_exit_2(run_cli: Any, tmp_path: Path) -> None:
    """One line, exit 2, no run directory (one subprocess; the other refusals are checked in-process above)."""
    run = tmp_path / "run"
    res = run_cli("run.py", ["agent=coplanner", "env=pendulum", "agent.plan_horizon=0", f"hydra.run.dir={run}"])
    message = "agent.plan_horizon=0 must be a positive integer"
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) <= 2, res.stderr
    assert not run.exists()


def test_coplanner_names_itself_in_refusals() -> None:
    cfg = check_composes(expand_shorthands(["env=cartpole", "agent=coplanner"]))
    env_cfg = config_dict(cfg.env)
    venv = build_envs(env_cfg, 1, 0, build_reward(cfg.reward))
    with pytest.raises(ConfigError, match=r"COPlanner.*Box|Box.*COPlanner"):
        check_agent(cfg.agent, venv.action_space, env_card(env_cfg), has_dataset=False)
    venv.close()


def test_tuned_pendulum_is_mbpos_plus_the_planner() -> None:
    cop = check_composes(expand_shorthands(["env=pendulum", "agent=coplanner"])).agent
    mbpo = check_composes(expand_shorthands(["env=pendulum", "agent=mbpo"])).agent
    planner = {"name", "_target_", "plan_horizon", "plan_candidates", "conservative_rate", "optimistic_rate",
               "plan_discount", "reward_penalty"}  # fmt: skip
    assert {k: v for k, v in cop.items() if k not in planner} == {
        k: v for k, v in mbpo.items() if k != "name" and k != "_target_"
    }
    assert cop.hidden == [64, 64, 64] and cop.plan_horizon == 5
