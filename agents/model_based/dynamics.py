"""Probabilistic ensemble dynamics (PETS, Chua et al. 2018): ``M`` Gaussian MLPs in one batched forward.

Each member ``m`` maps a normalised input ``x = (([s, a] - mu) / sigma)`` to a diagonal Gaussian over the
state *change* ``Delta = s' - s``:

    mean_m(x), logvar_m(x);   logvar <- max_lv - softplus(max_lv - logvar);
                              logvar <- min_lv + softplus(logvar - min_lv)

with learned bounds ``max_lv`` / ``min_lv`` (one per output dimension, shared by the members) that keep
the variance away from 0 and infinity softly (PETS appendix A.1; mbrl-lib's ``GaussianMLP``). Training
minimises the Gaussian negative log-likelihood per member on its own bootstrap resample of the data,

    L = sum_m mean_i sum_d [ (mean_m - Delta)^2 exp(-logvar_m) + logvar_m ]  +  0.01 (sum max_lv - sum min_lv),

with weight decay through Adam. ``mu`` / ``sigma`` are the inputs' statistics over the training data,
recomputed at each fit. A held-out split (``val_ratio``) picks the stopping epoch per member (each keeps
its best weights; training stops after ``patience`` epochs without a 1% improvement of any member) and the
``elites``: the members with the lowest validation MSE, the only ones used to predict.

Members are stored as stacked weights ``(M, in, out)`` and applied with one ``baddbmm`` per layer, so the
ensemble costs one forward, not ``M``. Propagation is trajectory sampling with fixed members (PETS'
TS-inf): the caller groups particles by member, ``(E, n, dim)``, and each particle keeps its member over
the planning horizon (:meth:`EnsembleDynamics.sample`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from envs.errors import ConfigError


def check_model_settings(ensemble_size: int, model_elites: int, learning_starts: int, val_ratio: float) -> None:
    """The settings every agent with a learned ensemble shares (PETS, MBPO, COPlanner), checked at construction.

    Raises:
        ConfigError: More elites than members, ``learning_starts`` < 0, or ``val_ratio`` outside [0, 1).
    """
    if model_elites > ensemble_size:
        raise ConfigError(f"agent.model_elites={model_elites} must not exceed agent.ensemble_size={ensemble_size}")
    if int(learning_starts) < 0 or not 0.0 <= float(val_ratio) < 1.0:
        raise ConfigError(
            f"agent.learning_starts={learning_starts} must be >= 0 and agent.val_ratio={val_ratio} in [0, 1)"
        )


class EnsembleLinear(nn.Module):
    """``M`` independent linear layers: ``(M, N, in) -> (M, N, out)`` with one batched matmul.

    Args:
        members: Number of members ``M``.
        in_dim: Input features.
        out_dim: Output features.
        generator: Source of the initial weights (truncated normal, std ``1 / (2 sqrt(in))``, as PETS).
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        std = 1.0 / (2.0 * np.sqrt(in_dim))
        weight = torch.randn(members, in_dim, out_dim, generator=generator).clamp_(-2.0, 2.0) * std
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))

    @override
    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(M', N, in)``; ``members``: ``(M',)`` indices of the members to apply (``None``: all)."""
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class GaussianEnsemble(nn.Module):
    """The ensemble network: normalised ``(M, N, in)`` -> ``mean, logvar`` of shape ``(M, N, out)``.

    Args:
        members: Ensemble size ``M``.
        in_dim: Input size (``obs_dim + action_dim``).
        out_dim: Output size (``obs_dim``).
        hidden: Hidden layer widths.
        generator: Source of the initial weights.
    """

    def __init__(
        self, members: int, in_dim: int, out_dim: int, hidden: Sequence[int], generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        sizes = [in_dim, *map(int, hidden)]
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b, generator) for a, b in pairwise(sizes))
        self.head = EnsembleLinear(members, sizes[-1], 2 * out_dim, generator)
        self.max_logvar = nn.Parameter(torch.full((1, 1, out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, out_dim), -10.0))
        self.out_dim = out_dim

    @override
    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x = F.silu(layer(x, members))
        mean, logvar = self.head(x, members).split(self.out_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(M, N, d)`` each -> ``(M,)``: per member, ``mean_i sum_d (mean - y)^2 exp(-logvar) + logvar``."""
    return ((mean - target).pow(2) * torch.exp(-logvar) + logvar).sum(-1).mean(-1)


