"""Text envs and agents (issue 20): check_env, the losses against hand-computed values, log-prob masking,
a learning test with the tiny model, the run-directory contract of agent=alol, and the refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from agents.text.alol import alol_kl_loss, alol_loss, alol_seq_loss, clipped_ratio
from agents.text.baselines import dpo_loss, nll_loss, pro_loss, wbc_loss
from agents.text.policy import token_logprobs
from envs.errors import ConfigError

TEXT_IDS = ["rewardlab/TextPositive-v0", "rewardlab/TextHelpful-v0"]


# --- envs ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_check_env_and_one_episode(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array", n_prompts=16)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs[0] == -1 and obs[-1] >= 0  # left-padded
    assert isinstance(info["prompt"], str) and info["prompt"]
    _, reward, terminated, truncated, info = env.step("What a lovely, wonderful day!")
    assert terminated and not truncated
    parts = {k: v for k, v in info.items() if k.startswith("reward_")}
    assert parts and math.isclose(reward, info["episode_artifacts"]["samples.jsonl"]["true_reward"], rel_tol=1e-6)
    assert env.render().shape == (256, 384, 3)
    env.close()


@pytest.mark.parametrize("n_envs,prompts", [(4, 8), (2, 6), (8, 4)])
def test_the_copies_of_an_evaluation_vec_env_serve_distinct_prompts(n_envs: int, prompts: int) -> None:
    """Evaluation as the runner does it: a fixed quota per env; the copies must not repeat each other's prompts."""
    from envs.make import make_vec_env
    from experiments.cli import check_composes, config_dict, expand_shorthands

    cfg = check_composes(expand_shorthands(["env=text-positive", f"env.eval_kwargs.n_prompts={prompts}"]))
    venv = make_vec_env(config_dict(cfg.env), n_envs, seed=0, stream="eval")
    quota = max(prompts // n_envs, 1)  # episodes per env so that the copies together see every prompt
    venv.reset()
    seen = [info["prompt_index"] for info in venv.reset_infos]
    for _ in range(quota - 1):  # each step ends the episode; the copy resets itself with its next prompt
        venv.step(np.array(["fine"] * n_envs, dtype=object))
        seen += [info["prompt_index"] for info in venv.reset_infos]
    venv.close()
    if n_envs <= prompts:
        assert sorted(seen) == list(range(prompts)), seen  # each prompt exactly once
    else:  # more copies than prompts: every prompt is served, repeats cannot be avoided
        assert set(seen) == set(range(prompts))


def test_positive_task_scores_sentiment_and_token_actions_decode() -> None:
    env = gym.make("rewardlab/TextPositive-v0", n_prompts=4).unwrapped
    env.reset(seed=1)
    good = env.step("I love it, this is great and wonderful!")[1]
    env.reset(seed=1)
    bad = env.step("I hate it, this is terrible and awful.")[1]
    assert good > 0.5 and bad < -0.5
    ids = env.tokenizer("I love it", add_special_tokens=False)["input_ids"]
    env.reset(seed=1)
    *_, info = env.step(np.array([*ids, env.tokenizer.eos_token_id, 42, -1, -1]))
    assert info["response"] == "I love it"


def test_helpful_components_are_what_the_docstring_says() -> None:
    from envs.text import TASKS

    total, parts = TASKS["helpful"].score(
        ["do you like dogs?"] * 2, ["yes I like dogs a lot they are great", "the the the the"]
    )
    assert parts["length"][1] == pytest.approx(-11 / 15) and parts["repetition"][1] == pytest.approx(-0.75)
    assert parts["relevance"][0] > parts["relevance"][1]
    assert total == pytest.approx(parts["relevance"] + 0.5 * parts["length"] + 0.5 * parts["repetition"])


def test_split_is_deterministic_and_disjoint() -> None:
    from envs.text import split_pairs

    train, held = split_pairs("train"), split_pairs("held_out")
    assert {p.conversation for p in train}.isdisjoint(p.conversation for p in held)
    assert len(held) > 300 and len(train) > 3000
    assert split_pairs("train", 5) == train[:5]
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        gym.make("rewardlab/TextPositive-v0", task="nope")
    with pytest.raises(ConfigError, match="longer than max_prompt_tokens=8"):
        gym.make("rewardlab/TextPositive-v0", n_prompts=4, max_prompt_tokens=8)


# --- losses on fixed numbers -----------------------------------------------------------------------


def test_alol_clipped_ratio_loss_by_hand() -> None:
    w = torch.tensor([2.0, 0.5])
    logp = torch.tensor([-3.0, -1.0], requires_grad=True)
    ref = torch.tensor([-3.5, -4.0])  # ratios e^0.5 = 1.6487 (inside [0.1, 1.9]) and e^3 = 20.1 (clipped to 1.9)
    loss = alol_loss(w, logp, ref, eps=0.9)
    expected = -(2.0 * math.exp(0.5) * -3.0 + 0.5 * 1.9 * -1.0) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()  # the ratio is a detached weight: d loss / d logp_i = -w_i rho_i / B
    assert logp.grad is not None
    torch.testing.assert_close(logp.grad, torch.tensor([-2.0 * math.exp(0.5) / 2, -0.5 * 1.9 / 2]))
    unclipped = -(2.0 * math.exp(0.5) * -3.0 + 0.5 * math.exp(3.0) * -1.0) / 2
    assert abs(expected - unclipped) > 1.0  # the clip matters here
    assert float(alol_loss(w, logp.detach(), None, 0.9)) == pytest.approx(-(2.0 * -3.0 + 0.5 * -1.0) / 2)
    low = clipped_ratio(torch.tensor([-10.0]), torch.tensor([0.0]), 0.9)
    assert float(low) == pytest.approx(0.1)


def test_alol_seq_and_kl_losses_by_hand() -> None:
    w = torch.tensor([1.0])
    tok = torch.tensor([[-1.0, -2.0, -5.0]])
    ref = torch.tensor([[-1.5, -0.5, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third position is padding
    rho = [math.exp(0.5), max(math.exp(-1.5), 0.1)]
    expected = -(rho[0] * -1.0 + rho[1] * -2.0)
    assert float(alol_seq_loss(w, tok, ref, mask, 0.9)) == pytest.approx(expected, rel=1e-6)
    kl = alol_kl_loss(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -2.0]), torch.tensor([-4.0, -2.5]), beta=0.1)
    assert float(kl) == pytest.approx(((6.0 + 0.1 * 1.0) + (-2.0 + 0.1 * 0.5)) / 2)


def test_baseline_losses_by_hand() -> None:
    logp = torch.tensor([-2.0, -4.0])
    assert float(nll_loss(logp)) == pytest.approx(3.0)
    assert float(wbc_loss(torch.tensor([1.0, 0.25]), logp)) == pytest.approx((2.0 + 1.0) / 2)
    loss, margins = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5]), 0.1
    )
    z = 0.1 * ((-1.0 + 2.0) - (-3.0 + 2.5))  # 0.15
    assert float(margins[0]) == pytest.approx(z) and float(loss) == pytest.approx(math.log1p(math.exp(-z)))


