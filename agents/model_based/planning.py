"""Model-predictive planning over a learned ensemble: CEM, iCEM, and the return of action sequences.

**Return of a sequence** (:func:`evaluate_action_sequences`, mbrl-lib's entry point of that name). A
sequence ``a_{0:H}`` from the start state ``s_0`` is scored by ``K`` particles, each following one elite
member for the whole horizon (PETS' TS-inf, Chua et al. 2018; a sequence's particles take the members in
turn from a random one, :func:`particle_groups`):

    J(a) = 1/K sum_k sum_{t<H} alive_t^k r(s_t^k, a_t, s_{t+1}^k),   alive_{t+1}^k = alive_t^k and not done(s_t^k, a_t, s_{t+1}^k)

so the transition that terminates still earns its reward and nothing after it does. ``r`` is the run's
reward provider (:class:`PlanningReward`): its torch function where it has one (the env's closed form,
a learned preference network, a trusted ``reward=fn``), else one batched numpy call per planning step
for all particles (reward code through its sandbox). ``done`` is the env card's termination function.

**CEM** (Botev et al. 2013, as used by PETS). Per iteration: sample ``P`` sequences from
``N(mu, sigma^2)`` (truncated at 2 sigma, the variance capped so samples stay within the action bounds),
keep the ``k`` best, ``mu <- alpha mu + (1 - alpha) mean(elites)``, same for ``sigma^2``. The best sequence
seen is executed (its first action), and ``mu`` shifted by one step warm-starts the next state.

**iCEM** (Pinneri et al. 2020): CEM plus (1) coloured noise, samples ``mu + sigma * eps`` with ``eps`` of power
spectrum ``1/f^beta`` along time (beta = 0 white; 2 brown, smooth), (2) a population that shrinks per
iteration, ``P_i = max(P * gamma^-i, 2k)``, (3) a fraction of the elites kept into the next iteration and,
shifted by one step, into the next state's first iteration, (4) the mean added at the last iteration,
(5) the best sequence executed, the variance reset to its initial value at each state.

Optimisers are batched over independent problems (one per vector env): sequences are ``(E, P, H, A)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from envs.cards import bound_fn
from envs.errors import ConfigError
from rewards.base import RewardProvider, TransitionBatch, check_rewards

if TYPE_CHECKING:
    from agents.model_based.dynamics import EnsembleDynamics
    from envs.cards import EnvCard

TensorFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Objective = Callable[[torch.Tensor], torch.Tensor]
"""``(E, P, H, A)`` action sequences -> ``(E, P)`` values (higher is better)."""


class PlanningReward:
    """The run's reward on imagined transitions: ``(N, obs), (N, act), (N, obs) -> (N,)`` float32 tensors.

    Args:
        provider: The run's reward provider.
        env_reward: The env's own reward in closed form (filled into ``TransitionBatch.env_reward`` on
            the numpy path, for providers that build on it), or ``None``.
        termination: The env's termination function (``TransitionBatch.terminated`` on the numpy path).
        who: How refusals name the agent.
        obs_shape: The env's observation shape (the planner's flat vectors are reshaped to it for the reward).
        action_shape: The env's action shape.

    Raises:
        ConfigError: The provider scores extras (frames) a dynamics model cannot produce, or it is the
            env's own reward and the env has no closed form of it.
    """

    def __init__(
        self,
        provider: RewardProvider,
        env_reward: TensorFn | None,
        termination: TensorFn | None,
        who: str = "a model-based planner",
        obs_shape: tuple[int, ...] | None = None,
        action_shape: tuple[int, ...] | None = None,
    ) -> None:
        from rewards.env import check_imagined

        check_imagined(provider, who)
        self.provider, self.env_reward, self.termination, self.who = provider, env_reward, termination, who
        self.obs_shape, self.action_shape = obs_shape, action_shape
        self.numpy_calls = 0

    def __call__(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """``(N, obs_dim), (N, action_dim), (N, obs_dim)`` -> ``(N,)`` float32 rewards."""
        n = len(obs)
        if self.obs_shape is not None:
            obs, next_obs = obs.reshape(n, *self.obs_shape), next_obs.reshape(n, *self.obs_shape)
        if self.action_shape is not None:
            action = action.reshape(n, *self.action_shape)
        fn = self.provider.torch_reward()
        if fn is not None:
            return fn(obs, action, next_obs).to(torch.float32).reshape(len(obs))
        return self._numpy(obs, action, next_obs)

    def _numpy(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        n = len(obs)
        with torch.no_grad():
            env_r = self.env_reward(obs, action, next_obs) if self.env_reward is not None else None
            done = self.termination(obs, action, next_obs) if self.termination is not None else None
        batch = TransitionBatch(
            obs=obs.cpu().numpy(),
            action=action.cpu().numpy(),
            next_obs=next_obs.cpu().numpy(),
            env_reward=np.full(n, np.nan, np.float32) if env_r is None else env_r.cpu().numpy().astype(np.float32),
            terminated=np.zeros(n, bool) if done is None else done.cpu().numpy().astype(bool),
            truncated=np.zeros(n, bool),
        )
        self.numpy_calls += 1
        out = np.asarray(self.provider.reward(batch), dtype=np.float32)
        if out.shape == (n,) and not np.isfinite(out).all() and env_r is None:
            raise ConfigError(
                f"{type(self.provider).__name__} gave a non-finite reward on imagined transitions: it reads the env's own "
                f"reward, which {self.who} cannot know there (this env has no closed form of it)"
            )
        out = check_rewards(out, n, type(self.provider).__name__)
        return torch.as_tensor(out, device=obs.device)


def env_kwargs(env: Any) -> dict[str, Any]:
    """The kwargs the (vector) env was made with (its spec's), which bind a card's closed forms (:func:`envs.cards.bound_fn`)."""
    try:
        spec = env.get_attr("spec")[0]
    except (AttributeError, IndexError):
        return {}
    return dict(getattr(spec, "kwargs", {}) or {})


def termination_for(card: EnvCard | None, env: Any, why: str) -> TensorFn:
    """The env card's termination function, bound to the env's kwargs.

    Args:
        card: The env's card (``None``: an env rewardlab has no card for).
        env: The (vector) env.
        why: Who needs it and for what, for the refusal (``agent=pets needs ... to stop rewards in imagined rollouts``).

    Raises:
        ConfigError: The card has no termination function.
    """
    if card is None or card.termination_fn is None:
        name = card.id if card is not None else "this env"
        raise ConfigError(
            f"{why}, and {name} has none (envs.cards.EnvCard.termination_fn); add one to its card"
        )
    return bound_fn(card.termination_fn, env_kwargs(env))


def model_functions(
    reward: RewardProvider, card: EnvCard | None, env: Any, who: str, why: str
) -> tuple[PlanningReward, TensorFn]:
    """The run's reward on imagined transitions and the env's termination on the planner's flat tensors.

    Args:
        reward: The run's reward provider.
        card: The env's card (its closed-form reward, if any, is given to the provider's numpy path).
        env: The (vector) env: its spaces' shapes and the kwargs that bind the card's functions.
        who: How refusals name the agent (``agent=pets``).
        why: What the termination function is needed for (:func:`termination_for`).

    Returns:
        ``(reward_fn, termination_fn)``: :class:`PlanningReward` and ``(N, obs_dim), (N, action_dim),
        (N, obs_dim) -> (N,)`` bool.

    Raises:
        ConfigError: As :class:`PlanningReward` and :func:`termination_for`.
    """
    obs_shape, action_shape = tuple(env.observation_space.shape), tuple(env.action_space.shape)
    termination = termination_for(card, env, why)
    env_reward = bound_fn(card.reward_fn, env_kwargs(env)) if card is not None and card.reward_fn else None
    reward_fn = PlanningReward(reward, env_reward, termination, who, obs_shape, action_shape)
    return reward_fn, flat_fn(termination, obs_shape, action_shape)


def flat_fn(fn: TensorFn, obs_shape: tuple[int, ...], action_shape: tuple[int, ...]) -> TensorFn:
    """``fn`` on the env's shapes as a function of the planner's flat ``(N, dim)`` tensors."""

    def flat(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        n = len(obs)
        return fn(obs.reshape(n, *obs_shape), action.reshape(n, *action_shape), next_obs.reshape(n, *obs_shape))

    return flat


def particle_groups(
    sequences: int, particles: int, members: int, generator: torch.Generator | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign each sequence's particles to distinct members in turn, from a random member per sequence.

    Particle ``k`` of sequence ``b`` (flat index ``b * particles + k``) follows member
    ``(o_b + k) mod members``, ``o_b`` uniform: each particle's member is uniform (TS-inf), and a sequence's
    particles are spread over the members (stratified), so every sequence is scored by the same mix.

    Returns:
        ``groups`` ``(members, size)``: the particles of each member (rows padded with particle 0, whose
        extra results are dropped), and ``where`` ``(sequences * particles,)``: each particle's position
        in ``groups.reshape(-1)``.
    """
    n = sequences * particles
    offset = torch.randint(members, (sequences, 1), generator=generator, device=device)
    member = ((torch.arange(particles, device=device) + offset) % members).reshape(-1)
    order = torch.argsort(member, stable=True)
    counts = torch.bincount(member, minlength=members)
    size = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n, device=device) - starts[member[order]]
    groups = torch.zeros(members, size, dtype=torch.long, device=device)
    groups[member[order], slot] = order
    where = torch.empty(n, dtype=torch.long, device=device)
    where[order] = member[order] * size + slot
    return groups, where


