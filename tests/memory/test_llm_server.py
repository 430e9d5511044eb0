"""The `openai` engine against a REAL vLLM server (the CPU build, in its own virtual environment),
plus structured output and the tool-calling fallback of the in-process engine.

One server per session (the `vllm_server` fixture of conftest.py, shared with the answer tests).

Nothing here is skipped: without the vLLM environment the tests fail and say to run `make vllm`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from memory.runtime.llm import (
    LLMS,
    LLMError,
    LocalLLM,
    OpenAIChatLLM,
    ToolCall,
    _parse_json_reply,
    prepare_llm,
    schema_error,
)
from service.llm_server import (
    LLMServerError,
    VLLMServer,
    free_port,
    require_venv,
    venv_ready,
)
from tests.conftest import SERVED, packaged_model_cache

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_moments",
            "description": "Search the video library for moments matching a query.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for."},
                    "limit": {"type": "integer", "description": "How many moments, at most."},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "seek",
            "description": "Move the player to a time in the video.",
            "parameters": {
                "type": "object",
                "properties": {"seconds": {"type": "number", "description": "Seconds from the start."}},
                "required": ["seconds"],
            },
        },
    },
]

HAIKU = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
    },
    "required": ["title", "lines"],
    "additionalProperties": False,
}

MOMENT = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "start_seconds": {"type": "number"}},
    "required": ["answer", "start_seconds"],
}

TRANSCRIPT = (
    "Transcript of the video, each line with its start time in seconds:\n"
    "[3.0] Welcome to the cooking show.\n"
    "[41.5] Now we add two eggs to the flour.\n"
    "[80.0] The cake goes into the oven for thirty minutes."
)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- the openai engine against vLLM ---------------------------------------------------------------


def test_plain_answer_and_usage(served: OpenAIChatLLM) -> None:
    reply = served.chat(user("What is the capital of France? Answer with one word."), max_tokens=8)
    assert "paris" in reply.lower()
    assert served.prompt_tokens > 10  # the chat template alone is longer than that
    assert 0 < served.completion_tokens <= 8
    before = (served.prompt_tokens, served.completion_tokens)
    replies = served.chat_batch([user("Say yes."), user("Say no.")], max_tokens=4)
    assert len(replies) == 2 and all(replies)
    assert served.prompt_tokens > before[0] and served.completion_tokens > before[1]


def test_structured_output_is_enforced_by_the_server(served: OpenAIChatLLM) -> None:
    # The prompt does not mention JSON: only the server's schema-constrained decoding makes it JSON.
    poem = served.chat_json(user("Write a haiku about rain."), HAIKU, max_tokens=120)
    assert schema_error(poem, HAIKU) is None
    assert len(poem["lines"]) == 3 and set(poem) == {"title", "lines"}
    moment = served.chat_json(
        [{"role": "system", "content": TRANSCRIPT}, *user("When are the eggs added?")], MOMENT, max_tokens=60
    )
    assert isinstance(moment["answer"], str) and isinstance(moment["start_seconds"], int | float)


def test_named_tool_call(served: OpenAIChatLLM) -> None:
    named = {"type": "function", "function": {"name": "search_moments"}}
    calls = served.chat_tools(user("Find where the cat jumps on the table."), TOOLS, named, max_tokens=60)
    assert len(calls) == 1 and isinstance(calls[0], ToolCall)
    assert calls[0].name == "search_moments"
    assert isinstance(calls[0].arguments["query"], str) and "cat" in calls[0].arguments["query"].lower()


def test_required_tool_call_picks_the_tool(served: OpenAIChatLLM) -> None:
    calls = served.chat_tools(user("Move the player to 90 seconds."), TOOLS, "required", max_tokens=60)
    assert calls and calls[0].name == "seek"
    assert calls[0].arguments["seconds"] == pytest.approx(90)


def test_tool_choice_auto_is_refused_before_sending(served: OpenAIChatLLM) -> None:
    sent = served.prompt_tokens
    with pytest.raises(ValueError, match="auto"):
        served.chat_tools(user("hi"), TOOLS, "auto")
    with pytest.raises(ValueError, match="not among the tools"):
        served.chat_tools(user("hi"), TOOLS, {"type": "function", "function": {"name": "delete_all"}})
    assert served.prompt_tokens == sent


def test_dead_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAIChatLLM(url, SERVED, max_retries=0, timeout=5)
    with pytest.raises(LLMError, match=f"cannot reach {url}"):
        llm.chat(user("hi"))
    with pytest.raises(LLMError, match=url):
        llm.chat_json(user("hi"), MOMENT)
    with pytest.raises(LLMError, match=url):
        llm.chat_tools(user("hi"), TOOLS)


def test_two_replicas_share_the_work_and_a_killed_one_is_skipped(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    """Two real vLLM servers of the same model: a batch is spread over both; SIGKILL one (its whole
    process group, as a lost machine) and every request is still answered, by the other."""
    import os
    import signal

    from service.llm_server import server_for

    second = server_for(SERVED, packaged_model_cache(), port=free_port(), log_path=tmp_path / "second.log")
    with second:
        llm = OpenAIChatLLM(f"{vllm_server.url},{second.url}", SERVED, max_retries=0, timeout=60)
        asks = [user(f"Say the number {i}.") for i in range(6)]
        assert all(llm.chat_batch(asks, max_tokens=6))
        assert [e["served"] >= 1 for e in llm.health()] == [True, True]
        assert second.process is not None
        os.killpg(second.process.pid, signal.SIGKILL)
        second.process.wait()
        first = llm.health()[0]["served"]
        assert all(llm.chat_batch(asks, max_tokens=6))
        one, two = llm.health()
        # the dead one was tried, failed and was skipped; whether it still cools down when the batch
        # ends depends on how long the rest took (5 s after its first failure)
        assert (
            one["served"] == first + len(asks)
            and two["failures"] >= 1
            and "cannot reach" in two["last_error"]
        )


# --- server management -----------------------------------------------------------------------------


def test_missing_venv_says_make_vllm(tmp_path: Path) -> None:
    assert not venv_ready(tmp_path)
    with pytest.raises(LLMServerError, match="make vllm"):
        require_venv(tmp_path)
    server = VLLMServer(tmp_path, "m", venv=tmp_path / "nowhere")
    with pytest.raises(LLMServerError, match="make vllm"):
        server.start()
    assert server.process is None


def test_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    """A folder that is no model: vLLM exits during start-up and the error carries its log tail."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    server = VLLMServer(tmp_path, "broken", port=free_port(), log_path=tmp_path / "log", startup_timeout=120)
    with pytest.raises(LLMServerError, match=r"exited with status .* before it was ready") as e:
        server.start()
    assert "no-such-architecture" in str(e.value) or "Error" in str(e.value)
    assert server.process is None


