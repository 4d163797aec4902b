"""COPlanner: MBPO whose actions, in model rollouts and in the real env, come from UP-MPC.

Wang, Zheng, Sun, Jia, Wongkamjan, Xu & Huang, ICLR 2024, "COPlanner: Plan to Roll Out Conservatively
but to Explore Optimistically for Model-Based RL" (arXiv 2310.07220).

MBPO (:mod:`agents.model_based.mbpo`) acts with a sample of its SAC policy ``pi``, both in the model
rollouts that fill ``D_model`` and in the real env. COPlanner replaces each of those action choices by
*uncertainty-aware policy-guided MPC* (UP-MPC). From a state ``s`` (batched over all states that need an
action at once), ``K`` candidate sequences of ``H`` steps are sampled from ``pi`` through the ensemble
``p_theta``:

    a^j_0 ~ pi(. | s),  s^j_{t+1} ~ p_theta^{(m)}(. | s^j_t, a^j_t)  (m a uniformly random elite, TS1),
    a^j_{t+1} ~ pi(. | s^j_{t+1}),                                     j = 1..K,  t = 0..H-1,

and scored with the run's reward ``r`` (:class:`~agents.model_based.planning.PlanningReward`) and the
ensemble's disagreement ``u``:

    J^j = sum_{t<H} gamma^t (r(s^j_t, a^j_t, s^j_{t+1}) + alpha u(s^j_t, a^j_t)) alive^j_t,
    u(s, a) = mean_d std_e mu_e(s, a)_d,

``mu_e`` the mean next state of elite ``e`` (std over the elites, population form; mean over the state's
``d`` dimensions), ``alive`` zero after the env card's termination function fires. The first action
of the best sequence, ``a^{j*}_0`` with ``j* = argmax_j J^j``, is taken. The sign of ``alpha`` is the
method:

* in model rollouts ``alpha = -alpha_c`` (``conservative_rate``): branches steer away from where the
  members disagree, so ``D_model`` holds fewer samples with large model error;
* in the real env ``alpha = +alpha_o`` (``optimistic_rate``): the agent goes where the model is unsure,
  and the data collected there reduce the model's error where it matters.

Evaluation (:meth:`act`) is SAC's own action, as in the authors' code (its ``evaluate`` calls
``agent.act``, not ``mpc_act``).

Optionally (``reward_penalty`` = ``lambda`` > 0) the reward stored for an imagined transition is
``r - lambda u(s, a)``, MOPO's penalty (Yu et al., 2020). The authors' code does *not* do this
(``rollout_model_and_populate_sac_buffer`` stores the model's reward as is; the conservatism lies in the
choice of actions), so the default is ``0``.

Sources (the authors' code, github.com/si0wang/COPlanner, ``DMC-MBPO-COPlanner``):
``mbrl/third_party/pytorch_sac_pranz24/sac.py:mpc_select_action`` (the K policy sequences, the
discounted sums, ``- conservative_rate`` in rollouts and ``+ optimistic_rate`` in the env),
``mbrl/examples/conf/algorithm/mbpo.yaml`` (``ntraj`` 5, ``planning_horizon`` 5, ``reward_gamma`` =
``uncertainty_gamma`` = 0.97, ``conservative_rate`` 2, ``optimistic_rate`` 1), and
``mbrl/models/model.py:sample_1d_ensemble`` (their ``u``: the std over *all* members of one *sample*
per member, averaged over the output dimensions, reward included). Here ``u`` is the std of the
elites' *means* of the next state: the model disagreement the paper describes (epistemic only, zero
when the members agree; the aleatoric noise of a sample is left out), over the members that predict.

Randomness: the policy samples on the agent's torch RNG state and the model noise on its generator
(both in MBPO's checkpoints); COPlanner adds no state, so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from typing_extensions import override

from agents.base import Requirements
from agents.model_based.mbpo import HINT, MBPO
from envs.cards import EnvCard
from envs.errors import ConfigError
from rewards.base import RewardProvider


def disagreement(means: torch.Tensor) -> torch.Tensor:
    """Model disagreement: ``(E, n, obs_dim)`` members' mean next states -> ``(n,)`` std over members, mean over dims."""
    return means.std(dim=0, correction=0).mean(dim=-1)


