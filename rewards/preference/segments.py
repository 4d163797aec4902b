"""Trajectory segments and labelled pairs of them.

A *segment* is ``length`` consecutive transitions of one episode. A *pair* is two segments and a
label saying which one the teacher prefers. Labels are small integers (``LEFT``, ``RIGHT``,
``EQUAL``, ``SKIP``); the Bradley-Terry target of a label is 1 (left preferred), 0 (right), 0.5
(equal), and skipped pairs carry no target (they are stored, because a skip is an answer too, and
left out of training).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from envs.errors import ConfigError

if TYPE_CHECKING:
    from envs.data import Episodes

LEFT, RIGHT, EQUAL, SKIP = 0, 1, 2, 3
LABEL_NAMES = {LEFT: "left", RIGHT: "right", EQUAL: "equal", SKIP: "skip"}
#: Probability that the left segment is preferred, per label (NaN: no target).
TARGET = np.array([1.0, 0.0, 0.5, np.nan], dtype=np.float32)


@dataclass
class Segments:
    """``n`` segments of ``length`` transitions.

    Attributes:
        obs: ``(n, length, *obs_shape)`` observations before each action.
        actions: ``(n, length, *action_shape)``.
        next_obs: ``(n, length, *obs_shape)``.
        true_rewards: ``(n, length)`` float32, the env's reward.
        components: ``{name: (n, length)}`` named reward components where known (HERON's teacher reads them).
        episode: ``(n,)`` int64 index of the source episode. start: ``(n,)`` int64 first step in that episode.
        frames: ``(n, length, H, W, 3)`` uint8 frames after each step, when the source has them.
        mask: ``(n, length)`` bool, False for padding after a terminal state (the absorbing state:
            true reward 0, not scored by reward models); None: every step is real.
    """

    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    true_rewards: np.ndarray
    episode: np.ndarray
    start: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    frames: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.true_rewards.shape[0])

    @property
    def length(self) -> int:
        """Transitions per segment."""
        return int(self.true_rewards.shape[1])

    def take(self, index: np.ndarray) -> Segments:
        """The segments ``index`` (a copy)."""
        return Segments(
            obs=self.obs[index],
            actions=self.actions[index],
            next_obs=self.next_obs[index],
            true_rewards=self.true_rewards[index],
            episode=self.episode[index],
            start=self.start[index],
            components={k: v[index] for k, v in self.components.items()},
            frames=None if self.frames is None else self.frames[index],
            mask=None if self.mask is None else self.mask[index],
        )

    def valid(self) -> np.ndarray:
        """``(n, length)`` bool: the real (not padded) steps."""
        return np.ones(self.true_rewards.shape, dtype=bool) if self.mask is None else self.mask


def concat(a: Segments, b: Segments) -> Segments:
    """``a`` then ``b`` (components both have; a mask if either has one)."""
    frames = None if a.frames is None or b.frames is None else np.concatenate([a.frames, b.frames])
    return Segments(
        obs=np.concatenate([a.obs, b.obs]),
        actions=np.concatenate([a.actions, b.actions]),
        next_obs=np.concatenate([a.next_obs, b.next_obs]),
        true_rewards=np.concatenate([a.true_rewards, b.true_rewards]),
        episode=np.concatenate([a.episode, b.episode]),
        start=np.concatenate([a.start, b.start]),
        components={k: np.concatenate([a.components[k], b.components[k]]) for k in a.components if k in b.components},
        frames=frames,
        mask=None if a.mask is None and b.mask is None else np.concatenate([a.valid(), b.valid()]),
    )


def valid_starts(
    lengths: np.ndarray | int, terminated: np.ndarray | bool, length: int, pad_terminal: bool = True
) -> np.ndarray:
    """Per episode, how many segment start positions it offers (see :func:`cut_segments`).

    Args:
        lengths: ``(episodes,)`` transitions per episode (an int: one episode, the result then 0-d).
        terminated: ``(episodes,)`` bool, the episode ended in a terminal state.
        length: Transitions per segment.
        pad_terminal: A terminated episode offers every start (windows padded past its end).
    """
    lengths = np.asarray(lengths)
    return np.where(pad_terminal & np.asarray(terminated), lengths, np.maximum(lengths - int(length) + 1, 0))


def cut_segments(
    data: Episodes,
    length: int,
    n: int,
    rng: np.random.Generator,
    components: dict[str, np.ndarray] | None = None,
    pad_terminal: bool = True,
) -> Segments:
    """``n`` segments drawn uniformly over the valid start positions of an offline dataset.

    A truncated episode offers only windows inside it (its future is unknown). With
    ``pad_terminal``, a terminated episode offers every start: a window that crosses its end is
    padded with the absorbing state (last observation, zero action, true reward 0, ``mask`` False),
    so a segment that fails early has a lower return than one that does not (the only signal in
    envs such as CartPole, whose reward is 1 per step).

    Args:
        data: The episodes to cut from (:class:`envs.data.Episodes`).
        length: Transitions per segment.
        n: Number of segments.
        rng: Randomness for the start positions.
        components: ``{name: (steps,)}`` per-transition reward components to cut alongside (default:
            ``data.components``).
        pad_terminal: Let segments run past a terminal state (above).

    Raises:
        ConfigError: No episode offers a segment of ``length`` steps.
    """
    h = int(length)
    components = data.components if components is None else components
    starts, ends = data.episode_starts[:-1], data.episode_starts[1:]
    lengths = ends - starts
    terminated = data.terminations[np.maximum(ends - 1, 0)] & (lengths > 0)
    room = valid_starts(lengths, terminated, h, pad_terminal)
    ok = np.flatnonzero(room > 0)
    if len(ok) == 0:
        longest = int(lengths.max()) if len(lengths) else 0
        raise ConfigError(
            f"segments of {length} steps: no episode of {data.dataset_id!r} is that long (longest {longest}); "
            "give a smaller segment length"
        )
    weights = room[ok].astype(np.float64)
    ep = ok[rng.choice(len(ok), size=int(n), p=weights / weights.sum())]
    offset = (rng.random(int(n)) * room[ep]).astype(np.int64)
    pos = offset[:, None] + np.arange(h)[None, :]  # (n, H) step within the episode
    real = pos < lengths[ep][:, None]
    idx = starts[ep][:, None] + np.minimum(pos, lengths[ep][:, None] - 1)  # transition index (clipped)
    rows = data.obs_index[idx]
    obs = data.observations[rows]
    next_obs = data.observations[rows + 1]
    actions = data.actions[idx].copy()
    if not real.all():
        absorbing = data.observations[data.obs_index[ends[ep] - 1] + 1]  # (n, *obs_shape) last s'
        pad = ~real
        obs[pad] = np.broadcast_to(absorbing[:, None], obs.shape)[pad]
        next_obs[pad] = np.broadcast_to(absorbing[:, None], next_obs.shape)[pad]
        actions[pad] = 0
    return Segments(
        obs=obs,
        actions=actions,
        next_obs=next_obs,
        true_rewards=np.where(real, data.true_rewards[idx], 0.0).astype(np.float32),
        episode=ep.astype(np.int64),
        start=offset,
        components={
            k: np.where(real, np.asarray(v)[idx], 0.0).astype(np.float32) for k, v in (components or {}).items()
        },
        frames=None if data.frames is None else data.frames[idx],
        mask=None if real.all() else real,
    )


@dataclass
class PreferencePairs:
    """Labelled pairs of segments: ``left[i]`` against ``right[i]`` with ``labels[i]``.

    Attributes:
        left, right: :class:`Segments` of equal length.
        labels: ``(pairs,)`` int8, one of ``LEFT, RIGHT, EQUAL, SKIP``.
        teacher: Who labelled them (a short description, stored with the pairs).
        source: Where the segments came from (a dataset id or a run directory).
    """

    left: Segments
    right: Segments
    labels: np.ndarray
    teacher: str = ""
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def targets(self) -> np.ndarray:
        """``(pairs,)`` float32 probability that left is preferred (NaN for skipped pairs)."""
        return TARGET[self.labels.astype(np.int64)]

    def answered(self) -> np.ndarray:
        """Indices of the pairs that were not skipped."""
        return np.flatnonzero(self.labels != SKIP)

    def __add__(self, other: PreferencePairs) -> PreferencePairs:
        """These pairs, then ``other``'s (teacher and source: ``other``'s)."""
        return PreferencePairs(
            concat(self.left, other.left),
            concat(self.right, other.right),
            np.concatenate([self.labels, other.labels]),
            other.teacher,
            other.source,
        )

    def subset(self, index: np.ndarray) -> PreferencePairs:
        """The pairs ``index`` (a copy; teacher and source kept)."""
        return PreferencePairs(
            self.left.take(index), self.right.take(index), self.labels[index], self.teacher, self.source
        )

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (``.npz``) atomically: a crash leaves the previous file or none."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"labels": self.labels.astype(np.int8)}
        for side, seg in (("left", self.left), ("right", self.right)):
            for name in ("obs", "actions", "next_obs", "true_rewards", "episode", "start"):
                arrays[f"{side}/{name}"] = getattr(seg, name)
            for name, v in seg.components.items():
                arrays[f"{side}/components/{name}"] = v
            if seg.frames is not None:
                arrays[f"{side}/frames"] = seg.frames
            if seg.mask is not None:
                arrays[f"{side}/mask"] = seg.mask
        arrays["meta/teacher"] = np.array(self.teacher)
        arrays["meta/source"] = np.array(self.source)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)  # plain arrays only (load refuses pickles too)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PreferencePairs:
        """Read pairs written by :meth:`save`.

        Raises:
            ConfigError: The file is missing or not a preference file.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"preference file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # zip or format errors: say which file
            raise ConfigError(f"preference file {path} is unreadable ({type(e).__name__}: {e})") from e
        if "labels" not in arrays:
            raise ConfigError(f"{path} is not a preference file (no 'labels' array)")

        def side(name: str) -> Segments:
            comp = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"{name}/components/")}
            return Segments(
                obs=arrays[f"{name}/obs"],
                actions=arrays[f"{name}/actions"],
                next_obs=arrays[f"{name}/next_obs"],
                true_rewards=arrays[f"{name}/true_rewards"],
                episode=arrays[f"{name}/episode"],
                start=arrays[f"{name}/start"],
                components=comp,
                frames=arrays.get(f"{name}/frames"),
                mask=arrays.get(f"{name}/mask"),
            )

        return cls(
            side("left"), side("right"), arrays["labels"], str(arrays["meta/teacher"]), str(arrays["meta/source"])
        )