def test_pro_loss_by_hand() -> None:
    s = torch.tensor([[-1.0, -2.0, -0.5]])
    r = torch.tensor([[1.0, 0.5, 0.0]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    # k = 0: gaps (0.5, 1.0), tau_00 = 1.0 -> logits (-1.0, -1.0, -0.5); k = 1: gap 0.5 -> logits (-1.0, -0.25)
    k0 = -(-1.0 - math.log(math.exp(-1.0) + math.exp(-1.0) + math.exp(-0.5)))
    k1 = -(-1.0 - math.log(math.exp(-1.0) + math.exp(-0.25)))
    assert float(pro_loss(s, r, valid)) == pytest.approx(k0 + k1, rel=1e-6)
    padded = torch.tensor([[-1.0, -2.0, 0.0]])
    mask = torch.tensor([[True, True, False]])  # a two-response ranking padded to three
    two = -(-1.0 * 0.5 - math.log(math.exp(-0.5) + math.exp(-2.0 * 0.5)))
    assert float(pro_loss(padded, torch.tensor([[1.0, 0.5, 0.0]]), mask)) == pytest.approx(two, rel=1e-6)


def test_token_logprobs_mask_prompt_and_padding() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    ids = torch.tensor([[3, 1, 4, 6, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 0]])  # prompt (3, 1), response (4, 6), padding 0
    per_token, total = token_logprobs(logits, ids, mask)
    lp = torch.log_softmax(logits, -1)
    expected = lp[0, 1, 4] + lp[0, 2, 6]
    assert float(total[0]) == pytest.approx(float(expected), rel=1e-6)
    assert per_token.shape == (1, 4) and per_token[0, 0] == 0 and per_token[0, 3] == 0


# --- learning --------------------------------------------------------------------------------------


def _learn(flip: bool) -> tuple[float, float]:
    """A-LoL on a synthetic task: reward = fraction of response tokens in the lower half of the vocabulary."""
    from agents.text.policy import LMPolicy, make_batch

    torch.manual_seed(0)
    pol = LMPolicy("tiny", seed=0)
    half = len(pol.tokenizer) // 2
    prompts = [[1, 100 + i, 200 + i, 2] for i in range(4)]

    def reward(responses: list[list[int]]) -> torch.Tensor:
        return torch.tensor([np.mean([t < half for t in r]) if r else 0.0 for r in responses], dtype=torch.float32)

    data_prompts = prompts * 8
    data = pol.generate(data_prompts, 6, True, seed=1, reference=True)
    r = reward(data)
    before = float(r.mean())
    v = r.view(8, 4).mean(0).repeat(8)  # V(x): the mean reward of pi_ref's samples per prompt
    adv = -(r - v) if flip else r - v
    keep = torch.nonzero(adv > 0).squeeze(-1)
    opt = torch.optim.Adam(pol.trainable(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = keep[torch.multinomial(adv[keep], 8, replacement=True, generator=gen)].tolist()
        b = make_batch([data_prompts[i] for i in idx], [data[i] for i in idx], pol.pad_id, pol.device)
        _, seq = pol.logprobs(b)
        _, ref = pol.logprobs(b, reference=True)
        loss = alol_loss(adv[idx], seq, ref, 0.9)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(reward(pol.generate(prompts * 16, 6, True, seed=2)).mean())
    return before, after


def test_alol_raises_the_reward_and_fails_with_the_advantage_flipped() -> None:
    before, after = _learn(flip=False)
    assert after > before + 0.15, (before, after)
    before_f, after_f = _learn(flip=True)
    assert after_f < before_f - 0.1, (before_f, after_f)


# --- runs ------------------------------------------------------------------------------------------

SMALL_AGENT = ["agent.model=tiny", "agent.batch_size=4", "agent.k_samples=1"]
SMALL_RUN = [
    "env=text-positive",
    "env.n_prompts=16",
    "env.eval_kwargs.n_prompts=4",
    "env.max_response_tokens=8",
    "eval.final_episodes=4",
    "eval.episodes=2",
    "eval.n_envs=2",
    "video.final_episodes=0",
    "progress=false",
]


def test_alol_run_writes_the_run_directory(run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "data"))
    run = tmp_path / "run"
    res = run_cli(
        "run.py", [*SMALL_RUN, "agent=alol", *SMALL_AGENT, "agent.value_steps=20", "steps=6", f"hydra.run.dir={run}"]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    for key in (
        "true_return_mean",
        "proxy_return_mean",
        "distinct_1",
        "distinct_2",
        "response_tokens",
        "kl_to_reference",
    ):
        assert summary[key] is not None, key
    assert summary["agent"] == "alol" and summary["eval_episodes"] == 4
    assert (run / "config.yaml").exists() and (run / "metrics.csv").exists()
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["split"] == "held_out" for r in records)
    assert "**true reward:**" in (run / "samples.md").read_text()
    data = list((tmp_path / "data" / "local" / "text").rglob("*.jsonl"))
    assert len(data) == 1 and len(data[0].read_text().splitlines()) == 16 * 2  # human + 1 sample per prompt


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["agent=sac"], "needs a Box action space"),
        (["agent=alol", *SMALL_AGENT, "agent.variant=a_lol_nope"], "agent.variant='a_lol_nope' is not one of"),
        (["agent=alol", *SMALL_AGENT, "env.task=nope"], "unknown task 'nope'"),
        (["agent=dpo", *SMALL_AGENT, "agent.data=/nonexistent/data.jsonl"], "no such file"),
    ],
)
def test_bad_input_is_refused_without_a_run_directory(
    run_cli: Any, tmp_path: Path, overrides: list[str], message: str
) -> None:
    run = tmp_path / "bad"
    res = run_cli("run.py", [*SMALL_RUN, *overrides, "steps=2", f"hydra.run.dir={run}"])
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
    assert not run.exists()