class COPlanner(MBPO):
    """``agent=coplanner`` (module docstring): MBPO with UP-MPC in model rollouts and in the real env.

    Args:
        env: As :class:`~agents.model_based.mbpo.MBPO`.
        reward: As MBPO.
        card: As MBPO.
        seed: As MBPO.
        device: As MBPO.
        plan_horizon: ``H``, model steps per candidate sequence (authors: 5).
        plan_candidates: ``K``, candidate sequences per action (authors: 5).
        conservative_rate: ``alpha_c`` >= 0, the weight of ``-u`` when choosing rollout actions (authors: 2).
        optimistic_rate: ``alpha_o`` >= 0, the weight of ``+u`` when choosing real actions (authors: 1).
        plan_discount: ``gamma`` in (0, 1] of the planned sums (authors: 0.97).
        reward_penalty: ``lambda`` >= 0: imagined rewards stored as ``r - lambda u`` (authors: none, 0).
        **mbpo: MBPO's other settings (``utd``, ``rollout_batch_size``, ``hidden``, ...).

    Raises:
        ConfigError: A bad setting (as MBPO's, or a rate < 0, ``H`` or ``K`` <= 0, ``gamma`` outside (0, 1]).
    """

    who = "agent=coplanner"
    checkpoint_name = "coplanner"

    def __init__(
        self,
        env: Any,
        reward: RewardProvider,
        card: EnvCard | None = None,
        seed: int = 0,
        device: str = "cpu",
        plan_horizon: int = 5,
        plan_candidates: int = 5,
        conservative_rate: float = 2.0,
        optimistic_rate: float = 1.0,
        plan_discount: float = 0.97,
        reward_penalty: float = 0.0,
        **mbpo: Any,
    ) -> None:
        for name, count in (("plan_horizon", plan_horizon), ("plan_candidates", plan_candidates)):
            if int(count) <= 0 or int(count) != count:
                raise ConfigError(f"agent.{name}={count} must be a positive integer")
        for name, rate in (("conservative_rate", conservative_rate), ("optimistic_rate", optimistic_rate)):
            if not float(rate) >= 0.0:
                raise ConfigError(
                    f"agent.{name}={rate} must be >= 0 (the sign is the method's: - in rollouts, + in the env)"
                )
        if not float(reward_penalty) >= 0.0:
            raise ConfigError(
                f"agent.reward_penalty={reward_penalty} must be >= 0 (imagined rewards are stored as r - reward_penalty * u)"
            )
        if not 0.0 < float(plan_discount) <= 1.0:
            raise ConfigError(f"agent.plan_discount={plan_discount} must be in (0, 1]")
        super().__init__(env, reward, card, seed, device, **mbpo)
        self.plan_horizon, self.plan_candidates = int(plan_horizon), int(plan_candidates)
        self.conservative_rate, self.optimistic_rate = float(conservative_rate), float(optimistic_rate)
        self.plan_discount, self.reward_penalty = float(plan_discount), float(reward_penalty)
        self._plan_u: list[float] = []  # disagreement of the chosen rollout plans since the last report

    @classmethod
    @override
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """MBPO's (Box actions, ``learning_starts`` random steps first), named COPlanner."""
        reqs = super().requirements(config)
        return dataclasses.replace(reqs, label="COPlanner", hint=HINT.replace("MBPO", "COPlanner"))

    # --- UP-MPC -------------------------------------------------------------------------------------

    def _policy(self, state: torch.Tensor) -> torch.Tensor:
        """A sample of ``pi`` at ``state`` ``(n, obs_dim)``: ``(n, action_dim)`` scaled to [-1, 1] (MBPO's rollout action)."""
        return super()._rollout_action(state)

    def _predict_step(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One TS1 model step and its disagreement.

        Args:
            state: ``(n, obs_dim)``.
            action: ``(n, action_dim)`` in the env's bounds.

        Returns:
            ``(n, obs_dim)`` next states (a sample of a uniformly random elite) and ``(n,)`` disagreement ``u``.
        """
        n, elites = len(state), len(self.model.elites)
        mean, logvar = self._elite_predict(state, action)
        noise = torch.randn(mean.shape, generator=self.generator, device=mean.device, dtype=mean.dtype)
        pick = torch.randint(elites, (n,), generator=self.generator, device=self.device)
        rows = torch.arange(n, device=self.device)
        return (mean + torch.exp(0.5 * logvar) * noise)[pick, rows], disagreement(mean)

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        """UP-MPC (module docstring) from each of ``n`` states with uncertainty weight ``alpha`` = ``rate``.

        Args:
            obs: ``(n, obs_dim)`` start states.
            rate: ``alpha``: ``-conservative_rate`` in rollouts, ``+optimistic_rate`` in the env.

        Returns:
            ``(n, action_dim)`` first actions of the best sequences, scaled to [-1, 1], and ``(n,)`` the
            discounted disagreement summed along those sequences.
        """
        n, k = len(obs), self.plan_candidates
        state = obs.repeat(k, 1)  # (k n, obs_dim): candidate j from start i at row j n + i
        score = torch.zeros(k * n, device=obs.device)
        risk = torch.zeros(k * n, device=obs.device)
        alive = torch.ones(k * n, dtype=torch.bool, device=obs.device)
        first: torch.Tensor | None = None
        for t in range(self.plan_horizon):
            scaled = self._policy(state)
            first = scaled if first is None else first
            action = self._unscale(scaled)
            nxt, u = self._predict_step(state, action)
            r = self.reward_fn(state, action, nxt)
            weight = self.plan_discount**t * alive.float()
            score += weight * (r + rate * u)
            risk += weight * u
            alive &= ~self.termination_fn(state, action, nxt).to(torch.bool).reshape(-1)
            state = nxt
        assert first is not None
        score = torch.where(torch.isfinite(score), score, torch.full_like(score, -torch.inf))
        best = score.view(k, n).argmax(dim=0)  # (n,)
        rows = torch.arange(n, device=obs.device)
        return first.view(k, n, -1)[best, rows], risk.view(k, n)[best, rows]

    # --- MBPO's hooks -------------------------------------------------------------------------------

    @override
    def _rollout_action(self, state: torch.Tensor) -> torch.Tensor:
        """Conservative: UP-MPC with ``alpha = -conservative_rate``."""
        scaled, risk = self.plan(state, -self.conservative_rate)
        self._plan_u.append(float(risk.mean()))
        return scaled

    @override
    def _model_reward(self, state: torch.Tensor, action: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """The provider's reward, less ``reward_penalty * u(state, action)`` when that is > 0."""
        r = self.reward_fn(state, action, next_state)
        if self.reward_penalty == 0.0:
            return r
        return r - self.reward_penalty * self.uncertainty(state, action)

    @override
    def _collect_action(self, obs: np.ndarray) -> np.ndarray:
        """Optimistic: UP-MPC with ``alpha = +optimistic_rate`` (SAC's sample while no model is fitted)."""
        if not self.model.fitted:
            return super()._collect_action(obs)
        n = len(obs)
        state = torch.as_tensor(np.asarray(obs, np.float32).reshape(n, -1), device=self.device)
        scaled, _ = self.plan(state, self.optimistic_rate)
        actions = self.sac.policy.unscale_action(scaled.cpu().numpy())
        space = self.env.action_space
        return (
            np.clip(actions, space.low.reshape(-1), space.high.reshape(-1)).reshape(n, *space.shape).astype(space.dtype)
        )

    # --- the rest -----------------------------------------------------------------------------------

    @torch.no_grad()
    def uncertainty(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``u``: ``(n, obs_dim), (n, action_dim)`` (env's bounds) -> ``(n,)`` disagreement of the elites' means."""
        return disagreement(self._elite_predict(state, action)[0])

    def _elite_predict(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every elite's ``(E, n, obs_dim)`` mean next state and log-variance at ``(n, obs_dim), (n, action_dim)``."""
        elites = len(self.model.elites)
        return self.model.predict(state.expand(elites, -1, -1), action.expand(elites, -1, -1), self.model.elites)

    @override
    def rollout(self) -> dict[str, float]:
        """MBPO's rollouts with UP-MPC actions; adds ``model_rollout_plan_uncertainty`` (mean planned ``u``)."""
        self._plan_u = []
        stats = super().rollout()
        return stats | {"model_rollout_plan_uncertainty": float(np.mean(self._plan_u)) if self._plan_u else 0.0}

    @override
    def relabel(self, reward: RewardProvider, chunk: int = 65536) -> None:
        """MBPO's relabelling, then the penalty again on the model rows (``u`` of the current model)."""
        super().relabel(reward, chunk)
        if self.reward_penalty == 0.0:
            return
        m = self.model_buffer
        for start in range(0, m.size, chunk):
            part = slice(start, min(start + chunk, m.size))
            obs = torch.as_tensor(m.obs[part], device=self.device)
            action = self._unscale(torch.as_tensor(m.action[part], device=self.device))
            m.reward[part] -= self.reward_penalty * self.uncertainty(obs, action).cpu().numpy()

    @override
    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "plan_horizon": self.plan_horizon,
            "plan_candidates": self.plan_candidates,
            "conservative_rate": self.conservative_rate,
            "optimistic_rate": self.optimistic_rate,
            "plan_discount": self.plan_discount,
            "reward_penalty": self.reward_penalty,
        }
