"""What the text agents share: offline data, the training loop, acting, checkpoints, the evaluation report.

A text agent (``agent=alol|nll|wbc|dpo|pro``) is an offline learner in a ``text-<task>`` env
(:mod:`envs.text`). On its first :meth:`TextAgent.train` it reads (or builds once, :mod:`agents.text.data`)
the scored responses to the training prompts, labels them with the run's reward provider (the *proxy*;
the true reward stays beside it, as everywhere in rewardlab), and lets the algorithm prepare what it
samples from (:meth:`TextAgent.prepare`: advantages, preference pairs, rankings). A provider that learns from
the records themselves (:class:`rewards.base.LearnsFromRecords`: ``reward=preference``, a Bradley-Terry
reward on sentence embeddings, :mod:`rewards.preference.text`) learns first, when the agent is built,
so that the evaluation at step 0 already reports its proxy. Each gradient step
draws ``batch_size`` units with the algorithm's probabilities and takes one Adam step on
:meth:`TextAgent.loss`. ``act`` generates a response per observation (greedy when deterministic).
The frozen reference's log-probs of a data item (A-LoL's ratio and KL, DPO's reference terms) are
computed once per item and kept (:meth:`TextAgent.reference_logprobs`), not in every step.

After the final evaluation the runner asks :meth:`TextAgent.evaluation_report` for the text figures:
distinct-1 / distinct-2 (distinct word n-grams / all word n-grams over the evaluation responses; Li et
al., 2016), mean response length in words, and the KL to the reference, estimated on one fresh sample
``y ~ pi_theta(.|x)`` per evaluation prompt as ``mean(log pi_theta(y|x) - log pi_ref(y|x))``; and the file
``samples.md`` (prompt, response, true reward, components) beside the env's ``samples.jsonl``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from typing_extensions import override

from agents.base import Agent, Requirements, TrainCallback
from agents.text import data as td
from agents.text.policy import LMPolicy, SeqBatch, make_batch, obs_prompts
from envs.errors import ConfigError


class TextAgent(Agent):
    """Base of the text agents (module docstring).

    Args:
        observation_space, action_space: The text env's spaces.
        env: The run's training vector env (a ``text-<task>`` env; its prompts and scorer are used).
        reward: The run's reward provider (labels the data: the proxy).
        seed: Seeds sampling of batches and responses.
        device: Torch device.
        model: ``tiny``, ``smollm2`` or a model directory (:mod:`agents.text.policy`).
        lora_r, lora_alpha: LoRA rank (0: full fine-tuning) and scaling.
        learning_rate: Adam step size.
        batch_size: Units (responses, pairs or rankings) per gradient step.
        data: ``auto`` (build once and cache, :mod:`agents.text.data`) or a ``.jsonl`` file.
        k_samples: Reference samples per training prompt in the built data.
        sample_temperature: Temperature of those samples.
        data_seed: Seeds the built data (fixed across run seeds: the data is "pre-existing").
        noisy: Fraction of human replies shuffled across prompts (A-LoL's noisy data).
        max_new_tokens: Longest generated response (``None``: the env's ``max_response_tokens``).
        log_every: Gradient steps between rows of ``train.csv``.
    """

    name = "text"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        env: Any,
        reward: Any,
        seed: int = 0,
        device: str = "cpu",
        model: str = "smollm2",
        lora_r: int = 0,
        lora_alpha: int = 16,
        learning_rate: float = 1e-4,
        batch_size: int = 8,
        data: str = "auto",
        k_samples: int = 2,
        sample_temperature: float = 1.0,
        data_seed: int = 0,
        noisy: float = 0.0,
        max_new_tokens: int | None = None,
        log_every: int = 10,
    ) -> None:
        if data != "auto" and not Path(str(data)).expanduser().is_file():
            raise ConfigError(
                f"agent.data={data!r}: no such file; give agent.data=auto to build it, or an existing .jsonl"
            )
        if not 0.0 <= float(noisy) <= 1.0:
            raise ConfigError(f"agent.noisy={noisy!r} must be in [0, 1]")
        if int(batch_size) < 1 or int(k_samples) < 0:
            raise ConfigError(f"agent.batch_size={batch_size!r} must be >= 1 and agent.k_samples={k_samples!r} >= 0")
        self.env, self.reward, self.seed = env, reward, int(seed)
        self.observation_space, self.action_space = observation_space, action_space
        self.model_name, self.lora_r = str(model), int(lora_r)
        self.policy = LMPolicy(self.model_name, self.seed, device, int(lora_r), int(lora_alpha))
        self.device = self.policy.device
        self.optimizer = torch.optim.Adam(self.policy.trainable(), lr=float(learning_rate))
        self.batch_size, self.log_every = int(batch_size), max(1, int(log_every))
        self.data_spec, self.k, self.temperature = str(data), int(k_samples), float(sample_temperature)
        self.data_seed, self.noisy = int(data_seed), float(noisy)
        self.max_new_tokens = int(max_new_tokens or self._env_call("get_attr", "max_response_tokens"))
        self.generator = torch.Generator().manual_seed(self.seed)
        self._act_calls = 0
        self._step = 0
        self.records: list[dict[str, Any]] = []
        self._ref_cache: dict[int, torch.Tensor] = {}  # item -> pi_ref's response log-probs (reference_logprobs)
        self._ref_chunks: set[int] = set()
        self.prepared: dict[str, torch.Tensor] = {}
        self.data_info: dict[str, Any] = {}
        self.modules: dict[str, torch.nn.Module] = {"policy": self.policy.lm}
        from rewards.base import LearnsFromRecords

        if isinstance(reward, LearnsFromRecords):  # a reward learned from the records: learned before any evaluation
            self.load_data()

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """A text env (its card's ``text`` feature; a response-text action)."""
        return Requirements(
            action_spaces=(gym.spaces.Text,),
            features=frozenset({"text"}),
            hint="text agents (alol, nll, wbc, dpo, pro) run on env=text-positive or env=text-helpful",
        )

    # --- data ------------------------------------------------------------------------------------

    def _env_call(self, kind: str, name: str, *args: Any) -> Any:
        if kind == "get_attr":
            return self.env.get_attr(name, indices=[0])[0]
        return self.env.env_method(name, *args, indices=[0])[0]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The env task's true reward of a batch (``(n,)`` total, components)."""
        return self._env_call("env_method", "score", list(prompts), list(responses))

    def load_data(self) -> None:
        """Read or build the records (:mod:`agents.text.data`) and label them with the run's reward provider."""
        prompts: list[str] = self._env_call("env_method", "prompts")
        replies: list[str] = self._env_call("env_method", "replies")
        ids: list[list[int]] = self._env_call("env_method", "pair_ids")
        env_id = str(self._env_call("get_attr", "spec").id)
        if self.data_spec == "auto":
            clean = td.default_path(env_id, self.model_name, len(prompts), self.k, self.temperature, self.data_seed)
            if not clean.is_file():

                def sample(j: int) -> list[str]:
                    out = self.policy.generate(
                        ids, self.max_new_tokens, True, self.data_seed * 1000 + j, self.temperature, reference=True
                    )
                    return self.policy.decode(out)

                td.write_jsonl(clean, td.build(prompts, replies, sample, self.score, self.k))
            path = clean
            if self.noisy:
                path = td.default_path(
                    env_id, self.model_name, len(prompts), self.k, self.temperature, self.data_seed, self.noisy
                )
                if not path.is_file():
                    td.write_jsonl(path, td.make_noisy(td.read_jsonl(clean), self.noisy, self.data_seed, self.score))
        else:
            path = Path(self.data_spec).expanduser()
        records = td.read_jsonl(path)
        bad = [r["prompt_index"] for r in records if not 0 <= int(r["prompt_index"]) < len(prompts)]
        if bad:
            raise ConfigError(
                f"text data {path}: prompt_index {bad[0]} is not one of the env's {len(prompts)} training prompts"
            )
        self.records = records
        self.prompt_ids = ids
        self.item_prompt = [ids[int(r["prompt_index"])] for r in records]
        self.item_response = [self.policy.encode_response(r["response"]) for r in records]
        self._ref_cache, self._ref_chunks = {}, set()
        true = np.array([r["true_reward"] for r in records], dtype=np.float32)
        self.rewards = torch.as_tensor(self._label(records, true, ids))
        self.true_rewards = torch.as_tensor(true)
        sources = [r.get("source", "?") for r in records]
        self.data_info = {
            "path": str(path),
            "items": len(records),
            "prompts": len({r["prompt_index"] for r in records}),
            "sources": {s: sources.count(s) for s in sorted(set(sources))},
            "true_reward_mean": float(true.mean()),
        }

    def _label(self, records: Sequence[dict[str, Any]], true: np.ndarray, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """The run's provider's reward of each record (``(n,)`` float32): the proxy the agent learns from."""
        from envs.text import left_pad
        from rewards.base import LearnsFromRecords, TransitionBatch, check_rewards

        if self.reward is None:
            return true
        if set(self.reward.needs) - {"prompt"}:
            raise ConfigError(
                f"reward {type(self.reward).__name__} needs {sorted(self.reward.needs)}, which text data does not hold"
            )
        width = int(self.observation_space.shape[0]) if self.observation_space.shape else 0
        obs = np.stack([left_pad(ids[int(r["prompt_index"])], width) for r in records])
        extras = {"prompt": np.array([r["prompt"] for r in records], dtype=object)} if self.reward.needs else {}
        batch = TransitionBatch(
            obs=obs,
            action=np.array([r["response"] for r in records], dtype=object),
            next_obs=obs,
            env_reward=true,
            terminated=np.ones(len(records), dtype=bool),
            truncated=np.zeros(len(records), dtype=bool),
            extras=extras,
        )
        if isinstance(self.reward, LearnsFromRecords):  # e.g. reward=preference: learns once, then labels
            names = sorted({k for r in records for k in r.get("components") or {}})
            components = {
                k: np.array([(r.get("components") or {}).get(k, 0.0) for r in records], np.float32) for k in names
            }
            groups = np.array([int(r["prompt_index"]) for r in records], dtype=np.int64)
            self.reward.learn_from_records(batch, groups, components)
        return check_rewards(self.reward.reward(batch), len(records), source=type(self.reward).__name__)

    def items(self, index: Sequence[int]) -> SeqBatch:
        """The batch of data items ``index`` (prompt + response rows)."""
        return make_batch(
            [self.item_prompt[i] for i in index],
            [self.item_response[i] for i in index],
            self.policy.pad_id,
            self.device,
        )

    def reference_logprobs(self, index: Sequence[int], batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``pi_ref``'s per-token ``(B, keep - 1)`` and summed ``(B,)`` log-probs of data items ``index``.

        ``pi_ref`` is frozen and the data fixed, so an item's response log-probs under it never change:
        each is computed once, the first time the item is drawn, and kept (what TRL's
        ``precompute_ref_log_probs`` does up front for DPO; here lazily, so a short run on a large data
        set pays only for the items it draws). Items are scored in fixed chunks of ``batch_size``
        consecutive items, so a value does not depend on which batch first drew it (a resumed run
        gets the numbers of an uninterrupted one). ``batch`` is :meth:`items` of ``index``: the output
        is laid out as :meth:`agents.text.policy.LMPolicy.logprobs`' (zeros off the response).
        """
        cache, size = self._ref_cache, self.batch_size
        for chunk in sorted({i // size for i in index} - self._ref_chunks):
            members = list(range(chunk * size, min((chunk + 1) * size, len(self.item_response))))
            sub = self.items(members)
            with torch.no_grad():
                tok, _ = self.policy.logprobs(sub, reference=True)
            mask = sub.response_mask().bool()
            for row, i in enumerate(members):
                cache[i] = tok[row][mask[row]]
            self._ref_chunks.add(chunk)
        mask = batch.response_mask().bool()
        tok = torch.zeros(mask.shape, dtype=torch.float32, device=self.device)
        tok[mask] = torch.cat([cache[i] for i in index]).to(self.device)
        return tok, tok.sum(-1)

    # --- what an algorithm defines ---------------------------------------------------------------

    def prepare(self) -> dict[str, torch.Tensor]:
        """Tensors the algorithm samples from, computed once from the data; must hold ``probs``: ``(units,)``."""
        raise NotImplementedError

    def loss(self, units: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of a batch of sampled units (indices into ``probs``), and statistics to log."""
        raise NotImplementedError

    # --- the interface ---------------------------------------------------------------------------

    @property
    @override
    def num_steps(self) -> int:
        return self._step

    @override
    def train(self, steps: int, callback: TrainCallback) -> None:
        if not self.records:
            self.load_data()
        if not self.prepared:
            self.prepared = self.prepare()
        probs = self.prepared["probs"]
        if float(probs.sum()) <= 0:
            raise ConfigError(
                f"agent={self.name}: no data item has positive sampling weight (e.g. no positive advantage)"
            )
        self.policy.lm.train()
        sums: dict[str, float] = {}
        count = 0
        while self._step < steps:
            units = torch.multinomial(probs, self.batch_size, replacement=True, generator=self.generator)
            loss, stats = self.loss(units)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._step += 1
            count += 1
            for k, v in {"loss_policy": loss.detach(), **stats}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if self._step % self.log_every == 0 or self._step == steps:
                callback.on_log(self._step, {k: v / count for k, v in sums.items()})
                sums, count = {}, 0
            if not callback.on_step(self._step):
                break
        self.policy.lm.eval()

    @override
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        self._act_calls += 1
        responses = self.policy.generate(
            obs_prompts(obs), self.max_new_tokens, not deterministic, self.seed * 7919 + self._act_calls
        )
        return np.array(self.policy.decode(responses), dtype=object)

    def _lm_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.policy.lm.state_dict().items() if not self.policy.lora or "lora_" in k}

    @override
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self._step,
            "lm": self._lm_state(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "act_calls": self._act_calls,
            "prepared": self.prepared,
            "extra": {k: m.state_dict() for k, m in self.modules.items() if k != "policy"},
        }
        torch.save(state, path / "agent.pt.tmp")
        (path / "agent.pt.tmp").replace(path / "agent.pt")

    @override
    def load(self, path: Path) -> None:
        file = Path(path) / "agent.pt"
        if not file.exists():
            raise ConfigError(f"{path} holds no text agent checkpoint (agent.pt)")
        state = torch.load(file, map_location=self.device, weights_only=False)
        self.policy.lm.load_state_dict(state["lm"], strict=not self.policy.lora)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self._act_calls = int(state["act_calls"])
        self.prepared = dict(state["prepared"])
        for k, sd in state["extra"].items():
            self.modules[k].load_state_dict(sd)
        self._step = int(state["step"])

    @override
    def describe(self) -> dict[str, Any]:
        return {"model": self.model_name, "lora_r": self.lora_r, "data": self.data_info}

    # --- the evaluation report -------------------------------------------------------------------

    def evaluation_report(self, stats: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
        """Text figures and ``samples.md`` from the final evaluation's ``samples.jsonl`` records (module docstring)."""
        from envs.text import prompt_ids

        records = list((stats.get("artifacts") or {}).get("samples.jsonl") or [])
        if not records:
            return {}, {}
        responses = [str(r["response"]) for r in records]
        figures = {
            "distinct_1": distinct_n(responses, 1),
            "distinct_2": distinct_n(responses, 2),
            "response_words": float(np.mean([len(r.split()) for r in responses])),
        }
        prompts = [prompt_ids(self.policy.tokenizer, str(r["prompt"])) for r in records]
        figures["kl_to_reference"] = self.kl_to_reference(prompts)
        return figures, {"samples.md": samples_markdown(records)}

    @torch.no_grad()
    def kl_to_reference(self, prompts: Sequence[Sequence[int]], batch: int = 16) -> float:
        """``mean(log pi(y|x) - log pi_ref(y|x))`` over one sample ``y ~ pi(.|x)`` per prompt."""
        ys = self.policy.generate(prompts, self.max_new_tokens, True, self.seed * 104729 + 1)
        diffs = []
        for i in range(0, len(prompts), batch):
            b = make_batch(prompts[i : i + batch], ys[i : i + batch], self.policy.pad_id, self.device)
            diffs.append(self.policy.logprobs(b)[1] - self.policy.logprobs(b, reference=True)[1])
        return float(torch.cat(diffs).mean())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (lower-cased; 0 when there are none)."""
    grams = [tuple(w[i : i + n]) for t in texts for w in [t.lower().split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def samples_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """A readable page of evaluation samples: prompt, response, true reward and its components."""
    lines = ["# Samples of the final policy", ""]
    for n, r in enumerate(records):
        parts = ", ".join(f"{k} {v:+.3f}" for k, v in (r.get("components") or {}).items())
        lines += [
            f"## {n}. prompt {r.get('prompt_index')} ({r.get('split', '')})",
            "",
            f"**prompt:** {r['prompt']}",
            "",
            f"**response:** {r['response'] or '(empty)'}",
            "",
            f"**true reward:** {float(r['true_reward']):+.3f} ({parts})",
            "",
        ]
    return "\n".join(lines)
