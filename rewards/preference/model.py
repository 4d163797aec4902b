"""Bradley-Terry reward models learned from labelled segment pairs.

A member ``r_θ(s, a)`` scores each step; a segment's predicted return is the sum over its steps,
and the probability that the left segment is preferred is ``σ(R_θ(σ_left) - R_θ(σ_right))``
(Christiano et al. 2017; the model of imitation's PreferenceComparisons and B-Pref/PEBBLE).
Training minimises the cross-entropy to the teacher's targets (1, 0, or 0.5 for "equal"), skipped
pairs left out. :class:`RewardEnsemble` holds ``members`` such models, each trained on its own
bootstrap resample of the pairs (Christiano et al. 2017: ``|D|`` pairs drawn with replacement per
member), so that their disagreement measures uncertainty (B-Pref's disagreement sampling: std over
members of P(left preferred); entropy sampling: each member's entropy of that probability, averaged)
and a pessimistic blend of mean and minimum gives a robust reward (Reward-Robust RLHF's ensembles).
``output="tanh"`` bounds each member's per-step reward to (-1, 1), as B-Pref's reward model does
(its ``activation="tanh"``); ``linear`` (the default) leaves it unbounded.

The ensemble's input size depends on the env, so a config node cannot build it: the nodes of the
``reward/model`` config group (``experiments/conf/reward/model/{mlp,cnn}.yaml``) build a
:class:`MlpRewardModel` or :class:`CnnRewardModel`, a small factory holding the settings, which the
provider calls with the env's spaces when it binds. The factory also says what the model needs
(frames or not), where ``device=auto`` puts it and whether its reward is rescaled by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from envs.errors import ConfigError
from rewards.preference.segments import PreferencePairs, Segments

BLENDS = ("mean", "min", "pessimistic")
INPUTS = ("obs", "frames")
OUTPUTS = ("linear", "tanh")


class RewardEnsemble(nn.Module):
    """``members`` reward models over (observation, action) or (frame, action) inputs.

    ``inputs="obs"``: MLPs on the normalised flat observation (and the action). ``inputs="frames"``:
    a small CNN on the frame rendered after the step, shrunk to ``frame_size`` x ``frame_size``
    (three strided convolutions, then the MLP head, with the action appended to the image features):
    the image reward model of RL-VLM-F / PEBBLE-from-pixels, for envs whose state is only in the picture.

    Args:
        observation_space: Box observations (flattened; only read with ``inputs="obs"``).
        action_space: Box (used as is) or Discrete (one-hot) actions.
        hidden: Hidden layer sizes of the MLP (the head, for frames).
        members: Ensemble size (1: a single model).
        use_action: Feed the action too (False: a state-only reward).
        inputs: ``obs`` or ``frames``.
        frame_size: Side of the square frame the CNN sees (frames of other sizes are shrunk to it).
        channels: Channels of the CNN's three convolutions.
        output: ``linear`` (unbounded per-step reward) or ``tanh`` (bounded to (-1, 1), B-Pref's).
    """

    # buffers (register_buffer), declared for type checkers: ``(obs_dim,)`` float32 each
    obs_mean: torch.Tensor
    obs_std: torch.Tensor

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden: Sequence[int] = (256, 256),
        members: int = 3,
        use_action: bool = True,
        inputs: str = "obs",
        frame_size: int = 64,
        channels: Sequence[int] = (16, 32, 32),
        output: str = "linear",
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ConfigError(f"reward model output={output!r} must be one of {', '.join(OUTPUTS)}")
        if inputs not in INPUTS:
            raise ConfigError(f"reward model inputs={inputs!r} must be one of {', '.join(INPUTS)}")
        if inputs == "obs" and not isinstance(observation_space, gym.spaces.Box):
            raise ConfigError(
                f"the MLP reward model takes Box observations, not {observation_space}; "
                "for image observations use the CNN on frames (reward/model=cnn)"
            )
        if use_action and not isinstance(action_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise ConfigError(f"the reward model takes Box or Discrete actions, not {action_space}")
        if int(members) < 1:
            raise ConfigError(f"reward model members={members!r} must be >= 1")
        if inputs == "frames" and int(frame_size) < 36:
            raise ConfigError(f"reward model frame_size={frame_size!r} must be >= 36 (three strided convolutions)")
        self.inputs = inputs
        self.output = output
        self.frame_size = int(frame_size)
        self.obs_dim = (  # inputs="obs" implies a Box (checked above)
            int(np.prod(observation_space.shape))
            if inputs == "obs" and isinstance(observation_space, gym.spaces.Box)
            else 0
        )
        self.action_space = action_space
        self.use_action = bool(use_action)
        self.act_dim = 0
        if self.use_action:  # a Box or a Discrete (checked above)
            if isinstance(action_space, gym.spaces.Discrete):
                self.act_dim = int(action_space.n)
            elif isinstance(action_space, gym.spaces.Box):
                self.act_dim = int(np.prod(action_space.shape))
        self.members = nn.ModuleList()
        for _ in range(int(members)):
            if inputs == "obs":
                self.members.append(_MlpMember(self.obs_dim + self.act_dim, hidden, output == "tanh"))
            else:
                self.members.append(_CnnMember(self.frame_size, channels, self.act_dim, hidden, output == "tanh"))
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))

    # --- features and forward ---------------------------------------------------------------------

    def features(
        self,
        obs: np.ndarray | torch.Tensor | None,
        actions: np.ndarray | torch.Tensor | None,
        frames: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """The members' inputs for a batch with any leading shape ``L``.

        ``inputs="obs"``: ``((*L, obs_dim + act_dim) float32,)`` from ``(*L, *obs_shape)`` observations.
        ``inputs="frames"``: ``((*L, 3, S, S) uint8 frames, (*L, act_dim) float32 actions)`` from
        ``(*L, H, W, 3)`` uint8 frames (actions: an empty tensor when ``use_action`` is off).
        """
        dev = self.obs_mean.device
        if self.inputs == "frames":
            if frames is None:
                raise ConfigError(
                    "the CNN reward model needs frames, and this batch has none (the env must render "
                    "rgb_array frames; preference files must be made from a dataset with frames)"
                )
            f = torch.as_tensor(frames if torch.is_tensor(frames) else np.asarray(frames), device=dev)
            if f.ndim < 4 or f.shape[-1] != 3:
                raise ConfigError(f"the CNN reward model takes (..., H, W, 3) uint8 frames, got {tuple(f.shape)}")
            lead = f.shape[:-3]
            f = shrink_frames(f.reshape(-1, *f.shape[-3:]), self.frame_size)
            f = f.permute(0, 3, 1, 2).reshape(*lead, 3, self.frame_size, self.frame_size)
            return (f, self._action_features(actions, lead))
        o = torch.as_tensor(np.asarray(obs) if not torch.is_tensor(obs) else obs, dtype=torch.float32, device=dev)
        lead = o.shape[: o.ndim - len(self._obs_shape(o))]
        o = (o.reshape(*lead, self.obs_dim) - self.obs_mean) / self.obs_std
        if not self.use_action:
            return (o,)
        return (torch.cat([o, self._action_features(actions, lead)], dim=-1),)

    def _action_features(self, actions: np.ndarray | torch.Tensor | None, lead: tuple[int, ...]) -> torch.Tensor:
        dev = self.obs_mean.device
        if not self.use_action:
            return torch.zeros(*lead, 0, device=dev)
        a = torch.as_tensor(np.asarray(actions) if not torch.is_tensor(actions) else actions, device=dev)
        if isinstance(self.action_space, gym.spaces.Discrete):
            return F.one_hot(a.reshape(*lead).long(), self.act_dim).float()
        return a.reshape(*lead, self.act_dim).float()

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

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        """``(members, ...)`` per-step rewards of the inputs :meth:`features` made."""
        return torch.stack([m(*x) for m in self.members])

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
    def predict(
        self,
        obs: np.ndarray | None,
        actions: np.ndarray | None,
        how: str = "mean",
        k: float = 1.0,
        frames: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(batch,)`` float32 rewards of a transition batch (``frames``: the frames after each step)."""
        return self.blend(self(*self.features(obs, actions, frames)), how, k).cpu().numpy().astype(np.float32)

    # --- preferences ------------------------------------------------------------------------------

    def segment_returns(self, seg: Segments) -> torch.Tensor:
        """``(members, n)`` predicted returns of ``n`` segments."""
        per_step = self(*self.features(seg.obs, seg.actions, seg.frames))  # (members, n, H)
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
    def reward_std(
        self, obs: np.ndarray | None, actions: np.ndarray | None, frames: np.ndarray | None = None
    ) -> np.ndarray:
        """``(batch,)`` std over members of the per-step reward (zero for one member)."""
        per = self(*self.features(obs, actions, frames))
        return (per.std(0) if per.shape[0] > 1 else torch.zeros_like(per[0])).cpu().numpy()

    @torch.no_grad()
    def entropy(self, left: Segments, right: Segments) -> np.ndarray:
        """``(n,)`` B-Pref's entropy score: each member's entropy of P(left preferred), averaged over members.

        Not the entropy of the members' mean probability: two members sure of opposite answers have
        a mean of 0.5 (the largest entropy) but each is certain (BPref ``reward_model.py``, ``get_entropy``).
        """
        logit = self.logits(left, right)
        # binary entropy from the logit, exact in float32: H = softplus(x) - x sigmoid(x)
        per_member = F.softplus(logit) - logit * torch.sigmoid(logit)
        return per_member.mean(0).cpu().numpy()

    @torch.no_grad()
    def accuracy(self, pairs: PreferencePairs, same_length: bool = False) -> float:
        """Fraction of the decided (left/right) pairs whose preferred side the ensemble mean predicts; NaN if none.

        A pair the model scores exactly equal counts one half (a constant reward is at chance, not
        right on every pair it happens to order one way).

        Args:
            pairs: Labelled pairs (equal and skipped ones are left out).
            same_length: Only the pairs whose two segments have equally many real steps. A segment
                padded past a terminal state sums fewer model rewards, so a positive constant reward
                orders pairs of different lengths "right" whenever the longer one has the larger return
                (every pair on CartPole); on pairs of equal length it is at chance (0.5).
        """
        t = pairs.targets()
        keep = (t == 0.0) | (t == 1.0)
        if same_length:
            keep &= pairs.left.valid().sum(1) == pairs.right.valid().sum(1)
        decided = np.flatnonzero(keep)
        if len(decided) == 0:
            return float("nan")
        sub = pairs.subset(decided)
        logit = self.logits(sub.left, sub.right).mean(0).cpu().numpy()
        right = np.where(logit == 0, 0.5, (logit > 0) == (t[decided] == 1.0))
        return float(np.mean(right))

    def fit_normalizer(self, obs: np.ndarray) -> None:
        """Standardise observations with the mean and std of ``(n, ...)`` observations (frames: nothing to do)."""
        if self.inputs != "obs":
            return
        o = np.asarray(obs, dtype=np.float64).reshape(-1, self.obs_dim)
        self.obs_mean.copy_(torch.as_tensor(o.mean(0), dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(o.std(0) + 1e-6, dtype=torch.float32))


class RewardModelFactory:
    """The settings of a reward ensemble, built once the env's spaces are known (module docstring).

    Args:
        members: Ensemble size.
        hidden: Hidden layer sizes of each member's MLP (the head, for the CNN).
        use_action: Feed the action too (False: a state-only reward).
        output: ``linear`` (unbounded per-step reward) or ``tanh`` (bounded to (-1, 1), as B-Pref's model).

    Attributes:
        needs: Extras each transition must carry for the model (``{"frame"}``: the frame after the step).
        rescale: The provider's ``rescale`` when it is left at None (see
            :class:`~rewards.preference.provider.PreferenceReward`).
    """

    inputs: str = "obs"
    needs: frozenset[str] = frozenset()
    rescale: bool = False

    def __init__(
        self, members: int = 3, hidden: Sequence[int] = (64, 64), use_action: bool = True, output: str = "linear"
    ) -> None:
        if isinstance(members, bool) or int(members) != members or int(members) < 1:
            raise ConfigError(f"reward.model.members={members!r} must be an integer >= 1")
        if isinstance(hidden, (int, str)) or any(int(h) < 1 for h in hidden):
            raise ConfigError(f"reward.model.hidden={hidden!r} must be a list of layer sizes >= 1, e.g. [64, 64]")
        if output not in OUTPUTS:
            raise ConfigError(f"reward.model.output={output!r} must be one of {', '.join(OUTPUTS)}")
        self.members, self.hidden, self.use_action = int(members), tuple(int(h) for h in hidden), bool(use_action)
        self.output = str(output)

    def auto_device(self) -> str:
        """Where ``device=auto`` puts the model: the CPU (small MLPs run faster there)."""
        return "cpu"

    def __call__(self, observation_space: gym.Space, action_space: gym.Space, frame_size: int = 64) -> RewardEnsemble:
        """A fresh ensemble for these spaces (``frame_size``: the side of the frames it sees, if it sees frames)."""
        return RewardEnsemble(
            observation_space,
            action_space,
            self.hidden,
            self.members,
            self.use_action,
            inputs=self.inputs,
            output=self.output,
        )

    def describe(self) -> str:
        """One line naming the model and its settings, e.g. ``MlpRewardModel(members=3, hidden=[64, 64], ...)``."""
        name = type(self).__name__
        return (
            f"{name}(members={self.members}, hidden={list(self.hidden)}, use_action={self.use_action}, "
            f"output={self.output})"
        )


class MlpRewardModel(RewardModelFactory):
    """``reward/model=mlp``: MLPs on the normalised flat observation (and the action).

    Differentiable in the observation, so planners can use it (:meth:`~rewards.base.RewardProvider.torch_reward`).
    """


class CnnRewardModel(RewardModelFactory):
    """``reward/model=cnn``: a small CNN on the frame rendered after each step (:class:`RewardEnsemble`).

    Its reward is not rescaled by default: with PEBBLE's pre-training (the default) the CNN learns
    better without it (CartPole, PPO, 3 seeds: 327.4 ± 101.5 without, 152.9 ± 29.9 with;
    ``docs/figures.md``). ``device=auto`` puts it on a GPU when there is one.

    Args:
        members, hidden, use_action, output: As :class:`RewardModelFactory`.
        channels: Channels of the three strided convolutions.
    """

    inputs = "frames"
    needs = frozenset({"frame"})

    def __init__(
        self,
        members: int = 3,
        hidden: Sequence[int] = (64, 64),
        use_action: bool = True,
        channels: Sequence[int] = (16, 32, 32),
        output: str = "linear",
    ) -> None:
        super().__init__(members, hidden, use_action, output)
        if isinstance(channels, (int, str)) or len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise ConfigError(
                f"reward.model.channels={channels!r} must be three channel counts >= 1, e.g. [16, 32, 32]"
            )
        self.channels = tuple(int(c) for c in channels)

    def auto_device(self) -> str:
        """Where ``device=auto`` puts the model: a GPU when there is one (convolutions on many frames)."""
        return "cuda" if torch.cuda.is_available() else "cpu"

    @override
    def __call__(self, observation_space: gym.Space, action_space: gym.Space, frame_size: int = 64) -> RewardEnsemble:
        return RewardEnsemble(
            observation_space,
            action_space,
            self.hidden,
            self.members,
            self.use_action,
            inputs=self.inputs,
            frame_size=frame_size,
            channels=self.channels,
            output=self.output,
        )

    @override
    def describe(self) -> str:
        return super().describe()[:-1] + f", channels={list(self.channels)})"


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
        lr: Adam's learning rate.
        weight_decay: Adam's weight decay.
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
        xl = model.features(*_side(pairs.left, answered))
        xr = model.features(*_side(pairs.right, answered))
        ml = torch.as_tensor(pairs.left.valid()[answered], dtype=torch.float32, device=dev)
        mr = torch.as_tensor(pairs.right.valid()[answered], dtype=torch.float32, device=dev)
    n, m = len(answered), len(model.members)
    boot = bootstrap_indices(n, m, generator).to(dev)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=float(lr), weight_decay=float(weight_decay))
    model.train()
    last = 0.0
    for _ in range(int(epochs)):
        order = torch.randperm(n, generator=generator).to(dev)
        total, count = 0.0, 0
        for s in range(0, n, int(batch_size)):
            pos = order[s : s + int(batch_size)]
            idx = boot[:, pos]  # (members, b)
            loss: torch.Tensor | None = None  # the members' losses, summed
            for j, member in enumerate(model.members):
                rl = (member(*(x[idx[j]] for x in xl)) * ml[idx[j]]).sum(-1)
                rr = (member(*(x[idx[j]] for x in xr)) * mr[idx[j]]).sum(-1)
                term = F.binary_cross_entropy_with_logits(rl - rr, targets[idx[j]])
                loss = term if loss is None else loss + term
            if loss is None:
                raise ConfigError("the reward ensemble has no members")
            opt.zero_grad(set_to_none=True)
            (loss / m).backward()
            opt.step()
            total += float(loss.detach()) / m * len(pos)
            count += len(pos)
        last = total / count
    model.eval()
    return {"loss_reward": last, "train_accuracy": model.accuracy(pairs.subset(answered))}


def bootstrap_indices(n: int, members: int, generator: torch.Generator) -> torch.Tensor:
    """``(members, n)`` int64: each member's bootstrap resample of ``n`` pairs (drawn with replacement, on the CPU)."""
    return torch.randint(n, (members, n), generator=generator, device="cpu")


def _side(seg: Segments, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    return seg.obs[index], seg.actions[index], None if seg.frames is None else seg.frames[index]


@overload
def shrink_frames(frames: np.ndarray, size: int) -> np.ndarray: ...
@overload
def shrink_frames(frames: torch.Tensor, size: int) -> torch.Tensor: ...
def shrink_frames(frames: np.ndarray | torch.Tensor, size: int) -> np.ndarray | torch.Tensor:
    """``(n, H, W, 3)`` uint8 frames -> ``(n, size, size, 3)`` uint8 (area averaging; squashed if not square).

    Returns the input itself when it already has that size; numpy in, numpy out.
    """
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    is_np = not torch.is_tensor(frames)
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    if len(x) == 0:
        out = torch.zeros(0, size, size, 3, dtype=torch.uint8, device=x.device)
    else:
        out = F.interpolate(x, size=(size, size), mode="area").round_().clamp_(0, 255).to(torch.uint8)
        out = out.permute(0, 2, 3, 1).contiguous()
    return out.cpu().numpy() if is_np else out


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.LeakyReLU())
    return nn.Sequential(*layers)


class _MlpMember(nn.Sequential):
    """Flat features -> one reward per step (a plain Sequential: checkpoints keep their key names; tanh has none)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], bounded: bool = False) -> None:
        super().__init__(*_mlp([in_dim, *[int(h) for h in hidden], 1]), *([nn.Tanh()] if bounded else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-1)


class _CnnMember(nn.Module):
    """Frame (uint8, ``(..., 3, S, S)``) and action features -> one reward per step."""

    CHUNK = 4096  # frames per forward pass when not training (held-out pairs, relabelling)

    def __init__(
        self, size: int, channels: Sequence[int], act_dim: int, hidden: Sequence[int], bounded: bool = False
    ) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.conv = nn.Sequential(
            nn.Conv2d(3, c1, 8, stride=4),
            nn.LeakyReLU(),
            nn.Conv2d(c1, c2, 4, stride=2),
            nn.LeakyReLU(),
            nn.Conv2d(c2, c3, 3, stride=1),
            nn.LeakyReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = int(self.conv(torch.zeros(1, 3, size, size)).shape[1])
        self.head = _mlp([n_flat + act_dim, *[int(h) for h in hidden], 1])
        if bounded:  # appended: the head's parameter names stay those of unbounded models
            self.head.append(nn.Tanh())

    def forward(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        lead = frames.shape[:-3]
        f = frames.reshape(-1, *frames.shape[-3:])
        a = actions.reshape(len(f), -1)
        step = max(len(f), 1) if torch.is_grad_enabled() else self.CHUNK
        out = [
            self.head(torch.cat([self.conv(f[s : s + step].float() / 127.5 - 1.0), a[s : s + step]], dim=-1))
            for s in range(0, max(len(f), 1), step)
        ]
        return torch.cat(out).reshape(lead)