@torch.no_grad()
def evaluate_action_sequences(
    actions: torch.Tensor,
    obs: torch.Tensor,
    model: EnsembleDynamics,
    reward_fn: TensorFn,
    termination_fn: TensorFn | None,
    particles: int,
    generator: torch.Generator | None,
    deterministic: bool = False,
) -> torch.Tensor:
    """Expected return of action sequences through the model (module docstring).

    Args:
        actions: ``(B, H, A)`` action sequences.
        obs: ``(B, obs_dim)`` start observation of each sequence, or ``(obs_dim,)`` shared by all.
        model: The ensemble (only its elites predict).
        reward_fn: ``(N, obs), (N, act), (N, obs) -> (N,)``.
        termination_fn: ``(N, obs), (N, act), (N, obs) -> (N,)`` bool, or ``None`` (never terminates).
        particles: Particles ``K`` per sequence.
        generator: Source of particle assignment and model noise.
        deterministic: Propagate the members' means (no sampling).

    Returns:
        ``(B,)`` mean return over particles; ``-1e10`` where a prediction was not finite.
    """
    b, h, _ = actions.shape
    obs = obs.expand(b, -1) if obs.dim() == 1 else obs
    n = b * particles
    state = obs.repeat_interleave(particles, dim=0)  # (N, obs_dim), particle j of sequence i at i*K + j
    groups, where = particle_groups(b, particles, len(model.elites), generator, actions.device)
    alive = torch.ones(n, dtype=torch.bool, device=actions.device)
    total = torch.zeros(n, device=actions.device)
    for t in range(h):
        act = actions[:, t].repeat_interleave(particles, dim=0)  # (N, A)
        grouped = model.sample(state[groups], act[groups], generator, deterministic)  # (E, n/E, obs_dim)
        nxt = grouped.reshape(-1, state.shape[-1])[where]
        r = reward_fn(state, act, nxt)
        total += torch.where(alive, r, torch.zeros_like(r))
        if termination_fn is not None:
            alive &= ~termination_fn(state, act, nxt).to(torch.bool)
        state = nxt
    returns = total.view(b, particles).mean(1)
    return torch.where(torch.isfinite(returns), returns, torch.full_like(returns, -1e10))