# --- the in-process engine -------------------------------------------------------------------------


def test_json_reply_parsing_and_schema_errors() -> None:
    assert _parse_json_reply('Sure! ```json\n{"answer": "x", "start_seconds": 4}\n```', MOMENT) == {
        "answer": "x",
        "start_seconds": 4,
    }
    with pytest.raises(LLMError, match="lacks the required key 'start_seconds'"):
        _parse_json_reply('{"answer": "x"}', MOMENT)
    with pytest.raises(LLMError, match="no JSON object"):
        _parse_json_reply("at 4 seconds {not json", MOMENT)
    assert (
        schema_error({"answer": "x", "start_seconds": True}, MOMENT)
        == "$.start_seconds should be number, got bool"
    )
    assert "at most 3" in str(schema_error({"title": "t", "lines": ["a"] * 4}, HAIKU))
    assert "does not allow" in str(schema_error({"title": "t", "lines": ["a"] * 3, "x": 1}, HAIKU))


def test_local_chat_json_with_smollm2(model_cache: Path) -> None:
    prepare_llm(model_cache)  # converted once per session (tests/memory/test_llm.py usually did it already)
    llm = LocalLLM("smollm2", model_cache)
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    value = llm.chat_json(user("Name one colour of the rainbow."), schema, max_tokens=40)
    assert schema_error(value, schema) is None and value["colour"]
    assert llm.prompt_tokens > 0 and llm.completion_tokens > 0


def test_local_json_failure_after_one_retry_is_clear(model_cache: Path) -> None:
    llm = LocalLLM("smollm2", model_cache)
    impossible = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 10**9}},
        "required": ["n"],
    }
    with pytest.raises(LLMError, match="did not produce a JSON object matching the schema after one retry"):
        llm.chat_json(user("Say hello."), impossible, max_tokens=12)


def test_local_tool_call_fallback_with_qwen() -> None:
    llm = LocalLLM(SERVED, packaged_model_cache())
    named = {"type": "function", "function": {"name": "search_moments"}}
    [call] = llm.chat_tools(user("Find where the cat jumps on the table."), TOOLS, named, max_tokens=40)
    assert call.name == "search_moments" and "cat" in call.arguments["query"].lower()


def test_packaged_llms_are_described() -> None:
    assert {"smollm2", "qwen0.5b", "qwen1.5b"} <= set(LLMS)
    assert len(LLMS["qwen0.5b"].parts) == 6 and len(LLMS["qwen1.5b"].parts) == 22
    assert LLMS["qwen0.5b"].parts[5].file == "data/part06.bin"
