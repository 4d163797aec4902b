#!/usr/bin/env python
"""Record an offline dataset (Minari format) from an env and a policy.

    python experiments/collect.py env=E policy=random|RUN_DIR|scripted:NAME|pkg.module:fn episodes=N|steps=N name=<id>
                                  [recipe=random|medium|expert|medium-replay|medium-expert] [dataset_root=DIR]

Every transition keeps the env's own (true) reward, ``terminations`` and ``truncations`` apart,
and the real final observation of each episode. Recipes (``recipe=``) follow D4RL's recipe on our envs:

* ``random``: uniform random actions (``policy=random``);
* ``medium`` / ``expert``: rollouts of a trained run's policy (``policy=RUN_DIR``, sampled actions);
  a medium policy is a run stopped early, or an earlier checkpoint (``checkpoint=step_N``) at
  roughly a third of the expert's return. ``expert`` stores its own mean return as ``ref_max_score``;
* ``medium-replay``: the replay buffer of a run (``policy=RUN_DIR``, an off-policy agent trained
  with ``reward=env``), i.e. everything it saw while learning up to that checkpoint;
* ``medium-expert``: the concatenation of ``sources=[medium id, expert id]``.

Normalised scores need ``ref_min_score`` (the mean return of random actions, measured here over
``ref_episodes`` episodes) and ``ref_max_score`` (the expert dataset's mean return: ``recipe=expert``,
or ``expert=<expert dataset id>`` for the others).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np

from envs.errors import ConfigError
from experiments.cli import check_int, compose_script, user_errors

RECIPES = ("random", "medium", "expert", "medium-replay", "medium-expert")


def _validate(cfg: Any) -> None:
    from envs.data import check_id

    if not cfg.name:
        raise ConfigError("collect.py needs name=<dataset id>, e.g. name=local/pendulum/random-v0")
    check_id(str(cfg.name))
    if cfg.recipe is not None and cfg.recipe not in RECIPES:
        raise ConfigError(f"recipe={cfg.recipe!r} must be one of {', '.join(RECIPES)} (or null)")
    if cfg.recipe == "medium-expert":
        if not cfg.sources or len(cfg.sources) < 2:
            raise ConfigError("recipe=medium-expert needs sources=[<medium id>,<expert id>]")
        return
    if cfg.recipe == "medium-replay":
        if str(cfg.policy) == "random":
            raise ConfigError("recipe=medium-replay reads a run's replay buffer: give policy=<run dir>")
        return
    if (cfg.episodes is None) == (cfg.steps is None):
        raise ConfigError("give exactly one of episodes=N or steps=N")
    check_int(cfg, "episodes", 1, allow_none=True)
    check_int(cfg, "steps", 1, allow_none=True)
    check_int(cfg, "n_envs", 1)
    check_int(cfg, "seed", 0)
    check_int(cfg, "ref_episodes", 0)
    if cfg.recipe == "random" and str(cfg.policy) != "random":
        raise ConfigError("recipe=random records uniform random actions: policy=random")
    if cfg.recipe in ("medium", "expert") and str(cfg.policy) == "random":
        raise ConfigError(f"recipe={cfg.recipe} records a trained policy: give policy=<run dir>")


class _Policy:
    """Batched actions from random sampling, a scripted function, or a run's agent.

    ``scripted:<name>`` is a policy on the env's card (:mod:`envs.cards`); ``package.module:function``
    any function mapping ``(batch, *obs_shape)`` observations to a batch of actions.
    """

    def __init__(self, cfg: Any, env_cfg: dict[str, Any], device: str) -> None:
        self.kind = "random"
        self.fn: Callable[..., Any] | None = None
        self.agent: Any = None
        self.run_dir: Path | None = None
        self.n_envs = int(cfg.n_envs)
        self.deterministic = bool(cfg.deterministic)
        policy = str(cfg.policy)
        if policy == "random":
            return
        if policy.startswith("scripted:"):  # a scripted policy on the env's card (envs.cards)
            from envs.cards import card

            policies, name = card(str(env_cfg.get("id"))).policies, policy.split(":", 1)[1]
            if name not in policies:
                offered = ", ".join(f"scripted:{k}" for k in sorted(policies)) or "none"
                raise ConfigError(f"policy={policy}: env {env_cfg.get('name')} has no scripted policy {name!r}; it offers: {offered}")
            self.kind, self.fn, self.label = "scripted", policies[name], policy
            return
        if ":" in policy and not Path(policy).expanduser().exists():
            from rewards.fn import resolve_target

            self.kind, self.fn = "scripted", resolve_target(policy, what="policy")
            self.label = f"{self.fn.__module__}:{self.fn.__name__}"
            return
        from experiments.policies import run_checkpoint, run_n_envs

        self.kind = "run"
        self.run_dir, self.checkpoint = run_checkpoint(policy, env_cfg, str(cfg.checkpoint))
        self.n_envs = run_n_envs(self.run_dir)
        self.device = device

    def bind(self, venv: Any, seed: int) -> None:
        self.space = venv.action_space
        self.space.seed(seed)
        if self.run_dir is not None:  # kind "run"
            from experiments.policies import load_agent

            self.agent = load_agent(self.run_dir, self.checkpoint, venv, seed, self.device)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.kind == "random":
            return np.stack([self.space.sample() for _ in range(len(obs))])
        if self.fn is not None:  # kind "scripted"
            return np.asarray(self.fn(obs))
        return self.agent.act(obs, deterministic=self.deterministic)

    def describe(self) -> str:
        if self.kind == "run":
            return f"{self.run_dir} ({self.checkpoint.name})"
        return "random" if self.kind == "random" else self.label


class Rollouts(NamedTuple):
    """Recorded episodes and which of them ran to their end.

    Attributes:
        episodes: The episodes (``envs.data.Episode``), in the order they finished.
        complete: ``(len(episodes),)`` bool: False for an episode cut by the ``steps`` budget (stored,
            marked truncated, but its return is not an episode return: left out of reference scores).
    """

    episodes: list[Any]
    complete: np.ndarray

    def returns(self) -> np.ndarray:
        """``(complete episodes,)`` true returns of the episodes that ran to their end."""
        return np.array([e.rewards.sum() for e, ok in zip(self.episodes, self.complete, strict=True) if ok])


def rollouts(
    env_cfg: dict[str, Any],
    policy: _Policy,
    episodes: int | None,
    steps: int | None,
    seed: int,
    frames: bool,
    generation: int = 0,
) -> Rollouts:
    """Episodes of ``policy`` on vector envs (module docstring); the env's reward is the reward.

    With ``episodes=N`` each env contributes a fixed quota (env ``i``: ``(N + i) // n_envs``, as the
    evaluation does), so short episodes are not favoured: the statistics do not depend on ``n_envs``.
    With ``steps=N`` the episodes still running at the budget are kept, cut and marked (``complete``).
    The envs are reset from the run's ``collect`` seed stream (``generation`` tells apart several
    collections of one seed).
    """
    from tqdm import tqdm

    from envs.data import Episode
    from envs.make import env_seeds, make_vec_env, seed_vec_env
    from experiments.evaluation import array_obs
    from rewards.env import EnvReward
    from rewards.wrapper import RewardVecEnv

    base = make_vec_env(env_cfg, policy.n_envs, seed, extras={"frame"} if frames else (), stream="collect")
    seed_vec_env(base, env_seeds(seed, policy.n_envs, "collect", generation))
    venv = RewardVecEnv(base, EnvReward())
    policy.bind(venv, seed)
    n = venv.num_envs
    quota = np.array([(episodes + i) // n for i in range(n)]) if episodes is not None else np.full(n, -1)
    kept = np.zeros(n, dtype=np.int64)
    bufs: list[dict[str, list]] = [
        {"obs": [], "act": [], "rew": [], "term": [], "trunc": [], "frame": []} for _ in range(n)
    ]
    out: list[Episode] = []
    complete: list[bool] = []

    def finish(i: int, last_obs: np.ndarray, cut: bool = False) -> None:
        b = bufs[i]
        if cut:
            b["trunc"][-1] = True
        complete.append(not cut)
        infos = {"frame": np.stack(b["frame"])} if frames else None
        out.append(
            Episode(
                observations=np.stack([*b["obs"], last_obs]),
                actions=np.stack(b["act"]),
                rewards=np.asarray(b["rew"], dtype=np.float64),
                terminations=np.asarray(b["term"], dtype=bool),
                truncations=np.asarray(b["trunc"], dtype=bool),
                infos=infos,
            )
        )
        bufs[i] = {k: [] for k in b}

    total = episodes if episodes is not None else steps
    recorded = 0
    obs = venv.reset()
    with tqdm(
        total=total, desc="collecting", unit="episode" if episodes else "step", disable=not sys.stderr.isatty()
    ) as bar:
        while True:
            actions = policy(obs)
            step_obs, _, dones, infos = venv.step(actions)
            next_obs = array_obs(step_obs)
            for i in range(n):
                b = bufs[i]
                b["obs"].append(obs[i])
                b["act"].append(actions[i])
                b["rew"].append(infos[i]["true_reward"])
                truncated = bool(infos[i].get("TimeLimit.truncated", False))
                b["term"].append(bool(dones[i]) and not truncated)
                b["trunc"].append(truncated)
                if frames:
                    b["frame"].append(infos[i]["frame"])
            recorded += n if steps is not None else 0
            for d in np.flatnonzero(dones):
                if episodes is not None and kept[d] >= quota[d]:
                    bufs[int(d)] = {k: [] for k in bufs[int(d)]}  # past this env's quota: not recorded
                    continue
                finish(int(d), infos[d]["terminal_observation"])
                kept[d] += 1
                if episodes is not None:
                    bar.update(1)
            if steps is not None:
                bar.update(n)
            if (episodes is not None and (kept >= quota).all()) or (steps is not None and recorded >= steps):
                break
            obs = next_obs
        if steps is not None:  # episodes still running: cut by the budget, marked truncated
            for i in range(n):
                if bufs[i]["obs"]:
                    finish(i, next_obs[i], cut=True)
    if policy.agent is not None:
        policy.agent.close()
    venv.close()
    return Rollouts(out, np.array(complete, dtype=bool))


def replay_episodes(run_dir: Path, checkpoint: Path, action_space: Any) -> list[Any]:
    """The episodes in a run's saved replay buffer (oldest first; a wrapped buffer's first, partial one dropped).

    Each episode ends with its real last observation and keeps terminations and truncations apart:
    from ``next_observations`` and ``timeouts`` in SB3's plain buffer; in a memory-optimised one
    (``optimize_memory_usage``), ``s'`` is the next row's ``s`` and the last observation of each
    episode and its truncation come from the table the buffer keeps beside
    (:class:`agents.sb3.CompactReplayBuffer`).
    """
    import gymnasium as gym
    from omegaconf import OmegaConf

    from envs.data import Episode

    reward = OmegaConf.load(run_dir / "config.yaml").reward.get("name")
    if reward != "env":
        raise ConfigError(
            f"recipe=medium-replay: {run_dir} was trained with reward={reward}, so its replay buffer holds that "
            "proxy, not the true reward; collect replay data from a reward=env run"
        )
    file = checkpoint / "agent" / "replay_buffer.npz"
    if not file.exists():
        raise ConfigError(
            f"recipe=medium-replay: {checkpoint} has no replay buffer (off-policy agents with save_replay_buffer=true)"
        )
    import json

    with np.load(file) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        arrays = {k: data[k] for k in ("observations", "actions", "rewards", "dones", "timeouts")}
        stored_next = data["next_observations"] if "next_observations" in data.files else None
        ends = {k: data[k] for k in ("ends_rows", "ends_envs", "ends_obs", "ends_truncated") if k in data.files}
    rows = len(arrays["dones"])
    observations = arrays["observations"]
    truncated = (arrays["dones"] > 0) & (arrays["timeouts"] > 0)
    if stored_next is None:  # memory-optimised: s' is the next row's s (one extra row unless the buffer wrapped)
        if not ends:
            raise ConfigError(
                f"recipe=medium-replay: the replay buffer of {checkpoint} was saved without the last observation "
                "of each episode (optimize_memory_usage with stable-baselines3's own buffer); collect from a run "
                "made with this version of rewardlab, or without optimize_memory_usage"
            )
        stored_next = observations[(np.arange(rows) + 1) % len(observations)]
        stored_next[ends["ends_rows"], ends["ends_envs"]] = ends["ends_obs"]
        truncated[ends["ends_rows"], ends["ends_envs"]] |= ends["ends_truncated"]
    arrays["observations"], arrays["next_observations"], arrays["truncated"] = observations[:rows], stored_next, truncated
    if meta["full"]:  # oldest first
        arrays = {k: np.roll(v, -meta["pos"], axis=0) for k, v in arrays.items()}
    actions = arrays["actions"]
    if isinstance(action_space, gym.spaces.Box):  # SB3 stores squashed actions in [-1, 1]
        low, high = action_space.low, action_space.high
        actions = low + (actions + 1.0) * 0.5 * (high - low)
    out: list[Episode] = []
    for j in range(arrays["dones"].shape[1]):
        episode_ends = np.flatnonzero(arrays["dones"][:, j])
        start = 0
        for k, end in enumerate(episode_ends):
            if not (meta["full"] and k == 0):
                sl = slice(start, end + 1)
                cut = arrays["truncated"][sl, j]
                done = arrays["dones"][sl, j].astype(bool)
                out.append(
                    Episode(
                        observations=np.concatenate(
                            [arrays["observations"][sl, j], arrays["next_observations"][end : end + 1, j]]
                        ),
                        actions=actions[sl, j],
                        rewards=arrays["rewards"][sl, j].astype(np.float64),
                        terminations=done & ~cut,
                        truncations=done & cut,
                    )
                )
            start = int(end) + 1
    if not out:
        raise ConfigError(f"recipe=medium-replay: the replay buffer of {checkpoint} holds no finished episode")
    return out


def _returns(episodes: list[Any]) -> np.ndarray:
    return np.array([e.rewards.sum() for e in episodes])


def random_score(env_cfg: dict[str, Any], episodes: int, seed: int) -> float:
    """Mean true return of uniform random actions over ``episodes`` episodes (D4RL's ``ref_min_score``)."""
    from omegaconf import OmegaConf

    policy = _Policy(
        OmegaConf.create({"policy": "random", "n_envs": min(4, episodes), "deterministic": False}), env_cfg, "cpu"
    )
    return float(rollouts(env_cfg, policy, episodes, None, seed, frames=False, generation=1).returns().mean())


def main(argv: list[str]) -> dict[str, Any]:
    """Record a dataset as the recipe says and write it under the dataset root (module docstring).

    Args:
        argv: ``key=value`` overrides of ``experiments/conf/collect.yaml`` (``env=``, ``policy=``,
            ``episodes=`` or ``steps=``, ``name=``, ``recipe=`` ...).

    Returns:
        ``dataset`` (its id), ``path``, ``episodes``, ``steps``, ``return_mean``, ``return_std``,
        ``ref_min_score``, ``ref_max_score`` (``None`` when unknown) and ``seconds``.

    Raises:
        ConfigError: A bad setting, a dataset name already taken, or a policy or source that does
            not fit the env or the recipe.
    """
    cfg = compose_script(argv, "collect", "collect.py")
    _validate(cfg)
    import torch

    from envs import data as ds
    from envs.make import make_env
    from experiments.cli import config_dict, resolve_device

    torch.set_num_threads(1)
    t0 = time.time()
    env_cfg = config_dict(cfg.env)
    name, root = str(cfg.name), cfg.dataset_root
    if ds.dataset_path(name, root).exists():
        raise ConfigError(
            f"dataset {name!r} already exists under {ds.dataset_root(root)}; choose another name (or version -v<N+1>)"
        )
    probe = make_env(env_cfg)
    obs_space, act_space, spec = probe.observation_space, probe.action_space, probe.spec
    probe.close()
    recipe: dict[str, Any] = {"recipe": cfg.recipe, "policy": str(cfg.policy), "seed": int(cfg.seed)}
    lo = hi = None
    cut = 0
    if cfg.recipe == "medium-expert":
        sources = [str(s) for s in cfg.sources]
        episodes = []
        for sid in sources:
            part = ds.load(sid, root)
            ds.check_spaces(part, obs_space, act_space)
            episodes += part.episodes()
            lo_s, hi_s = part.reference_scores
            lo, hi = lo if lo is not None else lo_s, hi if hi is not None else hi_s
        recipe["sources"] = sources
        policy_name = "+".join(sources)
    elif cfg.recipe == "medium-replay":
        from experiments.policies import run_checkpoint

        run_dir, ckpt = run_checkpoint(str(cfg.policy), env_cfg, str(cfg.checkpoint))
        episodes = replay_episodes(run_dir, ckpt, act_space)
        recipe["checkpoint"] = ckpt.name
        policy_name = f"replay buffer of {run_dir} ({ckpt.name})"
    else:
        policy = _Policy(cfg, env_cfg, resolve_device(str(cfg.device)))
        policy_name = policy.describe()
        if policy.kind == "run":
            recipe["checkpoint"] = policy.checkpoint.name
        recorded = rollouts(env_cfg, policy, cfg.episodes, cfg.steps, int(cfg.seed), bool(cfg.frames))
        episodes, cut = recorded.episodes, int((~recorded.complete).sum())
    # returns of complete episodes only: a piece cut by the steps= budget has no episode return
    returns = recorded.returns() if cfg.recipe not in ("medium-expert", "medium-replay") else _returns(episodes)
    if not len(returns):
        raise ConfigError(
            f"no episode ran to its end within steps={cfg.steps}: give more steps, or episodes=N (the returns and "
            "reference scores need complete episodes)"
        )
    if cfg.recipe != "medium-expert":
        if str(cfg.policy) == "random":
            lo = float(returns.mean())
        elif int(cfg.ref_episodes) > 0:
            lo = random_score(env_cfg, int(cfg.ref_episodes), int(cfg.seed))
        if cfg.recipe == "expert":
            hi = float(returns.mean())
    if cfg.expert:
        hi = ds.read_metadata(str(cfg.expert), root).get("ref_max_score")
        if hi is None:
            raise ConfigError(f"expert={cfg.expert}: that dataset has no ref_max_score (collect it with recipe=expert)")
    recipe["deterministic"] = bool(cfg.deterministic)
    path = ds.write(
        name,
        episodes,
        obs_space,
        act_space,
        root=root,
        env_spec=spec,
        algorithm=f"{cfg.recipe or 'custom'}: {policy_name}",
        description=f"rewardlab {cfg.recipe or 'custom'} dataset on {env_cfg['name']} ({env_cfg['id']}), policy {policy_name}",
        ref_scores=(lo, hi),
        extra={"env": env_cfg, "recipe": recipe, "frames": bool(cfg.frames), "labels": None},
    )
    steps = int(sum(len(e.rewards) for e in episodes))
    result = {
        "dataset": name,
        "path": str(path),
        "episodes": len(episodes),
        "steps": steps,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "ref_min_score": lo,
        "ref_max_score": hi,
        "seconds": round(time.time() - t0, 1),
    }
    norm = ""
    if lo is not None and hi is not None and hi != lo:
        norm = f", normalised {100 * (returns.mean() - lo) / (hi - lo):.1f}"
    pieces = f" ({cut} cut by the steps budget, left out of the returns)" if cut else ""
    print(
        f"{name}: {len(episodes)} episodes{pieces}, {steps} steps, return {returns.mean():.2f} ± {returns.std():.2f}{norm} "
        f"(ref_min {lo}, ref_max {hi}) -> {path} in {result['seconds']} s",
        file=sys.stderr,
    )
    return result


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
