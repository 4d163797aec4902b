"""Contrastive Preference Learning: a policy learned from segment preferences directly, no reward model, no RL.

Hejna et al. 2023, "Contrastive Preference Learning: Learning from Human Feedback without RL";
reference code github.com/jhejna/cpl (``research/algs/cpl.py``, ``configs/mw_state_dense/cpl.yaml``).

Under the regret-based model of preferences with maximum-entropy optimal policies, the optimal
advantage is ``A*(s, a) = α log π*(a|s)``, so the probability that segment σ⁺ is preferred to σ⁻ is a
softmax over the segments' summed ``α log π``. CPL fits π by the contrastive loss

    L = -log σ( Σ_t α log π(a⁺_t|s⁺_t) - λ Σ_t α log π(a⁻_t|s⁻_t) )

with the *conservative bias* λ ∈ (0, 1] (λ < 1 keeps the loss from pushing down the likelihood of
the dispreferred segment without bound). Equal labels train toward 0.5 on both orderings, skipped
pairs are left out. As the reference does:

* **Actor.** For Box actions ``π`` is deterministic, ``tanh(f(s))``, scored as a Gaussian of fixed
  variance: ``log π(a|s) = -||tanh(f(s)) - a||²`` (the reference's ``ContinuousMLPActor``: "for an
  independent Gaussian with unit variance, log prob reduces to MSE"). A learned σ would change the
  effective temperature to ``α / σ²`` as it shrinks during training (``agent.actor=gaussian`` keeps
  that variant). Discrete actions (no reference) use a softmax policy's ``log π``. Orthogonal
  initialisation, dropout 0.25, two hidden layers of 512.
* **Two phases.** The first ``bc_steps`` gradient steps (default 40% of the run: the reference's
  200k of 500k) are behaviour cloning on both segments of each pair, ``-mean log π``; then the Adam
  optimiser is replaced by a fresh one (its moments reset) and the learning rate warms up linearly
  from ``lr / W`` to ``lr`` over ``W`` steps (default 2% of the run: the reference's 10k of 500k),
  with pure CPL (``bc_weight`` = 0; the CPL-BC variant adds ``bc_weight`` times the BC loss, with λ = 1).
  The phase and the warm-up follow the budget ``train`` is given (:mod:`agents.offline.base`).
* **Defaults.** α = 0.1, λ = 0.5, Adam 1e-4, 96 pairs per step; the reference's segments are 64 steps
  (``experiments/prefs.py segment=``).

**Steps after a terminal.** A segment that runs past its episode's terminal state into the absorbing
state (``experiments/prefs.py`` pads it) has steps with no action to score. Left out of the sum
they would each count 0, the largest value ``α log π`` takes (a log-likelihood is <= 0 for the
softmax and the fixed-variance actor), so the shorter segment would start ahead by its padding
alone. Here each padded step counts as an average one: the minibatch's mean ``α log π`` over real
steps, a constant for the gradient. A policy that scores every step alike then scores every segment
alike, whatever its length; only the real steps' actions move the loss.

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

from agents.offline.base import OfflineAgent, adam, set_lr
from agents.offline.nets import BOX_POLICIES, make_policy, orthogonal_init
from envs import data as ds
from envs.errors import ConfigError


def biased_bce(adv_left: torch.Tensor, adv_right: torch.Tensor, target: torch.Tensor, bias: float) -> torch.Tensor:
    """CPL's loss per pair: ``target`` = P(left preferred) (1, 0, or 0.5 for equal); all ``(pairs,)``."""
    left_wins = F.logsigmoid(adv_left - bias * adv_right)
    right_wins = F.logsigmoid(adv_right - bias * adv_left)
    return -(target * left_wins + (1.0 - target) * right_wins)


