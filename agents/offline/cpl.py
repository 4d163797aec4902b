"""Contrastive Preference Learning: a policy learned from segment preferences directly, no reward model, no RL.

Hejna et al. 2023, "Contrastive Preference Learning: Learning from Human Feedback without RL".

Under the regret-based model of preferences with maximum-entropy optimal policies, the optimal
advantage is ``A*(s, a) = α log π*(a|s)``, so the probability that segment σ⁺ is preferred to σ⁻ is a
softmax over the segments' summed ``α log π``. CPL fits π by the contrastive loss

    L = -log σ( Σ_t α log π(a⁺_t|s⁺_t) - λ Σ_t α log π(a⁻_t|s⁻_t) )

with the *conservative bias* λ ∈ (0, 1] (λ < 1 keeps the loss from pushing down the likelihood of
the dispreferred segment without bound; the paper uses 0.5). Equal labels train toward 0.5 on
both orderings, skipped pairs are left out. As in the paper's CPL (BC) variant, the policy is first
trained by behaviour cloning on the segments for ``bc_steps`` (a fraction of the run by default),
and ``bc_weight`` keeps a BC term afterwards.

``agent=cpl dataset=<id> agent.preferences=<name>`` reads ``<dataset>/preferences/<name>.npz``
(``experiments/prefs.py``); the dataset supplies observation statistics and the env to evaluate on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch.nn import functional as F
from typing_extensions import override

from agents.offline.base import OfflineAgent, adam
from agents.offline.nets import make_policy
from envs import data as ds
from envs.errors import ConfigError


def biased_bce(adv_left: torch.Tensor, adv_right: torch.Tensor, target: torch.Tensor, bias: float) -> torch.Tensor:
    """CPL's loss per pair: ``target`` = P(left preferred) (1, 0, or 0.5 for equal); all ``(pairs,)``."""
    left_wins = F.logsigmoid(adv_left - bias * adv_right)
    right_wins = F.logsigmoid(adv_right - bias * adv_left)
    return -(target * left_wins + (1.0 - target) * right_wins)


@dataclass
class PairBatch:
    """A minibatch of labelled segment pairs on the device (``b`` pairs of ``H`` steps).

    Attributes:
        left_obs, right_obs: ``(b, H, obs_dim)`` normalised observations.
        left_actions, right_actions: ``(b, H, act_dim)`` actions in ``[-1, 1]`` (Box) or ``(b, H)`` int64.
        left_mask, right_mask: ``(b, H)`` float32, 0 for padding after a terminal state.
        target: ``(b,)`` P(left preferred): 1, 0 or 0.5 (equal).
    """

    left_obs: torch.Tensor
    left_actions: torch.Tensor
    left_mask: torch.Tensor
    right_obs: torch.Tensor
    right_actions: torch.Tensor
    right_mask: torch.Tensor
    target: torch.Tensor