def coloured_noise(
    beta: float, shape: tuple[int, ...], generator: torch.Generator | None, device: Any = "cpu"
) -> torch.Tensor:
    """Gaussian noise with power spectrum ``1/f^beta`` along the last axis, unit variance per element.

    Random Fourier coefficients scaled by ``f^(-beta/2)`` (frequencies below ``1/T`` raised to ``1/T``)
    and transformed back (Timmer & Koenig 1995, as iCEM uses); the scale that gives unit variance is
    computed exactly from the spectrum.

    Args:
        beta: Exponent (0: white, 1: pink, 2: brown).
        shape: ``(..., T)``.
        generator: Source of the coefficients.
        device: Where the result lives.

    Returns:
        Noise of ``shape``.
    """
    steps = shape[-1]
    freqs = torch.fft.rfftfreq(steps, device=device).clamp_min(1.0 / steps)
    scale = freqs.pow(-beta / 2.0)
    coef = torch.randn((*shape[:-1], len(freqs), 2), generator=generator, device=device)
    real, imag = coef[..., 0] * scale, coef[..., 1] * scale
    imag[..., 0] = 0.0  # the mean term is real
    real[..., 0] *= math.sqrt(2.0)
    weight = torch.full_like(scale, 4.0)  # variance of an interior term in the signal, per scale^2
    weight[0] = 2.0
    if steps % 2 == 0:  # the Nyquist term is real
        imag[..., -1] = 0.0
        real[..., -1] *= math.sqrt(2.0)
        weight[-1] = 2.0
    sigma = torch.sqrt((weight * scale.pow(2)).sum()) / steps
    return torch.fft.irfft(torch.complex(real, imag), n=steps) / sigma


