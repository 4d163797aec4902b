"""A size-agnostic actor-critic for ``env=jobshop``: one shared MLP scores every job.

Used with sb3-contrib's MaskablePPO (``agent=maskable_ppo env=jobshop``). The observation is a
``(max_jobs, features)`` table (:mod:`envs.jobshop.env`); the actor applies the same small MLP
to every row and uses the scores as the logits of a categorical distribution over jobs (jobs
without operations left get -1e8, so the policy is valid even without external masks). The
critic embeds every row with another shared MLP, pools the embeddings of the jobs still in play
(mean and max), and maps them to a value. Nothing depends on the number of jobs, so a policy
trained on 15x15 instances runs on 100x20 ones (with ``env.max_jobs`` large enough for both).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, cast

import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch import nn
from typing_extensions import override


def _mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class JobScorer(nn.Module):
    """``forward(features) -> (logits (batch, max_jobs), value latent (batch, hidden))``.

    Args:
        max_jobs: Rows of the observation.
        n_features: Columns of the observation (column 0: job has operations left).
        hidden: Width of the hidden layers.
        activation: Activation class.
    """

    def __init__(self, max_jobs: int, n_features: int, hidden: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.max_jobs, self.n_features = max_jobs, n_features
        self.scorer = _mlp([n_features, hidden, hidden, 1], activation)
        self.embed = _mlp([n_features, hidden, hidden], activation)
        self.value_head = nn.Sequential(nn.Linear(2 * hidden, hidden), activation())
        self.latent_dim_pi = max_jobs
        self.latent_dim_vf = hidden

    def _rows(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = features.view(-1, self.max_jobs, self.n_features)
        return rows, rows[..., 0] > 0.5

    @override
    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        """Score every job with the shared MLP: the logits of the policy over jobs.

        Args:
            features: ``(batch, max_jobs * n_features)`` flattened observations (or any shape
                that views as ``(batch, max_jobs, n_features)``).

        Returns:
            ``(batch, max_jobs)`` logits; -1e8 for jobs without operations left.
        """
        rows, valid = self._rows(features)
        return self.scorer(rows).squeeze(-1).masked_fill(~valid, -1e8)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        """Value latent: per-job embeddings pooled (mean and max) over the jobs still in play.

        Args:
            features: ``(batch, max_jobs * n_features)`` flattened observations (as :meth:`forward_actor`).

        Returns:
            ``(batch, hidden)`` latent for SB3's value head.
        """
        rows, valid = self._rows(features)
        emb = self.embed(rows)
        weight = valid.unsqueeze(-1).float()
        count = weight.sum(dim=1).clamp(min=1.0)
        mean = (emb * weight).sum(dim=1) / count
        maximum = emb.masked_fill(~valid.unsqueeze(-1), -1e8).amax(dim=1).clamp(min=-1e4)
        return self.value_head(torch.cat([mean, maximum], dim=-1))


class JobScorerPolicy(MaskableActorCriticPolicy):
    """MaskablePPO policy with :class:`JobScorer` as its networks.

    Args:
        hidden: Width of the scorer and embedding MLPs.
        *args, **kwargs: As :class:`MaskableActorCriticPolicy` (``net_arch`` is not used).
    """

    def __init__(self, *args: Any, hidden: int = 64, **kwargs: Any) -> None:
        self.hidden = hidden
        super().__init__(*args, **kwargs)

    @override
    def _build_mlp_extractor(self) -> None:
        shape = self.observation_space.shape
        if shape is None or len(shape) != 2:
            raise ValueError(f"JobScorerPolicy needs a (max_jobs, features) observation, got {self.observation_space}")
        max_jobs, n_features = shape
        # SB3 declares mlp_extractor as MlpExtractor but only uses latent_dim_pi/vf and
        # forward_actor/critic (its documented custom-network pattern), which JobScorer provides.
        self.mlp_extractor = JobScorer(max_jobs, n_features, self.hidden, self.activation_fn)  # type: ignore[assignment]

    @override
    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # the scorer's outputs are the logits
        if self.ortho_init:  # small initial scores: a near-uniform first policy, as SB3 does for action_net
            head = cast(JobScorer, self.mlp_extractor).scorer[-1]  # built by _build_mlp_extractor
            assert isinstance(head, nn.Linear)
            nn.init.orthogonal_(head.weight, gain=0.01)
            nn.init.zeros_(head.bias)
        # SB3's optimizer_class is typed as the Optimizer base, whose __init__ takes no lr (SB3 ignores this too).
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "hidden": self.hidden}
