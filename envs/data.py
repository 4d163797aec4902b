"""The data layer: episodes and transitions in one flat type, and datasets in the Minari format.

:class:`Episodes` is the one in-memory form of recorded experience, whoever uses it: offline
agents (``dataset=<id>``), labelling with a reward provider (:mod:`rewards.labels`), collection and
relabelling scripts, preference segments cut for teachers (offline and the online preference
provider's recent episodes). Per-step extras (:mod:`envs.extras`, e.g. frames) travel with it.

Datasets are ordinary Minari datasets (``minari.load_dataset`` opens them too), kept under a
*root* directory: ``dataset_root=`` on the command line, else ``$MINARI_DATASETS_PATH``, else
Minari's own default ``~/.minari/datasets``. An id names a directory below the root, e.g.
``local/pendulum/random-v0`` -> ``<root>/local/pendulum/random-v0/data/``.

What rewardlab adds, in the dataset's ``metadata.json`` under ``"rewardlab"``: the env config
it was collected on, the collection recipe (policy, preset), and, for a relabelled dataset, which
reward provider wrote its ``rewards`` (the env's own reward is then kept in
``infos["true_reward"]``, so true and proxy stay side by side). The standard Minari keys
``ref_min_score`` / ``ref_max_score`` (random policy mean return / expert dataset mean return)
give normalised scores.

:func:`load` reads a dataset into one flat :class:`Episodes` (one observation array of
``steps + episodes`` rows: ``s_{t+1}`` is the row after ``s_t``, so observations are stored once,
not twice as ``obs`` + ``next_obs``), after checking that it is complete and consistent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from envs.errors import ConfigError

if TYPE_CHECKING:
    from rewards.base import TransitionBatch

TRUE_REWARD = "true_reward"  # infos key of the env's reward in a relabelled dataset
META = "rewardlab"  # our key in the dataset's metadata.json
DEFAULT_ROOT = Path("~/.minari/datasets")


def dataset_root(root: str | Path | None = None) -> Path:
    """The directory datasets live under (module docstring)."""
    if root:
        return Path(str(root)).expanduser().resolve()
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env).expanduser().resolve() if env else DEFAULT_ROOT.expanduser().resolve()


def _import_minari() -> Any:
    try:
        import minari
    except ImportError as exc:
        raise ConfigError(
            f"offline datasets need Minari ({exc}); install the offline extra: pip install -e '.[offline]'"
        ) from exc
    return minari


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Point Minari at ``root`` for the duration (Minari reads ``MINARI_DATASETS_PATH`` at each call)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def check_id(dataset_id: str) -> str:
    """Validate a dataset id: ``[namespace/]...name-v<N>`` as Minari parses it."""
    _import_minari()
    from minari.dataset.minari_dataset import parse_dataset_id

    if not dataset_id or not isinstance(dataset_id, str):
        raise ConfigError("a dataset id is required, e.g. local/pendulum/random-v0")
    try:
        parse_dataset_id(dataset_id)
    except (ValueError, AssertionError) as exc:
        raise ConfigError(
            f"dataset id {dataset_id!r} is not a Minari id ([namespace/]name-v<N>, e.g. local/pendulum/random-v0): {exc}"
        ) from None
    if ".." in dataset_id.split("/") or dataset_id.startswith("/"):
        raise ConfigError(f"dataset id {dataset_id!r} must be a relative name below the dataset root")
    return dataset_id


def list_datasets(root: str | Path | None = None) -> list[str]:
    """Ids of the datasets under ``root`` (directories holding ``data/metadata.json``)."""
    base = dataset_root(root)
    if not base.is_dir():
        return []
    return sorted(str(p.parent.parent.relative_to(base)) for p in base.rglob("data/metadata.json"))


def dataset_path(dataset_id: str, root: str | Path | None = None) -> Path:
    """The directory of a dataset (it may not exist)."""
    return dataset_root(root) / dataset_id


def preferences_dir(dataset_id: str, root: str | Path | None = None) -> Path:
    """Where a dataset's preference files (``<name>.npz``, experiments/prefs.py and label.py) live."""
    return dataset_path(dataset_id, root) / "preferences"


def _missing(dataset_id: str, root: Path) -> ConfigError:
    local = list_datasets(root)
    listing = ", ".join(local) if local else "none"
    return ConfigError(
        f"dataset {dataset_id!r} not found under {root}; local datasets: {listing} "
        "(make one with python experiments/collect.py env=E policy=random episodes=N name=<id>, "
        "or point dataset_root= / MINARI_DATASETS_PATH at another root)"
    )


