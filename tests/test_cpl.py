"""Offline preferences: a preference dataset cut from a mixed dataset; CPL and P-IQL learn from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.offline.bc import BC
from agents.offline.cpl import CPL, biased_bce, padded_scores
from agents.offline.iql import IQL
from envs.errors import ConfigError
from experiments import prefs
from experiments.evaluation import evaluate
from rewards.env import EnvReward
from rewards.preference.model import MlpRewardModel
from rewards.preference.provider import PreferenceReward
from rewards.preference.segments import LEFT, PreferencePairs
from tests.helpers import offline_agent, reward_venv
from tests.test_offline import _mixed_cartpole, _Quiet, root  # noqa: F401  (fixture)


def test_biased_bce_is_cpl_loss() -> None:
    import torch

    a, b = torch.tensor([2.0]), torch.tensor([1.0])
    expected = -torch.nn.functional.logsigmoid(a - 0.5 * b)
    assert torch.allclose(biased_bce(a, b, torch.tensor([1.0]), 0.5), expected)
    # bias 1: the plain Bradley-Terry loss on advantages; equal labels: the mean of both orderings
    both = 0.5 * (-torch.nn.functional.logsigmoid(a - b) - torch.nn.functional.logsigmoid(b - a))
    assert torch.allclose(biased_bce(a, b, torch.tensor([0.5]), 1.0), both)


def test_padding_after_a_terminal_gives_no_segment_a_head_start() -> None:
    """A policy that scores every step alike scores a segment cut short by a terminal like a full one."""
    import torch

    lp = torch.full((2, 6), -1.3)  # log pi of every real step
    full = torch.ones(2, 6)
    short = torch.tensor([[1.0, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]])  # terminal after 2 and after 5 steps
    left, right = padded_scores(lp, lp, full, short)
    torch.testing.assert_close(left, right)  # padding counted as 0 would put the short segment 5.2 ahead
    lp_right = lp.clone().requires_grad_(True)
    padded_scores(lp, lp_right, full, short)[1].sum().backward()
    torch.testing.assert_close(lp_right.grad, short)  # only real steps carry gradient


def test_default_continuous_actor_has_a_fixed_variance() -> None:
    """The reference's actor: ``log pi(a|s) = -|tanh f(s) - a|^2``, no learned sigma to change alpha's scale."""
    import gymnasium as gym
    import torch

    agent = CPL(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (2,)), hidden=(8,))
    names = [n for n, _ in agent.actor.named_parameters()]
    assert all(n.startswith("net.") for n in names), names  # weights only
    agent.actor.eval()  # (no dropout)
    obs, act = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    expected = -(torch.tanh(agent.actor.net(obs)) - act).pow(2).sum(-1)
    torch.testing.assert_close(agent.actor.log_prob(obs, act), expected)
    w = agent.actor.net[0].weight.detach()  # (8, 3): orthogonal columns (the reference's ortho_init)
    torch.testing.assert_close(w.T @ w, torch.eye(3), atol=1e-5, rtol=0)


def test_agent_cpl_has_the_reference_defaults() -> None:
    """``agent=cpl`` as composed for a run: the values of the reference's configs/mw_state_dense/cpl.yaml
    (github.com/jhejna/cpl): alpha 0.1, contrastive bias 0.5, no BC term, 200k BC steps and a 10k-step warm-up
    of 500k, Adam 1e-4, batch of 96 pairs, a tanh actor of 512x512 with dropout 0.25 and orthogonal init."""
    import gymnasium as gym
    import torch

    from agents.offline.nets import DeterministicPolicy, Dropout
    from experiments.cli import check_composes

    node = check_composes(["env=hopper", "agent=cpl"]).agent
    expected = {"alpha": 0.1, "bias": 0.5, "bc_weight": 0.0, "bc_steps": None, "bc_fraction": 0.4, "warmup_fraction": 0.02,
                "learning_rate": 1e-4, "dropout": 0.25, "actor": "deterministic", "ortho_init": True, "batch_size": 96}  # fmt: skip
    assert {k: node[k] for k in expected} == expected and list(node.hidden) == [512, 512]
    kwargs = {k: v for k, v in node.items() if k not in ("name", "_target_", "preferences")}
    agent = CPL(gym.spaces.Box(-1, 1, (11,)), gym.spaces.Box(-1, 1, (3,)), **kwargs)
    assert isinstance(agent.actor, DeterministicPolicy) and agent.batch_size == 96
    assert [m.p for m in agent.actor.modules() if isinstance(m, Dropout)] == [0.25, 0.25]
    assert [m.out_features for m in agent.actor.modules() if isinstance(m, torch.nn.Linear)] == [512, 512, 3]
    agent.budget = 500_000  # the reference's run: BC for 200k steps, then a 10k-step linear warm-up from lr / 10k
    assert agent.bc_steps == 200_000
    assert [agent.learning_rate_at(s) for s in (199_999, 200_000, 204_999, 209_999, 300_000)] == pytest.approx(
        [1e-4, 1e-8, 0.5e-4, 1e-4, 1e-4]
    )


def test_bc_phase_then_a_fresh_optimiser_and_a_warm_up(root: Path) -> None:  # noqa: F811
    """The reference: BC for the first 40% of the steps, then Adam restarted and the rate warmed up linearly."""
    _mixed_cartpole(root)
    prefs.main(["dataset=local/cartpole/mixed-v0", "pairs=40", "segment=5", "name=default"])
    env = reward_venv("cartpole", EnvReward())
    agent = offline_agent(CPL, env, dataset="local/cartpole/mixed-v0", hidden=(8,), batch_size=4, log_every=1)
    seen: dict[int, tuple[float, float, float]] = {}

    class Record(_Quiet):
        def on_log(self, n: int, values: object) -> None:
            opt = agent.optimizers["actor"]
            adam_steps = float(next(iter(opt.state.values()))["step"])
            seen[n] = (adam_steps, float(values["lr_actor"]), float(values["loss_cpl"]))  # type: ignore[index]

    agent.train(100, Record())  # 40 steps of BC, 2 of warm-up
    assert [seen[n][0] for n in (1, 40, 41, 42, 100)] == [1, 40, 1, 2, 60]  # Adam's moments restart at the switch
    assert [seen[n][1] for n in (40, 41, 42, 43)] == pytest.approx([1e-4, 0.5e-4, 1e-4, 1e-4])
    assert all(seen[n][2] == 0 for n in range(1, 41)) and all(seen[n][2] > 0 for n in range(41, 101))
    env.close()


@pytest.mark.slow  # about 75 CPU-s (three learners of 3000 steps); fast CPL checks: tests/test_offline_learning.py
def test_prefs_then_cpl_and_p_iql_beat_bc_on_mixed_data(root: Path) -> None:  # noqa: F811
    _mixed_cartpole(root)
    out = prefs.main(["dataset=local/cartpole/mixed-v0", "pairs=600", "segment=20", "name=oracle"])
    pairs = PreferencePairs.load(out["path"])
    assert len(pairs) == 600 and out["labels"]["skip"] == 0 and out["labels"]["equal"] > 0  # ties: equal
    # the teacher prefers the segment that stays alive longer
    alive = pairs.left.valid().sum(1) - pairs.right.valid().sum(1)
    assert np.all((pairs.labels == LEFT)[alive > 0]) and np.all((pairs.labels != LEFT)[alive < 0])
    with pytest.raises(ConfigError, match="already exists"):
        prefs.main(["dataset=local/cartpole/mixed-v0", "name=oracle"])

    scores = {}
    for name, cls, extra in (
        ("bc", BC, {"batch_size": 256}),
        ("cpl", CPL, {"preferences": "oracle"}),  # the reference's defaults (networks 64x64, as all three here)
        ("p-iql", IQL, {"batch_size": 256}),
    ):
        if name == "p-iql":  # the two-step baseline: a reward model from the same pairs, then IQL on its labels
            reward = PreferenceReward(pairs=out["path"], model=MlpRewardModel(members=3), epochs=30)
            env = reward_venv("cartpole", reward)
        else:
            env = reward_venv("cartpole", EnvReward())
        agent = offline_agent(cls, env, seed=0, dataset="local/cartpole/mixed-v0", hidden=(64, 64), **extra)
        agent.train(3000, _Quiet())
        eval_env = reward_venv("cartpole", EnvReward(), n=4)
        scores[name] = np.mean([e.true_return for e in evaluate(agent, eval_env, 8, seed=123)])
        eval_env.close()
        env.close()
    print(scores)
    assert scores["cpl"] >= 400 and scores["cpl"] > scores["bc"] + 100, scores
    assert scores["p-iql"] > scores["bc"] + 100, scores


def test_cpl_without_the_preference_file_lists_what_exists(root: Path) -> None:  # noqa: F811
    _mixed_cartpole(root)
    env = reward_venv("cartpole", EnvReward())
    with pytest.raises(ConfigError, match=r"no preference file .*this dataset has: none .*prefs\.py"):
        offline_agent(CPL, env, dataset="local/cartpole/mixed-v0", preferences="nope")
    env.close()