class CPL(OfflineAgent[PairBatch]):
    """``agent=cpl`` (module docstring; the shared arguments are :class:`~agents.offline.base.OfflineAgent`'s).

    Args:
        preferences: Name of the preference file beside the dataset, or a path to one.
        alpha: Temperature α of the advantage ``α log π``.
        bias: Conservative bias λ.
        bc_weight: Weight of the BC term after pretraining.
        bc_steps: Gradient steps of BC pretraining (null: ``bc_fraction`` of ``max_steps``).
        bc_fraction: Fraction of the run spent on BC pretraining when ``bc_steps`` is null.
        max_steps: The run's ``steps``.
        learning_rate: Adam step size.
        dropout: Dropout in the policy network.
    """

    name = "cpl"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int = 0,
        device: str = "cpu",
        preferences: str = "default",
        alpha: float = 0.1,
        bias: float = 0.5,
        bc_weight: float = 0.0,
        bc_steps: int | None = None,
        bc_fraction: float = 0.2,
        max_steps: int = 100_000,
        learning_rate: float = 1e-4,
        dropout: float | None = None,
        **shared: Any,
    ) -> None:
        if not 0.0 < float(bias) <= 1.0:
            raise ConfigError(f"agent.bias={bias!r} must be in (0, 1] (CPL's conservative bias λ)")
        if float(alpha) <= 0:
            raise ConfigError(f"agent.alpha={alpha!r} must be > 0")
        super().__init__(observation_space, action_space, seed, device, **shared)
        self.preferences = str(preferences)
        self.alpha, self.bias, self.bc_weight = float(alpha), float(bias), float(bc_weight)
        self.bc_steps = int(bc_steps) if bc_steps is not None else int(float(bc_fraction) * int(max_steps))
        self.num_pairs = 0
        self.pairs_info: dict[str, Any] = {}
        with self.seeded_init():
            self.actor = make_policy(self.obs_dim, self.action_space, self.hidden, dropout).to(self.device)
        self.modules = {"actor": self.actor}
        self.optimizers = {"actor": adam(self.actor.parameters(), learning_rate)}

    def prepare(self, data: ds.Episodes) -> None:
        """Load the preference pairs (``preferences``) cut from ``data``, as device tensors.

        Raises:
            ConfigError: No such preference file (the dataset's files are listed), or every pair skipped.
        """
        from rewards.preference.segments import PreferencePairs

        path = Path(self.preferences)
        if path.suffix != ".npz":
            path = ds.preferences_dir(data.dataset_id, data.root) / f"{self.preferences}.npz"
        if not path.exists():
            have = sorted(p.stem for p in path.parent.glob("*.npz")) if path.parent.is_dir() else []
            raise ConfigError(
                f"agent.preferences={self.preferences!r}: no preference file {path}; this dataset has: "
                f"{', '.join(have) or 'none'} (make one with experiments/prefs.py dataset={data.dataset_id} name=<name>)"
            )
        pairs = PreferencePairs.load(path)
        answered = pairs.answered()
        if len(answered) == 0:
            raise ConfigError(f"{path}: every pair was skipped; nothing to learn from")
        pairs = pairs.subset(answered)

        def tensors(seg: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            obs = torch.as_tensor(seg.obs.reshape(*seg.obs.shape[:2], -1), dtype=torch.float32, device=self.device)
            act = self.scaler.to_unit(seg.actions) if self.scaler.box else seg.actions
            return (
                self.normalize(obs),
                torch.as_tensor(act, device=self.device),
                torch.as_tensor(seg.valid(), dtype=torch.float32, device=self.device),
            )

        self.left, self.right = tensors(pairs.left), tensors(pairs.right)
        self.targets = torch.as_tensor(pairs.targets(), device=self.device)
        self.num_pairs = len(pairs)
        self.pairs_info = {"file": str(path), "pairs": len(pairs), "teacher": pairs.teacher, "segment": pairs.left.length}

    def sample(self) -> PairBatch:
        """``batch_size`` labelled pairs drawn uniformly (with replacement)."""
        idx = torch.randint(self.num_pairs, (self.batch_size,), generator=self.generator, device=self.device)
        return PairBatch(
            *(t[idx] for t in self.left), *(t[idx] for t in self.right), target=self.targets[idx]  # type: ignore[misc]
        )

    def _segment_log_prob(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, h = mask.shape
        flat_act = act.reshape(b * h, -1) if self.scaler.box else act.reshape(b * h)
        lp = self.actor.log_prob(obs.reshape(b * h, -1), flat_act).view(b, h)
        return lp * mask

    @override
    def update(self, batch: PairBatch) -> Mapping[str, torch.Tensor]:
        lp_left = self._segment_log_prob(batch.left_obs, batch.left_actions, batch.left_mask)
        lp_right = self._segment_log_prob(batch.right_obs, batch.right_actions, batch.right_mask)
        steps = batch.left_mask.sum() + batch.right_mask.sum()
        bc = -(lp_left.sum() + lp_right.sum()) / steps
        if self._step < self.bc_steps:
            loss, cpl = bc, torch.zeros((), device=self.device)
        else:
            adv_l, adv_r = self.alpha * lp_left.sum(1), self.alpha * lp_right.sum(1)
            cpl = biased_bce(adv_l, adv_r, batch.target, self.bias).mean()
            loss = cpl + self.bc_weight * bc
        opt = self.optimizers["actor"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            t = batch.target
            decided = t != 0.5
            agree = ((lp_left.sum(1) > lp_right.sum(1)) == (t == 1.0)) & decided
            acc = agree.sum() / decided.sum().clamp(min=1)
        return {"loss_cpl": cpl.detach(), "loss_bc": bc.detach(), "preference_accuracy": acc}

    @override
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preferences": self.pairs_info}