def read_metadata(dataset_id: str, root: str | Path | None = None) -> dict[str, Any]:
    """The dataset's ``metadata.json`` (raises a :class:`ConfigError` listing local datasets if absent)."""
    base = dataset_root(root)
    file = dataset_path(dataset_id, base) / "data" / "metadata.json"
    if not file.exists():
        raise _missing(dataset_id, base)
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"dataset {dataset_id!r}: {file} cannot be read ({exc}); the dataset is corrupted") from None


# --- the flat, in-memory form ------------------------------------------------------------------


@dataclass
class Episodes:
    """Episodes as flat arrays: the one data type of offline datasets, labelling and preference data.

    Made by :func:`load` (a Minari dataset) or :meth:`from_episodes` (episodes in memory, e.g. the
    online preference provider's recent experience). Observations are stored once: an episode of
    ``T`` steps holds ``T + 1`` consecutive rows, so ``s_{t+1}`` is the row after ``s_t``.

    Attributes:
        observations: ``(steps + episodes, *obs_shape)``: each episode's ``T + 1`` observations in turn.
        obs_index: ``(steps,)`` int64 row of ``s_t`` in ``observations``; ``s_{t+1}`` is the next row.
        actions: ``(steps, *action_shape)``.
        true_rewards: ``(steps,)`` float32, the env's own reward.
        rewards: ``(steps,)`` float32, the rewards to learn from: as stored (the proxy of a relabelled
            dataset, else the true reward), or the labels of :func:`rewards.labels.label`.
        terminations: ``(steps,)`` bool. truncations: ``(steps,)`` bool.
        episode_starts: ``(episodes + 1,)`` int64 offsets of each episode's first transition.
        observation_space, action_space: The data's spaces.
        dataset_id: The dataset's id (or a description of where the episodes came from).
        metadata: The dataset's ``metadata.json`` (empty for episodes in memory).
        extras: ``{name: (steps, ...)}`` per-step extras (:mod:`envs.extras`; ``"frame"``: the frame
            after each step), loaded when asked for.
        components: ``{name: (steps,)}`` named reward terms per step: the env's ``reward_*`` terms
            (online) or the labelling provider's components.
        root: The dataset root it was loaded from (files that belong to it, such as preference
            pairs, live beside it); ``None`` for episodes in memory.
        labelled_by: The reward provider (class name) whose labels ``rewards`` holds; ``None``: the
            rewards as stored.
    """

    observations: np.ndarray
    obs_index: np.ndarray
    actions: np.ndarray
    true_rewards: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_starts: np.ndarray
    observation_space: gym.Space
    action_space: gym.Space
    dataset_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    components: dict[str, np.ndarray] = field(default_factory=dict)
    root: Path | None = None
    labelled_by: str | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_episodes(self) -> int:
        """Number of episodes."""
        return int(self.episode_starts.shape[0] - 1)

    @property
    def frames(self) -> np.ndarray | None:
        """``(steps, H, W, 3)`` uint8 frames after each step (``extras["frame"]``), or ``None``."""
        return self.extras.get("frame")

    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[Episode],
        observation_space: gym.Space,
        action_space: gym.Space,
        dataset_id: str = "episodes in memory",
    ) -> Episodes:
        """Concatenate :class:`Episode` s (each ``T + 1`` observations) into the flat form.

        An episode's ``infos`` may hold ``true_reward`` (the env's reward when ``rewards`` is a proxy),
        per-step extras under their names (:mod:`envs.extras`) and ``reward_components``
        (``{name: (T,)}``); what every episode holds is kept.

        Raises:
            ConfigError: No episodes, or an episode whose arrays disagree in length.
        """
        if not episodes:
            raise ConfigError(f"{dataset_id}: no episodes")
        lengths = np.array([len(e.actions) for e in episodes], dtype=np.int64)
        for i, (e, n) in enumerate(zip(episodes, lengths, strict=True)):
            if n == 0 or len(e.observations) != n + 1 or len(e.rewards) != n:
                raise ConfigError(
                    f"{dataset_id}: episode {i} has {len(e.observations)} observations, {n} actions, {len(e.rewards)} rewards"
                )
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = starts[:-1] + np.arange(len(episodes))
        infos = [e.infos or {} for e in episodes]

        def common(key: str) -> bool:
            return all(key in i for i in infos)

        rewards = np.concatenate([np.asarray(e.rewards, dtype=np.float32) for e in episodes])
        from envs.extras import known

        names = [k for k in known() if common(k)]
        comp_names = sorted(set.intersection(*(set(i.get("reward_components", {})) for i in infos)))
        return cls(
            observations=np.concatenate([e.observations for e in episodes]),
            obs_index=np.concatenate([r + np.arange(n) for r, n in zip(rows, lengths, strict=True)]).astype(np.int64),
            actions=np.concatenate([e.actions for e in episodes]),
            true_rewards=(
                np.concatenate([np.asarray(i[TRUE_REWARD], dtype=np.float32) for i in infos])
                if common(TRUE_REWARD)
                else rewards.copy()
            ),
            rewards=rewards,
            terminations=np.concatenate([np.asarray(e.terminations, dtype=bool) for e in episodes]),
            truncations=np.concatenate([np.asarray(e.truncations, dtype=bool) for e in episodes]),
            episode_starts=starts,
            observation_space=observation_space,
            action_space=action_space,
            dataset_id=dataset_id,
            extras={k: np.concatenate([np.asarray(i[k]) for i in infos]) for k in names},
            components={
                k: np.concatenate([np.asarray(i["reward_components"][k], dtype=np.float32) for i in infos])
                for k in comp_names
            },
        )

    def with_rewards(
        self, rewards: np.ndarray, components: Mapping[str, np.ndarray] | None = None, labelled_by: str | None = None
    ) -> Episodes:
        """The same episodes (arrays shared, not copied) with ``rewards`` (``(steps,)`` float32) to learn from.

        Raises:
            ValueError: ``rewards`` does not have one value per transition.
        """
        rewards = np.asarray(rewards, dtype=np.float32)
        if rewards.shape != (len(self),):
            raise ValueError(f"rewards of shape {rewards.shape} for {len(self)} transitions")
        return replace(self, rewards=rewards, components=dict(components or {}), labelled_by=labelled_by)

    def next_observations(self, index: np.ndarray) -> np.ndarray:
        """``s_{t+1}`` of the transitions ``index``."""
        return self.observations[self.obs_index[index] + 1]

    def episode_returns(self, rewards: np.ndarray | None = None) -> np.ndarray:
        """``(episodes,)`` sums of ``rewards`` (default: the true reward) per episode."""
        r = self.true_rewards if rewards is None else rewards
        return np.add.reduceat(r.astype(np.float64), self.episode_starts[:-1]) if len(r) else np.zeros(0)

    @property
    def reference_scores(self) -> tuple[float | None, float | None]:
        """``(ref_min_score, ref_max_score)``: random-policy and expert mean returns, where known."""
        lo, hi = self.metadata.get("ref_min_score"), self.metadata.get("ref_max_score")
        return (None if lo is None else float(lo)), (None if hi is None else float(hi))

    def episodes(
        self, rewards: np.ndarray | None = None, infos: Mapping[str, np.ndarray] | None = None
    ) -> list[Episode]:
        """The data as writable :class:`Episode` s (views, not copies).

        Args:
            rewards: ``(steps,)`` rewards to store (default: the true reward).
            infos: ``{key: (steps, ...)}`` per-step arrays to store in each episode's ``infos``.
        """
        r = self.true_rewards if rewards is None else rewards
        out = []
        for e in range(self.num_episodes):
            a, b = int(self.episode_starts[e]), int(self.episode_starts[e + 1])
            row = int(self.obs_index[a])
            out.append(
                Episode(
                    observations=self.observations[row : row + b - a + 1],
                    actions=self.actions[a:b],
                    rewards=np.asarray(r[a:b], dtype=np.float64),
                    terminations=self.terminations[a:b],
                    truncations=self.truncations[a:b],
                    infos={k: v[a:b] for k, v in (infos or {}).items()} or None,
                )
            )
        return out

    def transition_batches(self, chunk: int) -> Iterator[tuple[slice, TransitionBatch]]:
        """``(slice, TransitionBatch)`` over the data in chunks (for reward providers); env_reward is the true reward."""
        from rewards.base import TransitionBatch

        for start in range(0, len(self), chunk):
            sl = slice(start, min(start + chunk, len(self)))
            rows = self.obs_index[sl]
            yield (
                sl,
                TransitionBatch(
                    obs=self.observations[rows],
                    action=self.actions[sl],
                    next_obs=self.observations[rows + 1],
                    env_reward=self.true_rewards[sl],
                    terminated=self.terminations[sl],
                    truncated=self.truncations[sl],
                    extras={k: v[sl] for k, v in self.extras.items()},
                ),
            )