def padded_scores(
    lp_left: torch.Tensor, lp_right: torch.Tensor, mask_left: torch.Tensor, mask_right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment sums of ``log π`` with each padded step counted as the batch's mean real step (module docstring).

    Args:
        lp_left: ``(pairs, H)`` ``log π`` per step of the left segments (any finite value where padded).
        lp_right: ``(pairs, H)`` the same for the right segments.
        mask_left: ``(pairs, H)`` float, 1 for a real step of a left segment, 0 for padding after a terminal.
        mask_right: ``(pairs, H)`` the same for the right segments.

    Returns:
        ``(pairs,)`` and ``(pairs,)``: the two segments' ``Σ_t log π``.
    """
    with torch.no_grad():
        steps = (mask_left.sum() + mask_right.sum()).clamp(min=1.0)
        mean = ((lp_left * mask_left).sum() + (lp_right * mask_right).sum()) / steps
    left = torch.where(mask_left > 0, lp_left, mean).sum(1)
    right = torch.where(mask_right > 0, lp_right, mean).sum(1)
    return left, right


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
        bc_weight: Weight of the BC term after the BC phase.
        bc_steps: Gradient steps of the BC phase (``None``: ``bc_fraction`` of the run's budget).
        bc_fraction: Fraction of the run spent on BC when ``bc_steps`` is ``None``.
        warmup_fraction: Linear learning-rate warm-up after the BC phase, as a fraction of the run (0: none).
        learning_rate: Adam step size.
        dropout: Dropout in the policy network (``None``: none).
        actor: Box actions: ``deterministic`` (the reference's fixed-variance actor) or ``gaussian`` (learned σ).
        ortho_init: Orthogonal initialisation of the policy's layers (the reference's ``ortho_init``).
        max_steps: Ignored (the budget comes from ``train``); accepted so that older configs still build.

    Raises:
        ConfigError: A value outside its range.
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
        bc_fraction: float = 0.4,
        warmup_fraction: float = 0.02,
        learning_rate: float = 1e-4,
        dropout: float | None = 0.25,
        actor: str = "deterministic",
        ortho_init: bool = True,
        max_steps: int | None = None,
        **shared: Any,
    ) -> None:
        if not 0.0 < float(bias) <= 1.0:
            raise ConfigError(f"agent.bias={bias!r} must be in (0, 1] (CPL's conservative bias λ)")
        if float(alpha) <= 0:
            raise ConfigError(f"agent.alpha={alpha!r} must be > 0")
        if not 0.0 <= float(bc_fraction) <= 1.0 or not 0.0 <= float(warmup_fraction) <= 1.0:
            raise ConfigError(f"agent.bc_fraction={bc_fraction!r} and agent.warmup_fraction={warmup_fraction!r} must be in [0, 1]")
        if actor not in BOX_POLICIES:
            raise ConfigError(f"agent.actor={actor!r} must be one of {', '.join(BOX_POLICIES)}")
        super().__init__(observation_space, action_space, seed, device, **shared)
        self.preferences = str(preferences)
        self.alpha, self.bias, self.bc_weight = float(alpha), float(bias), float(bc_weight)
        self.fixed_bc_steps = None if bc_steps is None else int(bc_steps)
        self.bc_fraction, self.warmup_fraction = float(bc_fraction), float(warmup_fraction)
        self.learning_rate = float(learning_rate)
        self.num_pairs = 0
        self.pairs_info: dict[str, Any] = {}
        with self.seeded_init():
            self.actor = make_policy(
                self.obs_dim, self.action_space, self.hidden, dropout, box=actor, generator=self.generator
            ).to(self.device)
            if ortho_init:
                orthogonal_init(self.actor)
        self.modules = {"actor": self.actor}
        self.optimizers = {"actor": adam(self.actor.parameters(), self.learning_rate)}
        self.phase = "bc"

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

    @override
    def sample(self) -> PairBatch:
        """``batch_size`` labelled pairs drawn uniformly (with replacement)."""
        idx = torch.randint(self.num_pairs, (self.batch_size,), generator=self.generator, device=self.device)
        return PairBatch(
            *(t[idx] for t in self.left), *(t[idx] for t in self.right), target=self.targets[idx]  # type: ignore[misc]
        )

    # --- schedule ------------------------------------------------------------------------------

    @property
    def bc_steps(self) -> int:
        """Gradient steps of the BC phase in a run of ``budget`` steps."""
        return self.fixed_bc_steps if self.fixed_bc_steps is not None else int(self.bc_fraction * self.budget)

    def learning_rate_at(self, step: int) -> float:
        """The step size of gradient step ``step`` (0-based): constant in BC, warmed up after the switch."""
        if step < self.bc_steps:
            return self.learning_rate
        warmup = int(self.warmup_fraction * self.budget)
        return self.learning_rate * min(1.0, (step - self.bc_steps + 1) / warmup) if warmup > 0 else self.learning_rate

    def _enter_phase(self, phase: str) -> None:
        """Switch to ``bc`` or ``cpl`` with a fresh optimiser (the reference resets Adam at the switch)."""
        if phase != self.phase:
            self.optimizers["actor"] = adam(self.actor.parameters(), self.learning_rate)
            self.phase = phase

    @override
    def extra_state(self) -> dict[str, Any]:
        return {"phase": self.phase}

    @override
    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.phase = str(state.get("phase", "bc"))

    # --- the update ----------------------------------------------------------------------------

    def _log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``(b, H)`` ``log π`` of ``(b, H, ...)`` observations and actions."""
        b, h = obs.shape[:2]
        flat_act = act.reshape(b * h, -1) if self.scaler.box else act.reshape(b * h)
        return self.actor.log_prob(obs.reshape(b * h, -1), flat_act).view(b, h)

    @override
    def update(self, batch: PairBatch) -> Mapping[str, torch.Tensor]:
        step = self.num_steps
        bc_phase = step < self.bc_steps
        self._enter_phase("bc" if bc_phase else "cpl")
        lr = self.learning_rate_at(step)
        set_lr(self.optimizers["actor"], lr)

        lp_left = self._log_prob(batch.left_obs, batch.left_actions)
        lp_right = self._log_prob(batch.right_obs, batch.right_actions)
        steps = (batch.left_mask.sum() + batch.right_mask.sum()).clamp(min=1.0)
        bc = -((lp_left * batch.left_mask).sum() + (lp_right * batch.right_mask).sum()) / steps
        sum_left, sum_right = padded_scores(lp_left, lp_right, batch.left_mask, batch.right_mask)
        if bc_phase:
            loss, cpl = bc, torch.zeros((), device=self.device)
        else:
            cpl = biased_bce(self.alpha * sum_left, self.alpha * sum_right, batch.target, self.bias).mean()
            loss = cpl + self.bc_weight * bc
        opt = self.optimizers["actor"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            t = batch.target
            decided = t != 0.5
            agree = ((sum_left > sum_right) == (t == 1.0)) & decided
            acc = agree.sum() / decided.sum().clamp(min=1)
        return {
            "loss_cpl": cpl.detach(),
            "loss_bc": bc.detach(),
            "preference_accuracy": acc,
            "lr_actor": torch.tensor(lr),
        }

    @override
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preferences": self.pairs_info, "bc_steps": self.bc_steps}