class CEM:
    """The cross-entropy method over action sequences, batched over ``E`` problems (module docstring).

    Args:
        horizon: Steps ``H`` per sequence.
        low: ``(A,)`` lower action bounds.
        high: ``(A,)`` upper action bounds.
        population: Sequences ``P`` sampled per iteration.
        elites: Best sequences ``k`` that refit the distribution.
        iterations: Refits per planning call.
        alpha: Weight of the old mean and variance in each refit.

    Raises:
        ConfigError: A size that is not positive, ``elites > population`` or ``alpha`` outside [0, 1).
    """

    def __init__(
        self,
        horizon: int,
        low: torch.Tensor,
        high: torch.Tensor,
        population: int,
        elites: int,
        iterations: int,
        alpha: float = 0.1,
    ) -> None:
        for name, value in (
            ("horizon", horizon),
            ("population", population),
            ("elites", elites),
            ("iterations", iterations),
        ):
            if int(value) <= 0:
                raise ConfigError(f"agent.{name}={value} must be a positive integer")
        if elites > population:
            raise ConfigError(f"agent.elites={elites} must not exceed agent.population={population}")
        if not 0.0 <= float(alpha) < 1.0:
            raise ConfigError(f"agent.alpha={alpha} must be in [0, 1)")
        self.horizon, self.population, self.num_elites, self.iterations = (
            int(horizon),
            int(population),
            int(elites),
            int(iterations),
        )
        self.low, self.high, self.alpha = low, high, float(alpha)
        self.init_var = ((high - low) ** 2 / 16.0).expand(self.horizon, -1)

    def initial_mean(self, problems: int) -> torch.Tensor:
        """``(E, H, A)``: the middle of the action bounds."""
        return ((self.low + self.high) / 2.0).expand(problems, self.horizon, -1).clone()

    def _sample(
        self, mean: torch.Tensor, var: torch.Tensor, count: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        var = torch.minimum(var, torch.minimum((mean - self.low) / 2.0, (self.high - mean) / 2.0).pow(2))
        eps = torch.randn((mean.shape[0], count, *mean.shape[1:]), generator=generator, device=mean.device)
        samples = mean.unsqueeze(1) + var.sqrt().unsqueeze(1) * eps.clamp(-2.0, 2.0)
        return torch.maximum(torch.minimum(samples, self.high), self.low)

    def _refit(
        self,
        samples: torch.Tensor,
        values: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
        best: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Elites of ``(E, P, H, A)`` samples by ``(E, P)`` values; momentum refit; track ``best = [values, sequences]``."""
        values = torch.where(torch.isnan(values), torch.full_like(values, -math.inf), values)
        top_values, top = values.topk(self.num_elites, dim=1)  # (E, k), sorted
        elites = samples.gather(1, top[:, :, None, None].expand(-1, -1, *samples.shape[2:]))
        mean = self.alpha * mean + (1 - self.alpha) * elites.mean(1)
        var = self.alpha * var + (1 - self.alpha) * elites.var(1, unbiased=False)
        better = top_values[:, 0] > best[0]
        best[0] = torch.where(better, top_values[:, 0], best[0])
        best[1] = torch.where(better[:, None, None], elites[:, 0], best[1])
        return mean, var, elites

    def optimize(
        self,
        objective: Objective,
        mean: torch.Tensor,
        generator: torch.Generator | None,
        kept: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Plan from the warm-start ``mean``.

        Args:
            objective: ``(E, P, H, A)`` -> ``(E, P)`` values.
            mean: ``(E, H, A)`` initial mean (the previous plan, shifted).
            generator: Source of the samples.
            kept: Unused by CEM (iCEM's shifted elites).

        Returns:
            ``best`` ``(E, H, A)`` (the best sequence seen), the final ``mean`` ``(E, H, A)`` and the last
            elites ``(E, k, H, A)``.
        """
        var = self.init_var.expand_as(mean).clone()
        best = [torch.full((mean.shape[0],), -math.inf, device=mean.device), mean.clone()]
        elites = mean.unsqueeze(1)
        for _ in range(self.iterations):
            samples = self._sample(mean, var, self.population, generator)
            mean, var, elites = self._refit(samples, objective(samples), mean, var, best)
        return best[1], mean, elites


class ICEM(CEM):
    """Improved CEM (Pinneri et al. 2020; module docstring); CEM's arguments, plus the following.

    Args:
        noise_beta: Exponent of the coloured noise (0: white; the paper: 2-3.5 on most tasks).
        population_decay: ``gamma`` in ``P_i = max(P gamma^-i, 2 k)``.
        keep_elites: Fraction of the elites carried into the next iteration and, shifted, the next state.

    Raises:
        ConfigError: CEM's, or a decay below 1, or ``keep_elites`` outside [0, 1].
    """

    def __init__(
        self,
        horizon: int,
        low: torch.Tensor,
        high: torch.Tensor,
        population: int,
        elites: int,
        iterations: int,
        alpha: float = 0.1,
        noise_beta: float = 2.0,
        population_decay: float = 1.25,
        keep_elites: float = 0.3,
    ) -> None:
        super().__init__(horizon, low, high, population, elites, iterations, alpha)
        if float(population_decay) < 1.0:
            raise ConfigError(f"agent.population_decay={population_decay} must be >= 1")
        if not 0.0 <= float(keep_elites) <= 1.0:
            raise ConfigError(f"agent.keep_elites={keep_elites} must be in [0, 1]")
        self.beta, self.decay = float(noise_beta), float(population_decay)
        self.num_kept = round(float(keep_elites) * self.num_elites)

    def _sample(
        self, mean: torch.Tensor, var: torch.Tensor, count: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        e, h, a = mean.shape
        eps = coloured_noise(self.beta, (e, count, a, h), generator, mean.device).transpose(-1, -2)
        samples = mean.unsqueeze(1) + var.sqrt().unsqueeze(1) * eps
        return torch.maximum(torch.minimum(samples, self.high), self.low)

    def optimize(
        self,
        objective: Objective,
        mean: torch.Tensor,
        generator: torch.Generator | None,
        kept: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CEM's :meth:`~CEM.optimize`; ``kept``: ``(E, k', H, A)`` elites of the previous state, shifted, or ``None``."""
        var = self.init_var.expand_as(mean).clone()
        best = [torch.full((mean.shape[0],), -math.inf, device=mean.device), mean.clone()]
        elites = mean.unsqueeze(1)
        for i in range(self.iterations):
            count = max(int(self.population * self.decay ** (-i)), 2 * self.num_elites)
            samples = self._sample(mean, var, count, generator)
            carry = kept if i == 0 else elites
            if carry is not None and self.num_kept:
                samples = torch.cat([samples, carry[:, : self.num_kept]], dim=1)
            if i == self.iterations - 1:
                samples = torch.cat([samples, mean.unsqueeze(1)], dim=1)
            mean, var, elites = self._refit(samples, objective(samples), mean, var, best)
        return best[1], mean, elites


class MPC:
    """Receding-horizon control with a CEM / iCEM optimiser: plan, execute the first action, shift.

    Args:
        optimizer: :class:`CEM` or :class:`ICEM`.
        objective_for: ``obs (E, obs_dim) -> objective`` (sequences ``(E, P, H, A)`` -> ``(E, P)``).
    """

    def __init__(self, optimizer: CEM, objective_for: Callable[[torch.Tensor], Objective]) -> None:
        self.optimizer = optimizer
        self.objective_for = objective_for
        self.mean: torch.Tensor | None = None  # (E, H, A) warm start
        self.kept: torch.Tensor | None = None  # (E, k, H, A) shifted elites (iCEM)

    def reset(self, problems: torch.Tensor | None = None) -> None:
        """Forget the warm start of the problems ``problems`` (``(E,)`` bool, episodes that ended), or of all."""
        if problems is None or self.mean is None:
            self.mean, self.kept = None, None
            return
        fresh = self.optimizer.initial_mean(len(problems)).to(self.mean.device)
        self.mean = torch.where(problems[:, None, None], fresh, self.mean)
        if self.kept is not None:
            self.kept = torch.where(problems[:, None, None, None], fresh.unsqueeze(1), self.kept)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(E, obs_dim)`` -> ``(E, A)``: the first action of the best plan; the plan is kept, shifted."""
        e = len(obs)
        if self.mean is None or self.mean.shape[0] != e:
            self.mean, self.kept = self.optimizer.initial_mean(e).to(obs.device), None
        best, mean, elites = self.optimizer.optimize(self.objective_for(obs), self.mean, generator, self.kept)
        tail = self.optimizer.initial_mean(e)[:, :1].to(obs.device)  # (E, 1, A)
        self.mean = torch.cat([mean[:, 1:], tail], dim=1)
        self.kept = torch.cat([elites[:, :, 1:], tail.unsqueeze(1).expand(-1, elites.shape[1], -1, -1)], dim=2)
        return best[:, 0]

    def state(self) -> dict[str, torch.Tensor | None]:
        """The warm start, for checkpoints."""
        return {"mean": self.mean, "kept": self.kept}

    def load_state(self, state: dict[str, torch.Tensor | None]) -> None:
        """Restore :meth:`state`."""
        self.mean, self.kept = state["mean"], state["kept"]