def _flat_dim(space: gym.Space, what: str, dataset_id: str) -> None:
    if not isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise ConfigError(
            f"dataset {dataset_id!r}: {what} space {space} is not supported (Box or Discrete; "
            "Dict/Tuple observations must be flattened by the env)"
        )


def _missing_extra(dataset_id: str, name: str) -> ConfigError:
    if name == "frame":
        return ConfigError(
            f"dataset {dataset_id!r} has no frames, which this reward provider needs; collect it with frames=true"
        )
    return ConfigError(f"dataset {dataset_id!r} has no {name!r} in its infos, which this reward provider needs")


def load(dataset_id: str, root: str | Path | None = None, extras: Collection[str] = ()) -> Episodes:
    """Read a whole dataset into :class:`Episodes`, checking it on the way.

    Args:
        dataset_id: The dataset's id below the root.
        root: The dataset root (module docstring).
        extras: Per-step extras to load as well (``infos[name]``, e.g. ``{"frame"}``); a dataset
            without one of them is refused.

    Raises:
        ConfigError: Missing dataset (the message lists the local ones), unsupported spaces, a missing
            extra, or a dataset that cannot be read completely (corrupted or partly written).
    """
    check_id(dataset_id)
    base = dataset_root(root)
    metadata = read_metadata(dataset_id, base)
    minari = _import_minari()
    where = dataset_path(dataset_id, base)
    wanted = sorted(set(extras))

    def corrupted(detail: str) -> ConfigError:
        return ConfigError(
            f"dataset {dataset_id!r} at {where} cannot be read completely ({detail}); it is corrupted or was "
            "not fully written: delete it and collect it again"
        )

    try:
        with _minari_root(base), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = minari.load_dataset(dataset_id)
            obs_space, act_space = ds.observation_space, ds.action_space
            _flat_dim(obs_space, "observation", dataset_id)
            _flat_dim(act_space, "action", dataset_id)
            total = int(ds.total_steps)
            n_eps = int(ds.total_episodes)
            obs_dtype = np.float32 if isinstance(obs_space, gym.spaces.Box) else np.int64
            act_dtype = np.float32 if isinstance(act_space, gym.spaces.Box) else np.int64
            observations = np.empty((total + n_eps, *obs_space.shape), dtype=obs_dtype)
            actions = np.empty((total, *act_space.shape), dtype=act_dtype)
            true_rewards = np.empty(total, dtype=np.float32)
            rewards = np.empty(total, dtype=np.float32)
            terminations = np.empty(total, dtype=bool)
            truncations = np.empty(total, dtype=bool)
            obs_index = np.empty(total, dtype=np.int64)
            starts = np.empty(n_eps + 1, dtype=np.int64)
            extra_rows: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
            t, e = 0, -1
            for e, ep in enumerate(ds.iterate_episodes()):
                n = len(ep.rewards)
                if n == 0 or len(ep.observations) != n + 1 or len(ep.actions) != n:
                    raise corrupted(
                        f"episode {e} has {len(ep.observations)} observations, {len(ep.actions)} actions, {n} rewards"
                    )
                if t + n > total:
                    raise corrupted(f"episodes hold more than the {total} steps the metadata declares")
                starts[e] = t
                row = t + e
                observations[row : row + n + 1] = ep.observations
                obs_index[t : t + n] = np.arange(row, row + n)
                actions[t : t + n] = ep.actions
                rewards[t : t + n] = ep.rewards
                infos = ep.infos or {}
                true_rewards[t : t + n] = infos[TRUE_REWARD] if TRUE_REWARD in infos else ep.rewards
                terminations[t : t + n] = ep.terminations
                truncations[t : t + n] = ep.truncations
                for name, rows_of in extra_rows.items():
                    if name not in infos:
                        raise _missing_extra(dataset_id, name)
                    rows_of.append(np.asarray(infos[name]))
                t += n
            if e + 1 != n_eps or t != total:
                raise corrupted(f"read {e + 1} episodes / {t} steps, the metadata declares {n_eps} / {total}")
            starts[n_eps] = total
    except ConfigError:
        raise
    except (OSError, KeyError, ValueError, AssertionError, TypeError, json.JSONDecodeError) as exc:
        raise corrupted(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    for name, arr in (
        ("observations", observations),
        ("actions", actions),
        ("rewards", rewards),
        ("true rewards", true_rewards),
    ):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise corrupted(f"non-finite {name}")
    return Episodes(
        observations=observations,
        obs_index=obs_index,
        actions=actions,
        true_rewards=true_rewards,
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        episode_starts=starts,
        observation_space=obs_space,
        action_space=act_space,
        dataset_id=dataset_id,
        metadata=metadata,
        extras={name: np.concatenate(rows_of) for name, rows_of in extra_rows.items()},
        root=base,
    )


def check_spaces(data: Episodes, observation_space: gym.Space, action_space: gym.Space) -> None:
    """Refuse a dataset whose spaces differ from the env's, printing both."""
    for what, theirs, ours in (
        ("observation", data.observation_space, observation_space),
        ("action", data.action_space, action_space),
    ):
        same = type(theirs) is type(ours) and theirs.shape == ours.shape
        # With the types equal, testing ``theirs`` as well only narrows it for the type checker.
        if same and isinstance(ours, gym.spaces.Discrete) and isinstance(theirs, gym.spaces.Discrete):
            same = int(theirs.n) == int(ours.n)
        if same and isinstance(ours, gym.spaces.Box) and isinstance(theirs, gym.spaces.Box):
            same = np.allclose(theirs.low, ours.low) and np.allclose(theirs.high, ours.high)
        if not same:
            raise ConfigError(
                f"dataset {data.dataset_id!r} does not match this env: the dataset's {what} space is {theirs}, "
                f"the env's is {ours}; use a dataset collected on this env (its recipe: {(data.metadata.get(META) or {}).get('env')})"
            )


# --- writing -----------------------------------------------------------------------------------


@dataclass
class Episode:
    """One episode to write: ``T + 1`` observations, ``T`` of everything else, optional infos arrays."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, Any] | None = None  # per-step arrays (T, ...) by key; "reward_components": {name: (T,)}
    seed: int | None = None


def write(
    dataset_id: str,
    episodes: Sequence[Episode],
    observation_space: gym.Space,
    action_space: gym.Space,
    root: str | Path | None = None,
    env_spec: Any = None,
    algorithm: str = "",
    description: str = "",
    ref_scores: tuple[float | None, float | None] = (None, None),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a Minari dataset atomically: it appears under the root complete, or not at all.

    Args:
        dataset_id: The new dataset's id (must not exist).
        episodes: The episodes.
        observation_space: The env's observation space.
        action_space: The env's action space.
        root: The dataset root.
        env_spec: The env's ``EnvSpec`` (lets ``MinariDataset.recover_environment`` rebuild it).
        algorithm: How the data was produced (Minari's ``algorithm_name``).
        description: One paragraph for humans.
        ref_scores: ``(ref_min_score, ref_max_score)`` where known.
        extra: rewardlab's metadata (stored under ``"rewardlab"``).

    Returns:
        The dataset's directory.
    """
    check_id(dataset_id)
    minari = _import_minari()
    from minari.data_collector import EpisodeBuffer

    base = dataset_root(root)
    final = dataset_path(dataset_id, base)
    if final.exists():
        raise ConfigError(f"dataset {dataset_id!r} already exists at {final}; choose another name (or version -v<N+1>)")
    if not episodes:
        raise ConfigError(f"dataset {dataset_id!r}: no episodes to write")
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=base))
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=ep.observations,
            actions=ep.actions,
            rewards=np.asarray(ep.rewards, dtype=np.float64),
            terminations=np.asarray(ep.terminations, dtype=bool),
            truncations=np.asarray(ep.truncations, dtype=bool),
            infos=dict(ep.infos or {}),
        )
        for i, ep in enumerate(episodes)
    ]
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Minari warns about unset eval_env, permalinks...
            ds = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=env_spec,
                observation_space=observation_space,
                action_space=action_space,
                algorithm_name=algorithm or "unknown",
                author="rewardlab",
                author_email="rewardlab@localhost",
                code_permalink="rewardlab (experiments/collect.py)",
                description=description or dataset_id,
            )
            lo, hi = ref_scores
            meta: dict[str, Any] = {META: dict(extra or {})}
            if lo is not None:
                meta["ref_min_score"] = float(lo)
            if hi is not None:
                meta["ref_max_score"] = float(hi)
            ds.storage.update_metadata(meta)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / dataset_id, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
