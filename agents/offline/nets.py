"""Networks shared by the offline agents: MLPs, a twin Q ensemble, Gaussian, deterministic and categorical policies.

Actions are handled in a normalised form: Box actions are mapped to ``[-1, 1]`` by the agent
(:class:`ActionScaler`) and discrete actions are integer indices. Twin critics are one module
with stacked weights (:class:`EnsembleLinear`), so both are evaluated with one batched matmul.

Box-action policies come in two kinds (:func:`make_policy`):

* ``gaussian``: ``N(tanh(f(s)), diag(sigma^2))`` with a learned state-independent sigma (IQL and BC,
  as CORL's ``iql.py``);
* ``deterministic``: ``tanh(f(s))`` scored by ``log pi(a|s) = -||tanh(f(s)) - a||^2``, a Gaussian of fixed
  variance 1/2 without its constant (CPL's reference actor, ``ContinuousMLPActor`` with a tanh
  output, whose log-likelihood "reduces to MSE"): the temperature of ``alpha log pi`` stays ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def _flat_size(space: gym.Space) -> int:
    """Number of scalars in one sample of ``space`` (the product of its shape)."""
    if space.shape is None:
        raise ValueError(f"{space} has no shape: expected a Box or Discrete space")
    return int(np.prod(space.shape))


class Dropout(nn.Module):
    """``nn.Dropout`` whose masks come from an explicit ``torch.Generator``.

    With the agent's generator (saved in its checkpoints), a resumed run draws the masks an
    uninterrupted one would; ``None``: torch's global generator.

    Args:
        p: Probability of zeroing an element while training.
        generator: Source of the masks, on the module's device.
    """

    def __init__(self, p: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = float(p)
        self.generator = generator

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)

    @override
    def extra_repr(self) -> str:
        return f"p={self.p}"


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    dropout: float | None = None,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """``in -> hidden... -> out`` with ReLU (and dropout after each hidden layer when given, masks from ``generator``)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(Dropout(dropout, generator))
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """``k`` independent linear layers applied to ``(k, batch, in)`` in one ``baddbmm``."""

    def __init__(self, k: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(k, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class TwinQ(nn.Module):
    """``k`` Q functions (default 2) in one module.

    Continuous actions: ``Q(s, a)`` from ``cat(s, a)``. Discrete actions: one output per action,
    the taken action's value gathered.

    Args:
        obs_dim: Observation size.
        action_space: The env's action space (Box or Discrete).
        hidden: Hidden layer sizes.
        k: Number of critics.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden: Sequence[int], k: int = 2) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if isinstance(action_space, gym.spaces.Discrete):
            in_dim, out_dim = obs_dim, int(action_space.n)
        else:
            in_dim, out_dim = obs_dim + _flat_size(action_space), 1
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in pairwise(dims):
            layers += [EnsembleLinear(k, a, b), nn.ReLU()]
        layers.append(EnsembleLinear(k, dims[-1], out_dim))
        self.net = nn.Sequential(*layers)
        self.k = k

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``(k, batch)`` values of ``(batch, obs_dim)`` observations and ``(batch, ...)`` actions."""
        if self.discrete:
            out = self.net(obs.unsqueeze(0).expand(self.k, -1, -1))
            return out.gather(2, action.long().view(1, -1, 1).expand(self.k, -1, 1)).squeeze(-1)
        x = torch.cat([obs, action], dim=-1)
        return self.net(x.unsqueeze(0).expand(self.k, -1, -1)).squeeze(-1)


class GaussianPolicy(nn.Module):
    """``N(tanh(f(s)), diag(exp(log_std)))`` over actions in ``[-1, 1]`` with a state-independent std (IQL/CORL)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        dropout: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim, dropout, generator)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` log-densities of ``(batch, act_dim)`` actions."""
        mean = torch.tanh(self.net(obs))
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        z = (action - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions in ``[-1, 1]`` for a batch of observations, without gradients.

        Args:
            obs: ``(batch, obs_dim)`` normalised observations.
            deterministic: The mean action instead of a sample.
            generator: Source of the sampling noise (``None``: torch's global generator).

        Returns:
            ``(batch, act_dim)`` actions (samples clipped to ``[-1, 1]``).
        """
        mean = torch.tanh(self.net(obs))
        if deterministic:
            return mean
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + std * noise).clamp(-1.0, 1.0)


class DeterministicPolicy(nn.Module):
    """``tanh(f(s))`` over actions in ``[-1, 1]``, scored as a fixed-variance Gaussian (CPL's reference actor)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        dropout: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim, dropout, generator)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` ``-||tanh(f(s)) - a||^2`` of ``(batch, act_dim)`` actions (a log-density up to a constant)."""
        return -(torch.tanh(self.net(obs)) - action).pow(2).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch, act_dim)`` actions ``tanh(f(s))`` for ``(batch, obs_dim)`` observations.

        The action is the mean whether or not ``deterministic`` is asked for (the reference samples
        this actor the same way); ``generator`` is unused.
        """
        return torch.tanh(self.net(obs))


class CategoricalPolicy(nn.Module):
    """A softmax policy over ``n`` discrete actions."""

    def __init__(
        self,
        obs_dim: int,
        n: int,
        hidden: Sequence[int],
        dropout: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, n, dropout, generator)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` log-probabilities of ``(batch,)`` integer actions."""
        return F.log_softmax(self.net(obs), dim=-1).gather(1, action.long().view(-1, 1)).squeeze(1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Action indices for a batch of observations, without gradients.

        Args:
            obs: ``(batch, obs_dim)`` normalised observations.
            deterministic: The most probable action instead of a sample.
            generator: Source of the sampling randomness (``None``: torch's global generator).

        Returns:
            ``(batch,)`` int64 actions.
        """
        logits = self.net(obs)
        if deterministic:
            return logits.argmax(-1)
        return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


#: The policies :func:`make_policy` builds (all have ``log_prob`` and ``act``).
Policy = GaussianPolicy | DeterministicPolicy | CategoricalPolicy
#: Kinds of Box-action policy (module docstring).
BOX_POLICIES = ("gaussian", "deterministic")


def make_policy(
    obs_dim: int,
    action_space: gym.Space,
    hidden: Sequence[int],
    dropout: float | None = None,
    box: str = "gaussian",
    generator: torch.Generator | None = None,
) -> Policy:
    """A categorical policy for Discrete actions; for Box actions a ``box`` one (module docstring).

    Args:
        obs_dim: Observation size.
        action_space: The env's action space (Box or Discrete).
        hidden: Hidden layer sizes.
        dropout: Dropout after each hidden layer (``None``: none).
        box: ``gaussian`` or ``deterministic`` (Box actions only).
        generator: Source of the dropout masks (the agent's generator).

    Raises:
        ValueError: ``box`` is not one of :data:`BOX_POLICIES`.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_dim, int(action_space.n), hidden, dropout, generator)
    if box == "gaussian":
        return GaussianPolicy(obs_dim, _flat_size(action_space), hidden, dropout, generator)
    if box == "deterministic":
        return DeterministicPolicy(obs_dim, _flat_size(action_space), hidden, dropout, generator)
    raise ValueError(f"policy kind {box!r} is not one of {', '.join(BOX_POLICIES)}")


def orthogonal_init(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Orthogonal weights (``gain``) and zero biases in every ``nn.Linear`` of ``module`` (CPL's ``ortho_init``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)
    return module


class ActionScaler:
    """Maps Box actions between the env's bounds and ``[-1, 1]`` (identity for Discrete)."""

    def __init__(self, space: gym.Space) -> None:
        self.box = isinstance(space, gym.spaces.Box)
        if isinstance(space, gym.spaces.Box):
            low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ValueError(f"offline agents need bounded Box actions, got {space}")
            self.center = ((high + low) / 2).astype(np.float32)
            self.half = np.maximum((high - low) / 2, 1e-8).astype(np.float32)

    def to_unit(self, actions: np.ndarray) -> np.ndarray:
        """Env actions ``(..., act_dim)`` -> float32 in ``[-1, 1]`` (clipped); Discrete actions unchanged."""
        if not self.box:
            return actions
        return np.clip((actions - self.center) / self.half, -1.0, 1.0).astype(np.float32)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``(..., act_dim)`` in ``[-1, 1]`` -> float32 in the env's bounds; Discrete actions unchanged."""
        if not self.box:
            return actions
        return (actions * self.half + self.center).astype(np.float32)
