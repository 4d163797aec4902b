"""Bradley-Terry reward models learned from labelled segment pairs.

A member ``r_θ(s, a)`` scores each step; a segment's predicted return is the sum over its steps,
and the probability that the left segment is preferred is ``σ(R_θ(σ_left) - R_θ(σ_right))``
(Christiano et al. 2017; the model of imitation's PreferenceComparisons and B-Pref/PEBBLE).
Training minimises the cross-entropy to the teacher's targets (1, 0, or 0.5 for "equal"), skipped
pairs left out. :class:`RewardEnsemble` holds ``members`` such models, each trained on its own
bootstrap resample of the pairs, so that their disagreement measures uncertainty (B-Pref's
disagreement sampling) and a pessimistic blend of mean and minimum gives a robust reward
(Reward-Robust RLHF's ensembles).
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from envs.errors import ConfigError
from rewards.preference.segments import PreferencePairs, Segments

BLENDS = ("mean", "min", "pessimistic")


class RewardEnsemble(nn.Module):
    """``members`` MLP reward models over (observation, action) features.

    Args:
        observation_space: Box observations (flattened).
        action_space: Box (used as is) or Discrete (one-hot) actions.
        hidden: Hidden layer sizes.
        members: Ensemble size (1: a single model).
        use_action: Feed the action too (False: a state-only reward).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden: Sequence[int] = (256, 256),
        members: int = 3,
        use_action: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(observation_space, gym.spaces.Box):
            raise ConfigError(f"the MLP reward model takes Box observations, not {observation_space}")
        if use_action and not isinstance(action_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise ConfigError(f"the reward model takes Box or Discrete actions, not {action_space}")
        if int(members) < 1:
            raise ConfigError(f"reward model members={members!r} must be >= 1")
        self.obs_dim = int(np.prod(observation_space.shape))
        self.action_space = action_space
        self.use_action = bool(use_action)
        self.act_dim = 0
        if self.use_action:
            self.act_dim = (
                int(action_space.n)
                if isinstance(action_space, gym.spaces.Discrete)
                else int(np.prod(action_space.shape))
            )
        dims = [self.obs_dim + self.act_dim, *[int(h) for h in hidden], 1]
        self.members = nn.ModuleList()
        for _ in range(int(members)):
            layers: list[nn.Module] = []
            for i in range(len(dims) - 1):
                layers.append(nn.Linear(dims[i], dims[i + 1]))
                if i < len(dims) - 2:
                    layers.append(nn.LeakyReLU())
            self.members.append(nn.Sequential(*layers))
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))

    # --- features and forward ---------------------------------------------------------------------

    def features(self, obs: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(..., obs_dim + act_dim)`` float32 inputs from ``(..., *obs_shape)`` observations and actions."""
        dev = self.obs_mean.device
        o = torch.as_tensor(np.asarray(obs) if not torch.is_tensor(obs) else obs, dtype=torch.float32, device=dev)
        lead = o.shape[: o.ndim - len(self._obs_shape(o))]
        o = (o.reshape(*lead, self.obs_dim) - self.obs_mean) / self.obs_std
        if not self.use_action:
            return o
        a = torch.as_tensor(np.asarray(actions) if not torch.is_tensor(actions) else actions, device=dev)
        if isinstance(self.action_space, gym.spaces.Discrete):
            a = F.one_hot(a.reshape(*lead).long(), self.act_dim).float()
        else:
            a = a.reshape(*lead, self.act_dim).float()
        return torch.cat([o, a], dim=-1)

    def _obs_shape(self, o: torch.Tensor) -> tuple[int, ...]:
        # the observation's own shape is the trailing dims whose product is obs_dim
        shape: tuple[int, ...] = ()
        for d in reversed(o.shape):
            shape = (int(d), *shape)
            if int(np.prod(shape)) == self.obs_dim:
                return shape
        raise ConfigError(
            f"observations of shape {tuple(o.shape)} do not match the reward model's {self.obs_dim} features"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(members, ...)`` per-step rewards of ``(..., features)`` inputs."""
        return torch.stack([m(x).squeeze(-1) for m in self.members])

    def blend(self, per_member: torch.Tensor, how: str = "mean", k: float = 1.0) -> torch.Tensor:
        """One reward from ``(members, ...)`` predictions.

        ``mean``; ``min`` (the most pessimistic member); ``pessimistic``: ``mean - k * std``.
        """
        if how == "mean":
            return per_member.mean(0)
        if how == "min":
            return per_member.min(0).values
        if how == "pessimistic":
            std = per_member.std(0) if per_member.shape[0] > 1 else torch.zeros_like(per_member[0])
            return per_member.mean(0) - float(k) * std
        raise ConfigError(f"reward model blend={how!r} must be one of {', '.join(BLENDS)}")

    @torch.no_grad()
    def predict(self, obs: np.ndarray, actions: np.ndarray, how: str = "mean", k: float = 1.0) -> np.ndarray:
        """``(batch,)`` float32 rewards of a transition batch."""
        return self.blend(self(self.features(obs, actions)), how, k).cpu().numpy().astype(np.float32)

    # --- preferences ------------------------------------------------------------------------------

    def segment_returns(self, seg: Segments) -> torch.Tensor:
        """``(members, n)`` predicted returns of ``n`` segments."""
        per_step = self(self.features(seg.obs, seg.actions))  # (members, n, H)
        if seg.mask is not None:
            per_step = per_step * torch.as_tensor(seg.mask, device=per_step.device)
        return per_step.sum(-1)

    def logits(self, left: Segments, right: Segments) -> torch.Tensor:
        """``(members, n)`` logits of "left preferred"."""
        return self.segment_returns(left) - self.segment_returns(right)

    @torch.no_grad()
    def disagreement(self, left: Segments, right: Segments) -> np.ndarray:
        """``(n,)`` std over members of P(left preferred): B-Pref's disagreement score."""
        p = torch.sigmoid(self.logits(left, right))
        return (p.std(0) if p.shape[0] > 1 else torch.zeros_like(p[0])).cpu().numpy()

    @torch.no_grad()
    def reward_std(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``(batch,)`` std over members of the per-step reward (zero for one member)."""
        per = self(self.features(obs, actions))
        return (per.std(0) if per.shape[0] > 1 else torch.zeros_like(per[0])).cpu().numpy()

    @torch.no_grad()
    def entropy(self, left: Segments, right: Segments) -> np.ndarray:
        """``(n,)`` entropy of the ensemble-mean P(left preferred): B-Pref's entropy score."""
        p = torch.sigmoid(self.logits(left, right)).mean(0).clamp(1e-6, 1 - 1e-6)
        return (-(p * p.log() + (1 - p) * (1 - p).log())).cpu().numpy()

    @torch.no_grad()
    def accuracy(self, pairs: PreferencePairs) -> float:
        """Fraction of the decided (left/right) pairs whose preferred side the ensemble mean predicts; NaN if none."""
        t = pairs.targets()
        decided = np.flatnonzero((t == 0.0) | (t == 1.0))
        if len(decided) == 0:
            return float("nan")
        sub = pairs.subset(decided)
        logit = self.logits(sub.left, sub.right).mean(0).cpu().numpy()
        return float(np.mean((logit > 0) == (t[decided] == 1.0)))

    def fit_normalizer(self, obs: np.ndarray) -> None:
        """Standardise observations with the mean and std of ``(n, ...)`` observations."""
        o = np.asarray(obs, dtype=np.float64).reshape(-1, self.obs_dim)
        self.obs_mean.copy_(torch.as_tensor(o.mean(0), dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(o.std(0) + 1e-6, dtype=torch.float32))


def train_reward_model(
    model: RewardEnsemble,
    pairs: PreferencePairs,
    generator: torch.Generator,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """Fit every member on its own bootstrap resample of the answered pairs (Bradley-Terry cross-entropy).

    Args:
        model: The ensemble (trained in place).
        pairs: Labelled pairs; skipped ones are left out.
        generator: Randomness for the bootstrap and the minibatch order.
        epochs: Passes over the (resampled) pairs.
        batch_size: Pairs per gradient step.
        lr, weight_decay: Adam's.
        optimizer: Reuse an optimiser across rounds of an online loop (default: a fresh Adam).

    Returns:
        ``loss_reward`` (last epoch's mean) and ``train_accuracy`` on the answered pairs.
    """
    answered = pairs.answered()
    if len(answered) == 0:
        raise ConfigError("no answered preference pairs to train on (every pair was skipped)")
    dev = model.obs_mean.device
    targets = torch.as_tensor(pairs.targets()[answered], device=dev)
    # inputs computed once: (pairs, H, features)
    with torch.no_grad():
        xl = model.features(pairs.left.obs[answered], pairs.left.actions[answered])
        xr = model.features(pairs.right.obs[answered], pairs.right.actions[answered])
        ml = torch.as_tensor(pairs.left.valid()[answered], dtype=torch.float32, device=dev)
        mr = torch.as_tensor(pairs.right.valid()[answered], dtype=torch.float32, device=dev)
    n, m = len(answered), len(model.members)
    boot = torch.randint(n, (m, n), generator=generator, device="cpu").to(dev)  # each member's resample
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=float(lr), weight_decay=float(weight_decay))
    model.train()
    last = 0.0
    for _ in range(int(epochs)):
        order = torch.randperm(n, generator=generator).to(dev)
        total, count = 0.0, 0
        for s in range(0, n, int(batch_size)):
            pos = order[s : s + int(batch_size)]
            idx = boot[:, pos]  # (members, b)
            loss = 0.0
            for j, member in enumerate(model.members):
                rl = (member(xl[idx[j]]).squeeze(-1) * ml[idx[j]]).sum(-1)
                rr = (member(xr[idx[j]]).squeeze(-1) * mr[idx[j]]).sum(-1)
                loss = loss + F.binary_cross_entropy_with_logits(rl - rr, targets[idx[j]])
            opt.zero_grad(set_to_none=True)
            (loss / m).backward()  # type: ignore[union-attr]
            opt.step()
            total += float(loss.detach()) / m * len(pos)  # type: ignore[union-attr]
            count += len(pos)
        last = total / count
    model.eval()
    return {"loss_reward": last, "train_accuracy": model.accuracy(pairs.subset(answered))}
