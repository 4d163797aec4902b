"""Advantage-Leftover-Lunch RL (A-LoL; Baheti, Lu, Brahman, Le Bras, Sap & Riedl, ICLR 2024) and variants.

A-LoL treats a whole response ``y`` to a prompt ``x`` as one action and learns offline from fixed data
``D`` (human replies, reference samples: :mod:`agents.text.data`). The offline policy gradient with the
reference policy ``pi_ref`` (the initial LM) as behaviour policy is

    grad J(theta) = E_{x ~ D, y ~ D(.|x)} [ A_ref(x, y) * r(theta, ref) * grad log pi_theta(y|x) ],
    r(theta, ref) = pi_theta(y|x) / pi_ref(y|x),
    A_ref(x, y)   = R(x, y) - V_ref(x).

Steps, as in the paper (Sec. 2 and Alg. 1) and the authors' code (github.com/abaheti95/LoL-RL):

1. Value: a head ``V`` (an MLP) on the frozen ``pi_ref``'s last-layer hidden state at the prompt's last
   token, fitted by MSE to the rewards of ``pi_ref``'s own samples (``source: reference`` items):
   ``L_V = mean_{(x,y) ~ pi_ref} (V(x) - R(x, y))^2``.
2. Advantages ``A_i = R_i - V(x_i)`` for every data item, computed **once**; items with ``A_i <= 0``
   are dropped, the rest sampled with probability ``A_i / sum_j A_j`` (priority sampling).
3. Per sampled item, with ``rho = exp(log pi_theta(y|x) - log pi_ref(y|x))`` **detached** and
   ``eps = 0.9`` (the authors' clip range):

   ``L = -A * clip(rho, 1 - eps, 1 + eps) * log pi_theta(y|x)``   (``log pi`` summed over response tokens)

Variants (``agent.variant``):

* ``a_lol``: as above (sequence-level ratio);
* ``a_lol_ref_free``: no ratio, ``L = -A * log pi_theta(y|x)``;
* ``a_lol_seq``: per-token ratios, ``L = -A * sum_t clip(rho_t, 1 - eps, 1 + eps) * log pi_theta(y_t | x, y_<t)``
  with ``rho_t = pi_theta(y_t|.) / pi_ref(y_t|.)`` detached;
* ``a_lol_kl``: a KL penalty instead of the ratio,
  ``L = -A * log pi_theta(y|x) + beta * (log pi_theta(y|x) - log pi_ref(y|x))`` (the sequence-level
  KL estimate on the data item; ``kl_beta``);
* ``r_lol``: the reward instead of the advantage (no value head): ``L = -R * clip(rho) * log pi_theta(y|x)``;
  items with ``R <= 0`` dropped and the rest sampled proportionally to ``R``, as A-LoL does with ``A``
  (a negative weight on a log-likelihood is unbounded below).

The losses are pure functions of log-probs (:func:`alol_loss`, :func:`alol_seq_loss`, :func:`alol_kl_loss`),
tested against hand-computed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import torch
from torch import nn
from typing_extensions import override

from agents.text.base import TextAgent
from envs.errors import ConfigError

VARIANTS = ("a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl", "r_lol")


def clipped_ratio(logp: torch.Tensor, logp_ref: torch.Tensor, eps: float) -> torch.Tensor:
    """``clip(exp(logp - logp_ref), 1 - eps, 1 + eps)``, detached (no gradient flows through the weight)."""
    return torch.exp(logp.detach() - logp_ref.detach()).clamp(1.0 - eps, 1.0 + eps)


def alol_loss(weight: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``mean_i -w_i * clip(rho_i, 1 - eps, 1 + eps) * logp_i`` (``rho = 1`` when ``logp_ref`` is ``None``).

    Args:
        weight: ``(B,)`` advantages (or rewards for R-LoL).
        logp: ``(B,)`` sequence log-probs under the policy (with gradient).
        logp_ref: ``(B,)`` sequence log-probs under ``pi_ref``, or ``None`` (reference-free).
        eps: Clip range.
    """
    rho = torch.ones_like(logp) if logp_ref is None else clipped_ratio(logp, logp_ref, eps)
    return -(weight * rho * logp).mean()


def alol_seq_loss(
    weight: torch.Tensor, logp_tok: torch.Tensor, logp_ref_tok: torch.Tensor, mask: torch.Tensor, eps: float
) -> torch.Tensor:
    """``mean_i -w_i * sum_t m_it clip(rho_it, 1 - eps, 1 + eps) * logp_it`` (per-token ratios).

    Args:
        weight: ``(B,)``.
        logp_tok: ``(B, T)`` per-token log-probs under the policy (with gradient).
        logp_ref_tok: ``(B, T)`` per-token log-probs under ``pi_ref``.
        mask: ``(B, T)`` 1 on response tokens.
        eps: Clip range.
    """
    rho = clipped_ratio(logp_tok, logp_ref_tok, eps) * mask
    return -(weight * (rho * logp_tok).sum(-1)).mean()


