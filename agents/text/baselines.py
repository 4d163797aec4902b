"""The offline baselines of A-LoL's comparison: NLL, weighted BC, DPO and PRO, on the same text data.

All learn from the records of :mod:`agents.text.data` labelled with the run's reward ``R`` (the proxy),
and use sequence log-probs ``log pi(y|x) = sum_t log pi(y_t | x, y_<t)`` (:mod:`agents.text.policy`).

* ``agent=nll``: supervised fine-tuning on every response, ``L = -mean_i log pi_theta(y_i|x_i)``.
* ``agent=wbc``: reward-weighted behaviour cloning, ``L = -mean_i w_i log pi_theta(y_i|x_i)`` with the
  reward min-max scaled over the data, ``w = (R - min R) / (max R - min R)`` in ``[0, 1]`` (a negative
  weight on a log-likelihood is unbounded below).
* ``agent=dpo``: Direct Preference Optimization (Rafailov et al., NeurIPS 2023). Per training prompt one
  pair: chosen = the response with the highest reward, rejected = the lowest (prompts whose responses tie
  are skipped);
  ``L = -log sigmoid(beta * [(log pi_theta(y_w|x) - log pi_ref(y_w|x)) - (log pi_theta(y_l|x) - log pi_ref(y_l|x))])``,
  ``beta = 0.1``.
* ``agent=pro``: Preference Ranking Optimization (Song et al., AAAI 2024). Per prompt its ``n`` responses
  ranked by reward, ``y^1 > ... > y^n``; scores are length-normalised log-probs
  ``s^i = log pi_theta(y^i|x) / |y^i|``; with reward-gap temperatures ``1 / T_k^i = R^k - R^i`` (``i > k``)
  and ``1 / T_k^k = max_{i > k} (R^k - R^i)``,

      ``L_PRO = -sum_{k=1}^{n-1} log [ exp(s^k / T_k^k) / sum_{i >= k} exp(s^i / T_k^i) ]``,

  plus its SFT term on the best response, ``L = L_PRO + sft_weight * (-s^1)``.

Each loss is a pure function (:func:`nll_loss`, :func:`wbc_loss`, :func:`dpo_loss`, :func:`pro_loss`),
tested against hand-computed values.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch.nn import functional as F
from typing_extensions import override

from agents.text.base import TextAgent
from envs.errors import ConfigError


def nll_loss(logp: torch.Tensor) -> torch.Tensor:
    """``-mean(logp)`` of ``(B,)`` sequence log-probs."""
    return -logp.mean()


def wbc_loss(weight: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """``-mean(w * logp)`` for ``(B,)`` weights and sequence log-probs."""
    return -(weight * logp).mean()


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, chosen_ref: torch.Tensor, rejected_ref: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's loss and its implicit reward margin.

    Args:
        chosen: ``(B,)`` sequence log-probs of the chosen responses under the policy.
        rejected: ``(B,)`` of the rejected ones under the policy.
        chosen_ref: ``(B,)`` of the chosen ones under ``pi_ref``.
        rejected_ref: ``(B,)`` of the rejected ones under ``pi_ref``.
        beta: Inverse temperature.

    Returns:
        ``(loss, margins (B,))`` with ``margins = beta * ((chosen - chosen_ref) - (rejected - rejected_ref))``
        and ``loss = -mean(log sigmoid(margins))``.
    """
    margins = beta * ((chosen - chosen_ref.detach()) - (rejected - rejected_ref.detach()))
    return -F.logsigmoid(margins).mean(), margins.detach()


