"""The reward search's decisions (experiments/reward_search.py): Eureka's fitness, argmax and feedback; ICPL's ranking.

The search runs in this process against the fake OpenAI server with the training step replaced:
each program carries a ``VARIANT = k`` line and "trains" to canned results, so which program must
be selected, and what the next prompt must say about it, is known exactly. The programs are real:
they pass the static and sandboxed smoke checks as any answer does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from envs.errors import ConfigError
from experiments import reward_search
from rewards.code.programs import program_path
from tests.fake_openai import chat_reply, fake_openai

CARTPOLE = program_path("cartpole").read_text()


def _program(variant: int) -> str:
    return f"{CARTPOLE}\nVARIANT = {variant}\n"


def _result(true_return: float, success: list[float] | None = None, alive: tuple[float, float] = (5.0, 15.0)) -> dict[str, Any]:
    """Canned results of a 2-evaluation training run; ``success``: the success rate at each evaluation (None: no success)."""
    return {
        "trained": True,
        "true_return": true_return,
        "success": None if success is None else success[-1],  # the final evaluation's
        "proxy_return": 1.0,
        "components": {"alive": alive[-1]},
        "traces": {
            "true_return": [true_return / 2, true_return],
            **({} if success is None else {"success": list(success)}),
            "episode_length": [11.0, 22.0],
            "component/alive": list(alive),
            "component/upright": [0.25, 0.75],
        },
        "steps_at": [500, 1000],
        "videos": [],
        "train_s": 0.0,
    }


def _search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, results: dict[int, dict[str, Any]], per_iteration: list[list[int]], *extra: str
) -> tuple[dict[str, Any], list[str]]:
    """Run the search in-process; ``per_iteration[i]``: the variants the model answers in iteration i.

    Returns:
        ``(search.json, the user prompt of every model call in order)``.
    """

    def train(args: list[str], run_dir: Path, timeout: float) -> dict[str, Any]:
        source = next(a.split("=", 1)[1] for a in args if a.startswith("reward.source="))
        variant = int(Path(source).read_text().rsplit("VARIANT = ", 1)[1])
        return json.loads(json.dumps(results[variant]))  # a fresh copy per run

    monkeypatch.setattr(reward_search, "_train", train)
    replies = [chat_reply(f"```python\n{_program(v)}```") for it in per_iteration for v in it]
    samples = {len(it) for it in per_iteration}
    assert len(samples) == 1
    out = tmp_path / "S"
    with fake_openai(replies) as (base_url, state):
        reward_search.main([
            "env=cartpole", "env.sutton_barto_reward=true", 'reward.task="balance the pole"', "llm=openai", "llm.model=fake-model",
            f"llm.base_url={base_url}", f"llm.cache_dir={tmp_path / 'cache'}", "llm.max_retries=0", "reward.smoke_samples=64",
            f"iterations={len(per_iteration)}", f"samples={samples.pop()}", "workers=1", "torch_threads=1", f"out={out}", *extra,
        ])  # fmt: skip
        prompts = [r["json"]["messages"][-1]["content"] for r in state.chat_requests()]
    return json.loads((out / "search.json").read_text()), prompts


def _previous(prompt: str) -> str:
    """The program a prompt feeds back (``Your previous program`` block)."""
    return prompt.split("Your previous program:\n```python\n", 1)[1].split("```", 1)[0]


def test_fitness_is_the_max_success_over_training_else_the_true_return() -> None:
    # success: the maximum over training (every evaluation, the final one included), not the final value
    assert reward_search.fitness(_result(90.0, success=[0.2, 0.9, 0.4])) == 0.9
    assert reward_search.fitness(_result(90.0, success=[0.2, 0.0, 0.7])) == 0.7
    assert reward_search.fitness(_result(10.0, success=[0.0, 0.0])) == 0.0  # success defined: the return plays no part
    # no success defined: the final evaluation's true return
    assert reward_search.fitness(_result(42.5)) == 42.5


def test_eureka_takes_the_argmax_and_feeds_back_this_iterations_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = {
        # iteration 0: sample 1 has the highest max success (0.9) but the lowest return and final success
        0: _result(90.0, success=[0.3, 0.5]),
        1: _result(10.0, success=[0.9, 0.1], alive=(2.0, 40.0)),
        2: _result(50.0, success=[0.4, 0.4]),
        # iteration 1: the best (sample 1, 0.6) is worse than iteration 0's
        3: _result(99.0, success=[0.1, 0.2]),
        4: _result(5.0, success=[0.6, 0.6], alive=(7.0, 8.0)),
        5: _result(70.0, success=[0.0, 0.3]),
        # iteration 2: a tie between samples 0 and 2: the first wins, as np.argmax
        6: _result(1.0, success=[0.8, 0.2]),
        7: _result(2.0, success=[0.1, 0.2]),
        8: _result(3.0, success=[0.5, 0.8]),
    }
    record, prompts = _search(tmp_path, monkeypatch, results, [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    assert [it["iteration_best"] for it in record["iterations"]] == ["iter_0/sample_1", "iter_1/sample_1", "iter_2/sample_0"]
    assert [it["best_so_far"] for it in record["iterations"]] == ["iter_0/sample_1"] * 3
    assert record["best"]["name"] == "iter_0/sample_1" and record["best"]["results"]["fitness"] == 0.9
    assert (tmp_path / "S" / "best_program.py").read_text() == _program(1)
    assert len(prompts) == 9 and "Your previous program" not in prompts[0]
    # iteration 1 is told about iteration 0's best; iteration 2 about iteration 1's, though it is worse than the best so far
    assert all(_previous(p) == _program(1) for p in prompts[3:6])
    assert all(_previous(p) == _program(4) for p in prompts[6:9])
    # Eureka's reflection: every component and the task score with values, max, mean and min; no true return, no correlation
    assert "- component alive: [2.00, 40.00], Max: 40.00, Mean: 21.00, Min: 2.00" in prompts[3]
    assert "- component upright: [0.25, 0.75], Max: 0.75, Mean: 0.50, Min: 0.25" in prompts[3]
    assert "- task score (success rate): [0.90, 0.10], Max: 0.90, Mean: 0.50, Min: 0.10" in prompts[3]
    assert "- episode length: [11.00, 22.00], Max: 22.00" in prompts[3]
    assert "- component alive: [7.00, 8.00], Max: 8.00, Mean: 7.50, Min: 7.00" in prompts[6]
    assert not any("ground-truth" in p or "correlation" in p for p in prompts)
    fitness = {c["name"]: c["results"]["fitness"] for it in record["iterations"] for c in it["candidates"]}
    assert fitness["iter_0/sample_0"] == 0.5 and fitness["iter_1/sample_2"] == 0.3
    saved = json.loads((tmp_path / "S" / "iter_0" / "sample_1" / "candidate.json").read_text())
    assert saved["results"]["fitness"] == 0.9


@pytest.mark.parametrize("correlation", [False, True])
def test_eureka_without_success_selects_by_return_and_shows_the_correlation_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, correlation: bool
) -> None:
    results = {0: _result(20.0), 1: _result(60.0), 2: _result(60.0, alive=(1.0, 3.0)), 3: _result(1.0)}
    extra = ["feedback_correlation=true"] if correlation else []
    record, prompts = _search(tmp_path, monkeypatch, results, [[0, 1, 2], [3, 3, 3]], *extra)
    assert record["iterations"][0]["iteration_best"] == "iter_0/sample_1"  # 60 = 60: the first
    assert _previous(prompts[3]) == _program(1)
    assert "- ground-truth score (the task's own return per episode): [30.00, 60.00], Max: 60.00, Mean: 45.00, Min: 30.00" in prompts[3]
    assert "- task score" not in prompts[3]
    corr = record["iterations"][0]["candidates"][1]["check"]["pearson_true"]
    assert corr is not None  # Sutton & Barto's reward varies, so the correlation exists: it is withheld, not missing
    line = f"- correlation of your reward with the task's reward on random transitions: {round(corr, 3)}"
    assert (line in prompts[3]) is correlation
    assert ("correlation" in prompts[3]) is correlation


def _ranked(results: dict[int, dict[str, Any]], teacher: str = "synthetic") -> list[str]:
    cands = [{"name": f"s{k}", "results": r} for k, r in results.items()]
    return [c["name"] for c in reward_search.rank_icpl(cands, teacher)]


def test_icpl_synthetic_teacher_ranks_by_what_the_rollouts_show() -> None:
    # success defined: the final evaluation's success rate (what the videos show), not the max over training or the return
    assert _ranked({0: _result(90.0, success=[0.9, 0.2]), 1: _result(10.0, success=[0.1, 0.7]), 2: _result(50.0, success=[0.4, 0.4])}) == [
        "s1", "s2", "s0"]  # fmt: skip
    # no success: the true return; ties keep the sample order
    assert _ranked({0: _result(5.0), 1: _result(80.0), 2: _result(5.0), 3: _result(30.0)}) == ["s1", "s3", "s0", "s2"]
    # equal success: the higher true return first
    assert _ranked({0: _result(1.0, success=[0.5]), 1: _result(9.0, success=[0.5])}) == ["s1", "s0"]


def test_icpl_terminal_teacher_asks_until_it_gets_a_ranking(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter(["first", "0 0 1", "2 0", "2 0 1"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert _ranked({0: _result(1.0), 1: _result(2.0), 2: _result(3.0)}, teacher="terminal") == ["s2", "s0", "s1"]
    assert capsys.readouterr().out.count("please give each of 0..2 once") == 3


@pytest.mark.parametrize("teacher", ["synthetic", "terminal"])
def test_icpl_feeds_back_the_preferred_and_least_preferred_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher: str
) -> None:
    results = {0: _result(50.0, success=[0.9, 0.5]), 1: _result(10.0, success=[0.0, 0.8]), 2: _result(90.0, success=[0.3, 0.1]), 3: _result(1.0)}
    if teacher == "terminal":
        monkeypatch.setattr("builtins.input", lambda prompt="": "2 1 0")
    preferred, least = (1, 2) if teacher == "synthetic" else (2, 0)
    record, prompts = _search(tmp_path, monkeypatch, results, [[0, 1, 2], [3, 3, 3]], "mode=icpl", f"teacher={teacher}")
    assert record["iterations"][0]["iteration_best"] == f"iter_0/sample_{preferred}"
    for prompt in prompts[3:]:
        assert _previous(prompt) == _program(preferred)
        assert f"The least preferred program was:\n```python\n{_program(least).strip()}\n```" in prompt
        assert "- component alive:" in prompt and "Max:" in prompt
        for leak in ("task score", "ground-truth", "episode length", "correlation", "true return"):
            assert leak not in prompt


def test_correlation_feedback_is_refused_for_icpl() -> None:
    with pytest.raises(ConfigError, match="feedback_correlation=true is for mode=eureka"):
        reward_search.main(["mode=icpl", "feedback_correlation=true", 'reward.task="x"'])
    with pytest.raises(ConfigError, match="feedback_correlation='yes' must be true or false"):
        reward_search.main(["feedback_correlation=yes", 'reward.task="x"'])