def alol_kl_loss(weight: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """``mean_i [-w_i * logp_i + beta * (logp_i - logp_ref_i)]``."""
    return (-weight * logp + beta * (logp - logp_ref.detach())).mean()


class ALoL(TextAgent):
    """``agent=alol`` (module docstring; shared arguments: :class:`~agents.text.base.TextAgent`).

    Args:
        variant: One of ``a_lol``, ``a_lol_ref_free``, ``a_lol_seq``, ``a_lol_kl``, ``r_lol``.
        clip_eps: ``eps`` of the clipped importance weight.
        kl_beta: ``beta`` of ``a_lol_kl``.
        value_hidden: Hidden width of the value head.
        value_steps: Full-batch Adam steps fitting the value head.
        value_learning_rate: Its step size.
        flip_advantage: Use ``-A`` (a sanity check: learning must then fail).

    Raises:
        ConfigError: An unknown variant or a clip range outside (0, 1].
    """

    name = "alol"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        env: Any,
        reward: Any,
        seed: int = 0,
        device: str = "cpu",
        variant: str = "a_lol",
        clip_eps: float = 0.9,
        kl_beta: float = 0.1,
        value_hidden: int = 256,
        value_steps: int = 300,
        value_learning_rate: float = 1e-3,
        flip_advantage: bool = False,
        **kwargs: Any,
    ) -> None:
        check_variant(variant)
        if not 0.0 < float(clip_eps) <= 1.0:
            raise ConfigError(f"agent.clip_eps={clip_eps!r} must be in (0, 1]")
        super().__init__(observation_space, action_space, env, reward, seed, device, **kwargs)
        self.variant, self.eps, self.beta = variant, float(clip_eps), float(kl_beta)
        self.value_steps, self.value_lr = int(value_steps), float(value_learning_rate)
        self.flip = bool(flip_advantage)
        hidden = int(getattr(self.policy.lm, "config").hidden_size)  # noqa: B009  (a transformers model: typed as a Module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.value = nn.Sequential(
                nn.Linear(hidden, int(value_hidden)), nn.ReLU(), nn.Linear(int(value_hidden), 1)
            ).to(self.device)
        self.modules["value"] = self.value

    @classmethod
    @override
    def requirements(cls, config: Mapping[str, Any]) -> Any:
        check_variant(str(config.get("variant", "a_lol")))
        return super().requirements(config)

    @override
    def prepare(self) -> dict[str, torch.Tensor]:
        rewards = self.rewards.to(self.device)
        if self.variant == "r_lol":
            weight = rewards
            stats = {}
        else:
            feats = self.policy.prompt_features(self.prompt_ids)
            item_prompt = torch.tensor([int(r["prompt_index"]) for r in self.records], device=self.device)
            ref = torch.tensor([r.get("source") == "reference" for r in self.records], device=self.device)
            fit = ref if bool(ref.any()) else torch.ones_like(ref)
            mean, std = feats.mean(0), feats.std(0) + 1e-6
            x = (feats - mean) / std
            opt = torch.optim.Adam(self.value.parameters(), lr=self.value_lr)
            for _ in range(self.value_steps):
                v = self.value(x[item_prompt[fit]]).squeeze(-1)
                loss_v = torch.mean((v - rewards[fit]) ** 2)
                opt.zero_grad(set_to_none=True)
                loss_v.backward()
                opt.step()
            with torch.no_grad():
                values = self.value(x).squeeze(-1)[item_prompt]
            weight = rewards - values
            stats = {"value_mse": float(loss_v.detach()), "advantage_mean": float(weight.mean())}
        if self.flip:
            weight = -weight
        keep = weight > 0
        self.data_info.update(stats, kept_fraction=float(keep.float().mean()))
        return {"weight": weight.detach().float().cpu(), "probs": torch.where(keep, weight, 0.0).detach().float().cpu()}

    @override
    def loss(self, units: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        idx = units.tolist()
        batch = self.items(idx)
        w = self.prepared["weight"][units].to(self.device)
        tok, seq = self.policy.logprobs(batch)
        need_ref = self.variant != "a_lol_ref_free"
        tok_ref, seq_ref = self.reference_logprobs(idx, batch) if need_ref else (None, None)
        if self.variant in ("a_lol", "r_lol"):
            loss = alol_loss(w, seq, seq_ref, self.eps)
        elif self.variant == "a_lol_ref_free":
            loss = alol_loss(w, seq, None, self.eps)
        elif self.variant == "a_lol_seq":
            assert tok_ref is not None
            loss = alol_seq_loss(w, tok, tok_ref, batch.response_mask().float(), self.eps)
        else:
            assert seq_ref is not None
            loss = alol_kl_loss(w, seq, seq_ref, self.beta)
        stats = {"weight": w.mean().detach(), "logp": seq.mean().detach()}
        if seq_ref is not None:
            stats["log_ratio"] = (seq - seq_ref).mean().detach()  # log pi_theta(y|x) - log pi_ref(y|x)
        return loss, stats

    @override
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "variant": self.variant, "clip_eps": self.eps}


def check_variant(variant: str) -> None:
    """Refuse an unknown A-LoL variant.

    Raises:
        ConfigError: ``variant`` is not one of :data:`VARIANTS`.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"agent.variant={variant!r} is not one of {', '.join(VARIANTS)}")