def _text_agent(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **agent: Any) -> tuple[Any, Any]:
    from omegaconf import OmegaConf

    from experiments.builders import build_agent, build_envs, build_reward, env_card
    from experiments.cli import check_composes

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "data"))
    extra = [f"agent.{k}={v}" for k, v in agent.items()]
    cfg = check_composes(
        ["env=text-positive", "env.n_prompts=8", "env.max_response_tokens=6", f"agent={name}", *SMALL_AGENT, *extra]
    )
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    reward = build_reward(cfg.reward)
    venv = build_envs(env_cfg, 1, 0, reward)
    return build_agent(cfg.agent, venv, reward, 0, "cpu", card=env_card(env_cfg)), venv


class _Log:
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_step(self, num_steps: int) -> bool:
        return True

    def on_log(self, num_steps: int, values: Any) -> None:
        self.rows.append(dict(values))


@pytest.mark.parametrize(
    "name,agent",
    [
        ("alol", {"variant": "a_lol_ref_free", "value_steps": 5}),
        ("alol", {"variant": "a_lol_seq", "value_steps": 5}),
        ("alol", {"variant": "a_lol_kl", "value_steps": 5}),
        ("alol", {"variant": "r_lol"}),
        ("wbc", {}),
        ("pro", {}),
        ("dpo", {"noisy": 0.5}),
    ],
)
def test_every_variant_and_baseline_trains_a_few_steps(
    name: str, agent: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, venv = _text_agent(name, tmp_path, monkeypatch, log_every=1, **agent)
    log = _Log()
    a.train(3, log)
    assert a.num_steps == 3 and len(log.rows) == 3 and all(np.isfinite(v) for r in log.rows for v in r.values())
    if agent.get("noisy"):
        sources = a.describe()["data"]["sources"]
        assert sources["shuffled"] == 4 and sources["human"] == 4  # half of the 8 human replies moved
    venv.close()


def test_noisy_data_moves_replies_to_other_prompts() -> None:
    from agents.text.data import make_noisy

    records = [
        {"prompt_index": i, "prompt": f"p{i}", "response": f"r{i}", "source": "human", "true_reward": 0.0}
        for i in range(10)
    ]
    records.append({"prompt_index": 0, "prompt": "p0", "response": "s", "source": "reference", "true_reward": 0.0})

    def score(prompts: Any, responses: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return np.ones(len(responses), np.float32), {"x": np.ones(len(responses), np.float32)}

    noisy = make_noisy(records, 0.4, 0, score)
    moved = [r for r in noisy if r["source"] == "shuffled"]
    assert len(moved) == 4 and all(r["response"] != f"r{r['prompt_index']}" for r in moved)
    assert noisy[-1] == records[-1] and make_noisy(records, 0.4, 0, score) == noisy


def test_batched_logprobs_equal_unpadded_ones() -> None:
    """Left padding, position ids and logits_to_keep change nothing: each row scores as it would alone."""
    from agents.text.policy import LMPolicy, make_batch

    pol = LMPolicy("tiny")
    prompts, responses = [[1, 5, 6, 7, 8, 2], [1, 9]], [[11, 12], [13, 14, 15, 2]]
    batch = make_batch(prompts, responses, pol.pad_id, "cpu")
    per_token, total = pol.logprobs(batch)
    assert per_token.shape == (2, 4) and batch.response_mask().sum().item() == 6
    for i in range(2):
        alone = torch.tensor([prompts[i] + responses[i]])
        with torch.no_grad():
            logits = pol.lm(input_ids=alone).logits
        mask = torch.tensor([[0] * len(prompts[i]) + [1] * len(responses[i])])
        torch.testing.assert_close(total[i], token_logprobs(logits, alone, mask)[1][0], atol=1e-4, rtol=1e-4)
    ref = pol.logprobs(batch, reference=True)[1]
    torch.testing.assert_close(ref, total.detach())  # before training, pi_ref is the policy


def test_reference_logprobs_are_computed_once_per_chunk_and_equal_pi_refs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached pi_ref log-probs of data items equal a direct pass of pi_ref, row for row, for draws in any
    order and with repeats, only the drawn chunks are scored, and training the policy does not change them."""
    a, venv = _text_agent("alol", tmp_path, monkeypatch, batch_size=4, value_steps=5, learning_rate=1e-2)
    a.load_data()
    assert len(a.records) >= 16  # 8 prompts x (human reply + reference samples)
    for index in ([5, 1, 5, 2], [9, 0]):
        batch = a.items(index)
        tok, seq = a.reference_logprobs(index, batch)
        direct_tok, direct_seq = a.policy.logprobs(batch, reference=True)
        torch.testing.assert_close(tok, direct_tok, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(seq, direct_seq, atol=1e-5, rtol=1e-5)
    assert a._ref_chunks == {0, 1, 2} and set(a._ref_cache) == set(range(12))  # items 0-11 in chunks of 4
    a.train(3, _Log())
    a._ref_cache.clear(), a._ref_chunks.clear()  # scored again now that the policy has moved
    index = [3, 8, 0, 13]
    batch = a.items(index)
    with torch.no_grad():
        policy_seq = a.policy.logprobs(batch)[1]
    _, seq = a.reference_logprobs(index, batch)
    torch.testing.assert_close(seq, a.policy.logprobs(batch, reference=True)[1], atol=1e-5, rtol=1e-5)
    assert (seq - policy_seq).abs().max() > 1e-3  # the policy moved away from pi_ref; the cache did not follow
    venv.close()