class EnsembleDynamics(nn.Module):
    """A probabilistic ensemble of ``s' = s + Delta`` models with input normalisation and elites (module docstring).

    Args:
        obs_dim: Observation size.
        action_dim: Action size.
        members: Ensemble size (PETS / mbrl-lib: 7).
        elites: Members used to predict, the best on held-out data (mbrl-lib: 5).
        hidden: Hidden layer widths (mbrl-lib: four of 200, SiLU).
        learning_rate: Adam step size.
        weight_decay: Adam's L2 weight decay.
        generator: Source of the initial weights (CPU generator).
        device: Where the weights live.
    """

    in_mean: torch.Tensor  # (obs_dim + action_dim,) input statistics of the last fit
    in_std: torch.Tensor
    elites: torch.Tensor  # (elites,) member indices

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        members: int = 7,
        elites: int = 5,
        hidden: Sequence[int] = (200, 200, 200, 200),
        learning_rate: float = 1e-3,
        weight_decay: float = 5e-5,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.members, self.num_elites = obs_dim, action_dim, int(members), int(elites)
        self.net = GaussianEnsemble(self.members, obs_dim + action_dim, obs_dim, hidden, generator)
        self.register_buffer("in_mean", torch.zeros(obs_dim + action_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + action_dim))
        self.register_buffer("elites", torch.arange(self.num_elites))
        self.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=learning_rate, weight_decay=weight_decay)
        self.fitted = False

    def _inputs(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return (torch.cat([obs, action], dim=-1) - self.in_mean) / self.in_std

    def predict(
        self, obs: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``s'`` per member.

        Args:
            obs: ``(M', N, obs_dim)``.
            action: ``(M', N, action_dim)``.
            members: ``(M',)`` member indices (``None``: all ``M``).

        Returns:
            ``(M', N, obs_dim)`` mean of ``s'`` (``s`` + predicted change) and log-variance.
        """
        mean, logvar = self.net(self._inputs(obs, action), members)
        return obs + mean, logvar

    def sample(
        self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None, deterministic: bool = False
    ) -> torch.Tensor:
        """One step of trajectory sampling: particle group ``e`` follows elite ``e``.

        Args:
            obs: ``(E, n, obs_dim)`` particles grouped by elite (``E`` = number of elites).
            action: ``(E, n, action_dim)``.
            generator: Source of the Gaussian noise.
            deterministic: Return the mean instead of a sample.

        Returns:
            ``(E, n, obs_dim)`` next observations.
        """
        mean, logvar = self.predict(obs, action, self.elites)
        if deterministic:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def fit(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        next_obs: np.ndarray,
        rng: np.random.Generator,
        epochs: int = 100,
        batch_size: int = 256,
        val_ratio: float = 0.2,
        patience: int = 5,
    ) -> dict[str, float]:
        """Fit the ensemble to transitions; refresh the normaliser first and choose the elites after.

        Args:
            obs: ``(N, obs_dim)`` observations.
            action: ``(N, action_dim)`` actions.
            next_obs: ``(N, obs_dim)`` next observations (the real ones at episode ends).
            rng: Source of the validation split, the bootstrap resamples and the minibatch order.
            epochs: Most passes over the data.
            batch_size: Minibatch size per member.
            val_ratio: Fraction held out to stop early and rank the members (0: train on all, rank on the training data).
            patience: Epochs without a 1% improvement of any member before stopping.

        Returns:
            ``loss_model_nll`` (last epoch's training NLL, mean over members), ``loss_model_val_mse``
            (validation MSE of the elites), ``model_epochs``.
        """
        device = self.in_mean.device
        x_np = np.concatenate([obs, action], axis=-1).astype(np.float32)
        y_np = (next_obs - obs).astype(np.float32)
        n = len(x_np)
        order = rng.permutation(n)
        n_val = int(n * val_ratio) if n * val_ratio >= 1 else 0
        val, tr = order[:n_val], order[n_val:]
        x, y = torch.as_tensor(x_np, device=device), torch.as_tensor(y_np, device=device)
        self.in_mean.copy_(x[tr].mean(0))
        self.in_std.copy_(x[tr].std(0, unbiased=False).clamp_min(1e-6))
        xv, yv = (x[val], y[val]) if n_val else (x[tr], y[tr])
        x_tr, y_tr = x[tr], y[tr]
        n_tr = len(tr)

        best = self._val_mse(xv, yv)
        best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        stale, epoch, nll = 0, 0, float("nan")
        for epoch in range(1, int(epochs) + 1):  # noqa: B007  (the count is reported)
            boot = torch.as_tensor(rng.integers(0, n_tr, size=(self.members, n_tr)), device=device)
            losses = []
            self.net.train()
            for start in range(0, n_tr, batch_size):
                idx = boot[:, start : start + batch_size]  # (M, b)
                mean, logvar = self.net((x_tr[idx] - self.in_mean) / self.in_std)
                loss = gaussian_nll(mean, logvar, y_tr[idx]).sum()
                loss = loss + 0.01 * (self.net.max_logvar.sum() - self.net.min_logvar.sum())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item() / self.members)
            nll = float(np.mean(losses))
            mse = self._val_mse(xv, yv)
            improved = (best - mse) / best.clamp_min(1e-12) > 0.01
            if improved.any():
                best = torch.where(improved, mse, best)
                self._keep_members(best_state, improved)
                stale = 0
            else:
                stale += 1
                if stale >= patience:
                    break
        self._restore_members(best_state)
        best = self._val_mse(xv, yv)
        self.elites.copy_(torch.argsort(best)[: self.num_elites])
        self.fitted = True
        return {
            "loss_model_nll": nll,
            "loss_model_val_mse": float(best[self.elites].mean()),
            "model_epochs": float(epoch),
        }

    @torch.no_grad()
    def _val_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(M,)`` mean squared error of each member's mean change on ``x`` ``(N, in)``, ``y`` ``(N, obs_dim)``."""
        self.net.eval()
        xs = ((x - self.in_mean) / self.in_std).expand(self.members, *x.shape)
        mean, _ = self.net(xs)
        return (mean - y).pow(2).mean(dim=(1, 2))

    @torch.no_grad()
    def _keep_members(self, state: dict[str, torch.Tensor], which: torch.Tensor) -> None:
        """Copy the current weights of the members ``which`` (``(M,)`` bool) into ``state``."""
        for k, v in self.net.state_dict().items():
            if v.shape[0] == self.members:
                state[k][which] = v[which]
            else:  # logvar bounds are shared: keep the latest
                state[k].copy_(v)

    @torch.no_grad()
    def _restore_members(self, state: Mapping[str, torch.Tensor]) -> None:
        self.net.load_state_dict(dict(state))

    def full_state(self) -> dict[str, Any]:
        """Weights, normaliser, elites and optimiser state (for checkpoints)."""
        return {"module": self.state_dict(), "optimizer": self.optimizer.state_dict(), "fitted": self.fitted}

    def load_full_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`full_state`."""
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.fitted = bool(state["fitted"])
