"""``reward=preference``: a reward model learned online from a teacher's preferences (PEBBLE / PrefPPO).

The training env's wrapper shows the provider every transition the agent learns from
(:meth:`PreferenceReward.observe`); the provider keeps the most recent finished episodes. After
``first_after`` env steps, and then every ``every`` steps until ``budget`` labels are spent, it runs
one *round* (Lee et al. 2021, PEBBLE, Algorithm 1; B-Pref's reference code, rll-research/BPref):

1. cut ``queries * candidates`` segment pairs from the kept episodes (the first round: ``queries``
   pairs, uniformly, as B-Pref's first round: an untrained ensemble's uncertainty means nothing);
2. choose ``queries`` of them: ``uniform`` at random, or the ones the ensemble is least sure about
   (``disagreement``: std over members of P(left preferred); ``entropy``: each member's entropy of
   it, averaged over members);
3. ask the teacher (``reward/teacher=synthetic``: B-Pref's simulated teacher on the true reward,
   its relative thresholds calibrated on this round's candidates; ``hierarchical``: HERON's, on
   the env's reward components; ``clip``: CLIP's judgement of the segments' frames against a goal
   sentence, as in RL-VLM-F) and store every answer in the run's ``preferences.npz`` as it comes;
4. retrain the reward ensemble (Bradley-Terry) on all answers so far;
5. measure it on fresh held-out pairs (``held_out`` of them, labelled by the true return and never
   trained on): ``metrics.csv`` gets ``reward_model_accuracy`` (pairs of segments with equally many
   real steps, which a constant reward cannot order) and ``reward_model_accuracy_all`` (every
   decided pair, also those a segment's early end decides) beside true and proxy return.

**Unsupervised pre-training** (PEBBLE's, ``pretrain``; on by default): before the first round the
proxy is not zero but PEBBLE's state-entropy reward (:mod:`rewards.preference.exploration`: the
distance from ``s`` to its ``pretrain_k``-th nearest neighbour among the states seen so far, over
the spread of those distances). The agent explores to cover the state space, so the first segments
the teacher sees are diverse. The distances are recomputed over all states each time their number
doubles (``version`` goes up, so an off-policy buffer is relabelled), and the first trained reward
model replaces them (relabelled once more). PEBBLE also re-initialises the critic then; the SB3
adapters do not.

The reward model (``reward/model``) is an MLP on observations (and actions) or a small CNN on the
frame rendered after each step (``cnn``: for tasks whose state is only in the picture). The teacher
and the model are config nodes with their own ``_target_`` (:mod:`rewards.preference.teachers`,
:class:`~rewards.preference.model.RewardModelFactory`), built by Hydra and handed over as objects;
each says in ``needs`` whether it looks at frames. Frames, when the model or the teacher needs them,
are kept shrunk to ``frame_size`` pixels square, and at most ``frame_memory_mb`` of them (the oldest
episodes go first).

The proxy reward of a transition is the ensemble's (``blend``: mean, min, or mean - k * std). An
off-policy agent's replay buffer holds rewards computed by an older model: after each change of the
reward the runner asks the agent to relabel it (``version`` counts the changes; ``rounds`` the
retrainings). Before the first round the reward is the pre-training reward, or zero with
``pretrain=false``.

A segment longer than any episode can be would never be cut (no labels, a zero proxy for the whole
run): :meth:`PreferenceReward.check_horizon` refuses it before the run starts.

On the text envs (``env=text-*``, whose action is the response text) the provider learns offline, once,
from the text agent's records: a Bradley-Terry ensemble on sentence embeddings of the responses, trained
on pairs of two responses to one prompt that the same teacher labels (:mod:`rewards.preference.text`).
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from typing_extensions import override

from envs.data import Episode, Episodes
from envs.errors import ConfigError
from rewards.base import LearnedReward, TorchRewardFn, TransitionBatch
from rewards.preference.exploration import StateEntropy
from rewards.preference.model import (
    BLENDS,
    MlpRewardModel,
    RewardEnsemble,
    RewardModelFactory,
    shrink_frames,
    train_reward_model,
)
from rewards.preference.segments import SKIP, PreferencePairs, Segments, concat, cut_segments, valid_starts
from rewards.preference.teachers import Calibrates, RanksComponents, SyntheticTeacher, Teacher
from rewards.wrapper import env_components

log = logging.getLogger("rewardlab")

#: The ``reward/teacher`` and ``reward/model`` config groups' choices (experiments/conf/reward/<group>/).
TEACHERS = ("synthetic", "hierarchical", "clip")
MODELS = ("mlp", "cnn")
SAMPLING = ("uniform", "disagreement", "entropy")


def refuse_group_value(group: str, value: object, choices: tuple[str, ...]) -> None:
    """Refuse ``reward.<group>=<name>``: a config group's choice written as a value.

    ``reward.teacher=clip`` (a dot) makes Hydra replace the teacher node by the string ``"clip"``
    instead of choosing ``conf/reward/teacher/clip.yaml``; the provider then gets a string.

    Raises:
        ConfigError: ``value`` is a string (one line: the group's form and its choices).
    """
    if isinstance(value, str):
        raise ConfigError(
            f"reward.{group}={value} sets a config group as a value: write reward/{group}=<name> "
            f"(choices: {', '.join(choices)}) and its settings as reward.{group}.<key>=..."
        )


def select_queries(model: RewardEnsemble, left: Segments, right: Segments, want: int, sampling: str) -> np.ndarray:
    """Indices of the ``want`` candidate pairs to ask the teacher about (B-Pref's query selection).

    Args:
        model: The current ensemble.
        left: The candidates' left segments (``n`` of them).
        right: Their right segments.
        want: Pairs to choose.
        sampling: ``uniform`` (the first ``want``: the candidates are drawn at random), ``disagreement``
            (largest std over members of P(left preferred)) or ``entropy`` (largest member-averaged entropy).

    Returns:
        ``(min(want, n),)`` int64 indices, the most uncertain first.
    """
    if sampling == "uniform" or len(left) <= want:
        return np.arange(min(int(want), len(left)))
    score = model.disagreement(left, right) if sampling == "disagreement" else model.entropy(left, right)
    return np.argsort(-score, kind="stable")[: int(want)]


class PreferenceReward(LearnedReward):
    """Online preference-based reward (module docstring).

    Args:
        teacher: Who labels pairs (a :class:`~rewards.preference.teachers.Teacher`: the ``reward/teacher``
            node, built). ``None``: B-Pref's synthetic teacher, perfectly rational, calling exact ties equal.
        model: The reward ensemble's settings (:class:`~rewards.preference.model.RewardModelFactory`:
            the ``reward/model`` node, built), called with the env's spaces in :meth:`bind`. ``None``:
            :class:`~rewards.preference.model.MlpRewardModel` with its defaults.
        budget: Total labels the teacher may give.
        queries: Labels asked per round.
        every: Env steps between rounds.
        first_after: Env steps before the first round (the agent explores on zero reward).
        segment: Transitions per segment.
        sampling: ``uniform``, ``disagreement`` or ``entropy``.
        candidates: Candidate pairs per query for the uncertainty-based samplings.
        keep_episodes: Most recent finished episodes kept per env to cut segments from.
        held_out: Fresh pairs per round, labelled by the true return, to measure accuracy on.
        frame_size: Side of the square frames kept (and seen by a model on frames).
        frame_memory_mb: Most memory the kept frames may take (the oldest episodes are dropped first).
        blend, k: How members are combined into the proxy reward.
        rescale: Divide the proxy by its mean absolute value on the kept transitions (measured after
            each retraining). Bradley-Terry fixes a reward only up to scale, and the scale grows with
            training; a positive factor changes no preference and no optimal policy. ``None``: the
            model's default (``model.rescale``: off for the MLP and the CNN; on CartPole with PPO and
            PEBBLE pre-training, 3-5 seeds, both learned less with it; ``docs/figures.md``).
        epochs, batch_size, lr: Reward-model training per round.
        pairs: A preference file (``experiments/prefs.py``) to learn from once, before anything else
            (offline: P-IQL = this reward model + ``agent=iql``); no online rounds then.
        pretrain: PEBBLE's unsupervised pre-training before the first round (module docstring).
        pretrain_k: The nearest neighbour whose distance is the pre-training reward (PEBBLE's ``topK``, 5).
        text_features: Text envs only: the reward model's input, ``response`` (the MiniLM embedding of the
            response) or ``prompt_response`` (with its product with the prompt's); ``None``: ``response``
            (:mod:`rewards.preference.text`).
        seed: Randomness of segment choice, the teacher and the model.
        device: Where the model runs (``auto``: ``model.auto_device()``, a GPU for the CNN if there is
            one, else the CPU).
    """

    def __init__(
        self,
        teacher: Teacher | None = None,
        model: RewardModelFactory | None = None,
        budget: int = 200,
        queries: int = 20,
        every: int = 2000,
        first_after: int = 1000,
        segment: int = 25,
        sampling: str = "disagreement",
        candidates: int = 10,
        keep_episodes: int = 50,
        held_out: int = 200,
        frame_size: int = 64,
        frame_memory_mb: float = 2048,
        blend: str = "mean",
        k: float = 1.0,
        rescale: bool | None = None,
        epochs: int = 50,
        batch_size: int = 64,
        lr: float = 1e-3,
        pairs: str | None = None,
        pretrain: bool = True,
        pretrain_k: int = 5,
        text_features: str | None = None,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        refuse_group_value("teacher", teacher, TEACHERS)
        refuse_group_value("model", model, MODELS)
        if teacher is None:
            teacher = SyntheticTeacher(equal_within=1e-6)
        if model is None:
            model = MlpRewardModel()
        if not callable(getattr(teacher, "label", None)):
            raise ConfigError(
                f"reward.teacher must build a teacher (a node with a _target_, chosen with reward/teacher=<name>; "
                f"choices: {', '.join(TEACHERS)}), got {type(teacher).__name__}"
            )
        if not isinstance(model, RewardModelFactory):
            raise ConfigError(
                f"reward.model must build a reward-model factory (a node with a _target_, chosen with "
                f"reward/model=<name>; choices: {', '.join(MODELS)}), got {type(model).__name__}"
            )
        if sampling not in SAMPLING:
            raise ConfigError(f"reward.sampling={sampling!r} must be one of {', '.join(SAMPLING)}")
        if blend not in BLENDS:
            raise ConfigError(f"reward.blend={blend!r} must be one of {', '.join(BLENDS)}")
        for name, value in (
            ("budget", budget),
            ("queries", queries),
            ("every", every),
            ("segment", segment),
            ("pretrain_k", pretrain_k),
        ):
            if int(value) < 1:
                raise ConfigError(f"reward.{name}={value!r} must be >= 1")
        from rewards.preference.text import TextFeatures

        # built here so that a bad value is refused at once; used only when the env turns out to be a text env
        self.text_features = text_features
        self.text_on_text_env = TextFeatures(text_features or "response")  # the features if the env is a text env
        self.text: TextFeatures | None = None  # set by bind on a text env
        self.teacher: Teacher = teacher
        self.model_factory = model
        self.model_sees_frames = "frame" in model.needs
        self.budget, self.queries, self.every = int(budget), int(queries), int(every)
        self.first_after, self.segment, self.sampling = int(first_after), int(segment), sampling
        self.candidates, self.keep_episodes, self.held_out = max(1, int(candidates)), int(keep_episodes), int(held_out)
        self.frame_size = int(frame_size)
        self.frame_budget = int(float(frame_memory_mb) * 2**20)
        # frames are rendered and kept only when the model or the teacher looks at them
        self.needs = frozenset(model.needs) | frozenset(getattr(teacher, "needs", frozenset())) | self.text_on_text_env.needs
        self.blend_how, self.k = blend, float(k)
        self.rescale = bool(model.rescale) if rescale is None else bool(rescale)
        self.scale = 1.0  # the proxy is the model's reward / scale
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.rng = np.random.default_rng(int(seed))
        self.torch_gen = torch.Generator().manual_seed(int(seed))
        self.seed = int(seed)
        if device in ("auto", None):  # the CNN wants the GPU; small MLPs run faster on the CPU
            device = model.auto_device()
        self.device = torch.device(device)
        self.model: RewardEnsemble | None = None
        self.pairs: PreferencePairs | None = None
        self.version = 0  # rounds done
        self.steps_seen = 0
        self.next_round = self.first_after
        self.stats: dict[str, float] = {}
        self.pairs_path: Path | None = None  # the runner points this into the run directory
        self.pairs_file = pairs
        self.rounds = 0  # retrainings of the reward model (version also counts pre-training refreshes)
        self.pretrain = bool(pretrain) and not pairs
        self.exploration = StateEntropy(int(pretrain_k))  # the reward before the first round
        self._longest = 0  # longest finished episode seen (for the warning when none is long enough)

    # --- the provider interface ---------------------------------------------------------------

    @override
    def bind(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        if self.model is not None:  # the eval env binds too: same spaces
            return
        super().bind(observation_space, action_space)
        if isinstance(action_space, gym.spaces.Text):  # a text env: learned offline from a text agent's records
            from rewards.preference.text import build_model

            self.text = self.text_on_text_env
            self.model = build_model(self.model_factory, self.text.dim, self.seed).to(self.device).eval()
            self.pretrain = False
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = self.model_factory(observation_space, action_space, frame_size=self.frame_size)
        self.model.to(self.device).eval()
        self._open: list[dict[str, list[np.ndarray | np.float32]]] = []  # per env, sized on the first batch
        self._done: deque[dict[str, np.ndarray]] = deque()
        self._frame_bytes = 0  # held by the kept episodes' frames
        self._shrunk: tuple[TransitionBatch, np.ndarray] | None = None  # the last batch's frames at frame_size
        if self.pairs_file:
            self._learn_from_file(Path(self.pairs_file))

    @override
    def check_env(self, env: gym.Env) -> None:
        """Refuse a segment no episode can hold, and a teacher that ranks components the env lacks.

        Raises:
            ConfigError: See :meth:`check_horizon`; or the teacher ranks reward components (HERON's) that
                ``env`` does not report in its ``info`` after a step.
        """
        if isinstance(env.action_space, gym.spaces.Text):
            from rewards.preference.text import check_text_env

            check_text_env(self, env)
            return
        if self.text_features is not None:
            raise ConfigError(
                f"reward.text_features={self.text_features} is for text envs (env=text-positive, env=text-helpful), "
                f"and this env's action space is {env.action_space}; leave it null"
            )
        if self.pairs_file:  # the labels come from a file: no segments are cut or labelled here
            return
        self.check_horizon(env.spec.max_episode_steps if env.spec is not None else None)
        if isinstance(self.teacher, RanksComponents):
            env.reset(seed=0)
            env.action_space.seed(0)
            info = env.step(env.action_space.sample())[4]
            self.teacher.check_components(env_components([info]).keys())

    def check_horizon(self, max_episode_steps: int | None) -> None:
        """Refuse a segment longer than any episode of the env can be (called before the run starts).

        Args:
            max_episode_steps: The env's time limit (``spec.max_episode_steps``, or the env config's
                ``max_episode_steps``); None: no limit known.

        Raises:
            ConfigError: ``segment`` exceeds it: no segment could be cut from a complete episode, so the
                teacher would never be asked (0 labels and a zero proxy, the whole run).
        """
        if self.pairs_file or max_episode_steps is None or self.segment <= int(max_episode_steps):
            return
        raise ConfigError(
            f"reward.segment={self.segment} is longer than the longest possible episode ({int(max_episode_steps)} "
            f"steps: the env's time limit), so no segment could ever be cut; give reward.segment <= {int(max_episode_steps)}"
        )

    def _learn_from_file(self, path: Path) -> None:
        assert self.model is not None
        pairs = PreferencePairs.load(path)
        obs_shape = self.observation_space.shape  # a Box's (the MLP takes nothing else); None: no fixed shape
        if self.model_sees_frames and (pairs.left.frames is None or pairs.right.frames is None):
            raise ConfigError(
                f"reward.pairs={path} has no frames for a reward model on frames (reward/model=cnn): make it from "
                "a dataset with frames (prefs.py frames=true) or use reward/model=mlp"
            )
        if not self.model_sees_frames and (
            obs_shape is None or int(np.prod(pairs.left.obs.shape[2:])) != int(np.prod(obs_shape))
        ):
            raise ConfigError(
                f"reward.pairs={path}: segments have observations of shape {pairs.left.obs.shape[2:]}, the env {self.observation_space.shape}"
            )
        self.pairs = pairs
        self.budget = len(pairs)  # no online rounds
        self.model.fit_normalizer(np.concatenate([pairs.left.obs, pairs.right.obs]))
        fit = train_reward_model(self.model, pairs, self.torch_gen, self.epochs, self.batch_size, self.lr)
        self.version += 1
        self.rounds += 1
        if self.rescale:
            self._rescale(concat(pairs.left, pairs.right))
        self.stats = {
            "loss_reward": fit["loss_reward"],
            "reward_model_train_accuracy": fit["train_accuracy"],
            "reward_scale": self.scale,
        }
        log.info(
            "reward model trained on %d pairs from %s: train accuracy %.3f", len(pairs), path, fit["train_accuracy"]
        )

    def learn_from_records(
        self, batch: TransitionBatch, groups: np.ndarray, components: dict[str, np.ndarray] | None = None
    ) -> None:
        """Text envs: learn the reward model once from a text agent's records (:func:`rewards.preference.text.learn_from_records`).

        Raises:
            ConfigError: The provider is not bound to a text env, or the records offer nothing to learn from.
        """
        if self.text is None:
            raise ConfigError("reward=preference learns from text records only on a text env (env=text-*)")
        from rewards.preference.text import learn_from_records

        learn_from_records(self, batch, groups, components)

    @override
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        assert self.model is not None
        if self.text is not None:  # a text env: the ensemble on the responses' embeddings (0 until learned)
            if self.rounds == 0:
                return np.zeros(len(batch), dtype=np.float32)
            return self.model.predict(self.text(batch), None, self.blend_how, self.k) / self.scale
        if self.rounds == 0:  # nothing learned yet: PEBBLE's exploration reward, or zero
            if self.pretrain:
                return self.exploration.reward(torch.as_tensor(np.asarray(batch.obs, dtype=np.float32))).numpy()
            return np.zeros(len(batch), dtype=np.float32)
        frames = self._small_frames(batch) if self.model_sees_frames else None
        return self.model.predict(batch.obs, batch.action, self.blend_how, self.k, frames=frames) / self.scale

    def torch_reward(self) -> TorchRewardFn | None:
        """The blended ensemble on tensors, differentiable (the MLP model; a model on frames: ``None``)."""
        if self.model is None or self.model_sees_frames or self.text is not None:
            return None
        model = self.model

        def reward_fn(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
            if self.rounds == 0:
                if self.pretrain:
                    return self.exploration.reward(obs)
                return torch.zeros(obs.shape[0], device=obs.device)
            return model.blend(model(*model.features(obs, action)), self.blend_how, self.k) / self.scale

        return reward_fn

    def _small_frames(self, batch: TransitionBatch) -> np.ndarray:
        """``batch``'s frames at ``frame_size``, shrunk once: :meth:`reward` and :meth:`observe` see the same batch."""
        if self._shrunk is None or self._shrunk[0] is not batch:
            if batch.frames is None:
                raise ConfigError(
                    "reward=preference with frames got a batch without them (the env must render rgb_array frames)"
                )
            self._shrunk = (batch, shrink_frames(batch.frames, self.frame_size))
        return self._shrunk[1]

    def observe(self, batch: TransitionBatch, components: dict[str, np.ndarray] | None = None) -> None:
        """Keep the training env's transitions (and the env's reward components); run a round when one is due."""
        if self.text is not None:  # text envs: learned from the agent's records, not online
            return
        n = len(batch)
        if self.pretrain and self.rounds == 0 and self.exploration.remember(batch.obs):
            self.version += 1  # the exploration reward changed: stored rewards are relabelled
        while len(self._open) < n:
            self._open.append(self._empty())
        small = self._small_frames(batch) if "frame" in self.needs else None
        for i in range(n):
            ep = self._open[i]
            ep["obs"].append(batch.obs[i])
            ep["actions"].append(batch.action[i])
            ep["next_obs"].append(batch.next_obs[i])
            ep["rewards"].append(np.float32(batch.env_reward[i]))
            if small is not None:
                ep.setdefault("frames", []).append(small[i])
            for name, values in (components or {}).items():
                ep.setdefault(f"c/{name}", []).append(np.float32(values[i]))
            if batch.terminated[i] or batch.truncated[i]:
                done = {k: np.stack(v) for k, v in ep.items()}
                done["terminated"] = np.array(bool(batch.terminated[i]))
                self._longest = max(self._longest, len(ep["rewards"]))
                if valid_starts(len(ep["rewards"]), done["terminated"], self.segment) > 0:
                    self._done.append(done)
                    self._frame_bytes += done["frames"].nbytes if "frames" in done else 0
                    while len(self._done) > 1 and (
                        len(self._done) > self.keep_episodes * max(1, n) or self._frame_bytes > self.frame_budget
                    ):
                        old = self._done.popleft()
                        self._frame_bytes -= old["frames"].nbytes if "frames" in old else 0
                self._open[i] = self._empty()
        self.steps_seen += n
        if self.steps_seen >= self.next_round and self.labels_used < self.budget:
            self.next_round = self.steps_seen + self.every
            if self._done:
                self.round()
            else:  # the episode lengths (or a segment too long for them) say why
                log.log(
                    logging.WARNING if self._longest else logging.INFO,
                    "preference round due at step %d skipped: no finished episode offers a %d-step segment yet "
                    "(longest finished episode: %d steps)",
                    self.steps_seen,
                    self.segment,
                    self._longest,
                )

    def metrics(self) -> dict[str, float]:
        """Figures for ``metrics.csv``: labels used, reward-model accuracy (held-out and train), loss."""
        return {"labels": float(self.labels_used), **self.stats}

    @override
    def attach(self, run_dir: Path) -> None:
        self.pairs_path = Path(run_dir) / "preferences.npz"

    # --- rounds ---------------------------------------------------------------------------------

    @property
    def labels_used(self) -> int:
        """Labels the teacher has given so far (skips included)."""
        return 0 if self.pairs is None else len(self.pairs)

    def _empty(self) -> dict[str, list[np.ndarray | np.float32]]:
        return {"obs": [], "actions": [], "next_obs": [], "rewards": []}

    def _kept(self) -> Episodes:
        """The kept episodes in the data layer's flat form (with the env's reward components), for cutting segments."""
        eps = []
        for e in self._done:
            last = np.arange(len(e["rewards"])) == len(e["rewards"]) - 1  # the step that ended the episode
            eps.append(
                Episode(
                    # each episode's T observations and its last s' (the real terminal one)
                    observations=np.concatenate([e["obs"], e["next_obs"][-1:]]),
                    actions=e["actions"],
                    rewards=e["rewards"],
                    terminations=last & bool(e["terminated"]),
                    truncations=last & (not bool(e["terminated"])),
                    infos={
                        **({"frame": e["frames"]} if "frames" in e else {}),
                        "reward_components": {k[2:]: v for k, v in e.items() if k.startswith("c/")},
                    },
                )
            )
        return Episodes.from_episodes(eps, self.observation_space, self.action_space, "the agent's recent episodes")

    def _cut(self, kept: Episodes, n: int) -> Segments:
        return cut_segments(kept, self.segment, n, self.rng)

    def round(self) -> None:
        """Query, label, store, retrain, measure (module docstring)."""
        assert self.model is not None
        want = min(self.queries, self.budget - self.labels_used)
        # B-Pref's first round is uniform: an untrained ensemble's uncertainty means nothing
        sampling = self.sampling if self.rounds > 0 else "uniform"
        pool = want * (self.candidates if sampling != "uniform" else 1)
        kept = self._kept()  # built once per round
        left, right = self._cut(kept, pool), self._cut(kept, pool)
        if isinstance(self.teacher, Calibrates):  # B-Pref's thresholds follow the mean segment return
            self.teacher.calibrate(concat(left, right))
        pick = select_queries(self.model, left, right, want, sampling)
        if len(pick) < len(left):
            left, right = left.take(pick), right.take(pick)
        labels = self.teacher.label(left, right, self.rng)
        new = PreferencePairs(left, right, labels, self.teacher.describe(), "online")
        self.pairs = new if self.pairs is None else self.pairs + new
        if self.pairs_path is not None:
            self.pairs.save(self.pairs_path)
        if len(self.pairs.answered()):
            self.model.fit_normalizer(np.concatenate([self.pairs.left.obs, self.pairs.right.obs]))
            fit = train_reward_model(self.model, self.pairs, self.torch_gen, self.epochs, self.batch_size, self.lr)
            self.version += 1
            self.rounds += 1
            self.exploration.clear()  # pre-training is over
            if self.rescale:
                self._rescale(kept)
            same_length, every_pair = self._held_out_accuracy(kept)
            self.stats = {
                "reward_scale": self.scale,
                "loss_reward": fit["loss_reward"],
                "reward_model_train_accuracy": fit["train_accuracy"],
                "reward_model_accuracy": same_length,
                "reward_model_accuracy_all": every_pair,
            }
        log.info(
            "preference round %d: %d labels (%d skipped), reward model accuracy %.3f on held-out pairs of equal "
            "length, %.3f on all %d",
            self.rounds,
            self.labels_used,
            int(np.sum(self.pairs.labels == SKIP)),
            self.stats.get("reward_model_accuracy", float("nan")),
            self.stats.get("reward_model_accuracy_all", float("nan")),
            self.held_out,
        )

    def _rescale(self, data: Episodes | Segments) -> None:
        """Set ``scale`` to the mean absolute reward of the model on ``data``'s real transitions."""
        assert self.model is not None
        if isinstance(data, Segments):
            real = data.valid()
            obs, actions = data.obs[real], data.actions[real]
            frames = None if data.frames is None else data.frames[real]
        else:
            obs, actions, frames = data.observations[data.obs_index], data.actions, data.frames
        r = np.concatenate(
            [
                self.model.predict(
                    obs[s : s + 65536],
                    actions[s : s + 65536],
                    self.blend_how,
                    self.k,
                    frames=None if frames is None else frames[s : s + 65536],
                )
                for s in range(0, len(actions), 65536)
            ]
        )
        size = float(np.mean(np.abs(r))) if len(r) else 0.0
        self.scale = size if size > 1e-8 else 1.0

    def _held_out_accuracy(self, kept: Episodes) -> tuple[float, float]:
        """Accuracy on fresh pairs ranked by the true return: ``(pairs of equal length, every pair)``."""
        assert self.model is not None
        if self.held_out <= 0:
            return float("nan"), float("nan")
        left, right = self._cut(kept, self.held_out), self._cut(kept, self.held_out)
        # the true return decides; exact ties are "equal" and left out of the accuracy
        oracle = PreferencePairs(left, right, SyntheticTeacher(equal_within=1e-6).label(left, right, self.rng))
        return self.model.accuracy(oracle, same_length=True), self.model.accuracy(oracle)

    # --- checkpoints ------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Model weights, answers so far, counters and RNG states into the directory ``path``."""
        assert self.model is not None
        path.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": self.model.state_dict(),
                "version": self.version,
                "rounds": self.rounds,
                "exploration": self.exploration.state_dict(),
                "longest": self._longest,
                "scale": self.scale,
                "steps_seen": self.steps_seen,
                "next_round": self.next_round,
                "stats": self.stats,
                "rng": self.rng.bit_generator.state,
                "torch_gen": self.torch_gen.get_state(),
            },
            path / "reward_model.pt",
        )
        if self.pairs is not None:
            self.pairs.save(path / "preferences.npz")
            if self.text is not None and self.pairs_path is not None and not self.pairs_path.exists():
                self.pairs.save(self.pairs_path)  # learned before the run directory existed: kept there now

    @override
    def load(self, path: Path) -> None:
        assert self.model is not None
        state = torch.load(path / "reward_model.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.version, self.steps_seen, self.next_round = state["version"], state["steps_seen"], state["next_round"]
        self.rounds = int(state.get("rounds", self.version))  # checkpoints before pre-training: one version a round
        if "exploration" in state:
            self.exploration.load_state_dict(state["exploration"])
        self._longest = int(state.get("longest", 0))
        self.stats = state["stats"]
        self.scale = float(state.get("scale", 1.0))
        self.rng.bit_generator.state = state["rng"]
        self.torch_gen.set_state(state["torch_gen"])
        if (path / "preferences.npz").exists():
            self.pairs = PreferencePairs.load(path / "preferences.npz")