def pro_loss(scores: torch.Tensor, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """PRO's ranking loss (module docstring), averaged over the batch.

    Args:
        scores: ``(B, n)`` length-normalised log-probs, each row sorted by reward, best first.
        rewards: ``(B, n)`` the rewards in the same order (non-increasing along a row).
        valid: ``(B, n)`` bool, False for padding (at the end of a row).

    Returns:
        ``sum_k -log softmax_{i >= k}(s^i * tau_k^i)[k]`` averaged over rows, with ``tau_k^i = R^k - R^i``
        for ``i > k`` and ``tau_k^k = max_{i > k} tau_k^i``.
    """
    b, n = scores.shape
    total = scores.new_zeros(b)
    for k in range(n - 1):
        later = valid[:, k + 1 :] & valid[:, k : k + 1]
        if not bool(later.any()):
            break
        gaps = (rewards[:, k : k + 1] - rewards[:, k + 1 :]).clamp(min=0.0)
        top = torch.where(later, gaps, 0.0).max(-1).values
        logits = torch.cat([(scores[:, k] * top).unsqueeze(-1), scores[:, k + 1 :] * gaps], dim=-1)
        logits = logits.masked_fill(~torch.cat([valid[:, k : k + 1], later], -1), float("-inf"))
        term = -torch.log_softmax(logits, -1)[:, 0]
        total = total + torch.where(later.any(-1), term, 0.0)
    return total.mean()


class NLL(TextAgent):
    """``agent=nll``: supervised fine-tuning on every response of the data (module docstring)."""

    name = "nll"

    @override
    def prepare(self) -> dict[str, torch.Tensor]:
        return {"probs": torch.ones(len(self.records))}

    @override
    def loss(self, units: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, seq = self.policy.logprobs(self.items(units.tolist()))
        return nll_loss(seq), {"logp": seq.mean().detach()}


class WBC(TextAgent):
    """``agent=wbc``: reward-weighted behaviour cloning with min-max scaled rewards (module docstring)."""

    name = "wbc"

    @override
    def prepare(self) -> dict[str, torch.Tensor]:
        r = self.rewards.float()
        spread = float(r.max() - r.min())
        w = (r - r.min()) / spread if spread > 0 else torch.ones_like(r)
        return {"probs": torch.ones(len(r)), "weight": w}

    @override
    def loss(self, units: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, seq = self.policy.logprobs(self.items(units.tolist()))
        w = self.prepared["weight"][units].to(self.device)
        return wbc_loss(w, seq), {"weight": w.mean(), "logp": seq.mean().detach()}


def _groups(records: list[dict[str, Any]], rewards: torch.Tensor) -> list[list[int]]:
    """Item indices per prompt, sorted by reward (best first)."""
    by: dict[int, list[int]] = {}
    for n, r in enumerate(records):
        by.setdefault(int(r["prompt_index"]), []).append(n)
    return [sorted(v, key=lambda i: -float(rewards[i])) for _, v in sorted(by.items())]


class DPO(TextAgent):
    """``agent=dpo`` (module docstring).

    Args:
        beta: DPO's inverse temperature.
    """

    name = "dpo"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        env: Any,
        reward: Any,
        seed: int = 0,
        device: str = "cpu",
        beta: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if float(beta) <= 0:
            raise ConfigError(f"agent.beta={beta!r} must be > 0")
        super().__init__(observation_space, action_space, env, reward, seed, device, **kwargs)
        self.beta = float(beta)

    @override
    def prepare(self) -> dict[str, torch.Tensor]:
        pairs = [
            (g[0], g[-1])
            for g in _groups(self.records, self.rewards)
            if float(self.rewards[g[0]]) > float(self.rewards[g[-1]])
        ]
        if not pairs:
            raise ConfigError("agent=dpo: no prompt has two responses with different rewards")
        self.data_info["pairs"] = len(pairs)
        return {"probs": torch.ones(len(pairs)), "pairs": torch.tensor(pairs, dtype=torch.long)}

    @override
    def loss(self, units: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pairs = self.prepared["pairs"][units]
        index = pairs[:, 0].tolist() + pairs[:, 1].tolist()
        batch = self.items(index)
        _, seq = self.policy.logprobs(batch)
        _, ref = self.reference_logprobs(index, batch)
        n = len(pairs)
        loss, margins = dpo_loss(seq[:n], seq[n:], ref[:n], ref[n:], self.beta)
        return loss, {"margin": margins.mean(), "accuracy": (margins > 0).float().mean()}


class PRO(TextAgent):
    """``agent=pro`` (module docstring).

    Args:
        sft_weight: Weight of the SFT term on the best response.
    """

    name = "pro"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        env: Any,
        reward: Any,
        seed: int = 0,
        device: str = "cpu",
        sft_weight: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, env, reward, seed, device, **kwargs)
        self.sft_weight = float(sft_weight)

    @override
    def prepare(self) -> dict[str, torch.Tensor]:
        groups = [g for g in _groups(self.records, self.rewards) if len(g) >= 2]
        if not groups:
            raise ConfigError("agent=pro: no prompt has two or more responses to rank")
        width = max(len(g) for g in groups)
        table = torch.full((len(groups), width), -1, dtype=torch.long)
        for i, g in enumerate(groups):
            table[i, : len(g)] = torch.tensor(g)
        return {"probs": torch.ones(len(groups)), "groups": table}

    @override
    def loss(self, units: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        table = self.prepared["groups"][units]
        valid = table >= 0
        flat = table[valid].tolist()
        batch = self.items(flat)
        _, seq = self.policy.logprobs(batch)
        lengths = batch.response.sum(-1).clamp(min=1).float()
        scores = torch.zeros(table.shape, device=self.device)
        scores[valid.to(self.device)] = seq / lengths
        rewards = torch.zeros(table.shape)
        rewards[valid] = self.rewards[table[valid]].float()
        v = valid.to(self.device)
        ranking = pro_loss(scores, rewards.to(self.device), v)
        sft = -scores[:, 0].mean()
        return ranking + self.sft_weight * sft, {"loss_ranking": ranking.detach(), "loss_sft": sft.detach()}
