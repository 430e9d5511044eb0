"""The LLM engine: the real packaged SmolLM2 converted into a temporary cache and run on CPU, and the
OpenAI-compatible client against an in-test HTTP server.

The server (`ChatServer`, stdlib `http.server` on 127.0.0.1) speaks the chat-completions protocol and
stands in for vLLM: vLLM serving a vision-language model cannot run on the machines of this project
(no GPU, no hub). It answers from a function the test gives it, and records every request so the tests
can check what a real server would receive.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from memory.runtime import ModelMissing
from memory.runtime.llm import LLMS, LLMError, LocalLLM, OpenAIChatLLM, make_llm, prepare_llm
from tests.helpers import ChatServer, dead_url

FOLDER = LLMS["smollm2"].folder


# --- an OpenAI-compatible server -----------------------------------------------------------------


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- the embedded model ----------------------------------------------------------------------------


def test_conversion_is_complete_and_ignores_debris(smollm2_cache: Path) -> None:
    root = smollm2_cache / "llm"
    folder = prepare_llm(smollm2_cache)  # second call: returns at once
    assert folder == root / FOLDER
    assert (folder / "vidmem-converted.json").is_file()
    assert (folder / "model.safetensors").stat().st_size > 100e6  # the truncated debris was replaced
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert [p.name for p in root.iterdir()] == [FOLDER]  # no temporary folders left behind


def test_smollm2_generates_and_batches_like_one_by_one(smollm2_cache: Path) -> None:
    llm = LocalLLM("smollm2", smollm2_cache, batch_size=3)
    conversations = [
        user("Name a colour."),
        user("Write the word hello in capital letters, please."),
        [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France? Answer briefly and clearly."},
        ],
    ]
    batch = llm.chat_batch(conversations, max_tokens=8)
    single = [llm.chat(c, max_tokens=8) for c in conversations]
    assert all(isinstance(t, str) and t for t in batch)
    assert batch == single  # greedy decoding with left padding: batching changes nothing


def test_local_folder_is_a_model_name(smollm2_cache: Path) -> None:
    folder = prepare_llm(smollm2_cache)
    llm = make_llm(str(folder))
    assert isinstance(llm, LocalLLM)
    assert llm.chat(user("Say yes."), max_tokens=3)


def test_text_model_refuses_images(smollm2_cache: Path) -> None:
    llm = LocalLLM("smollm2", smollm2_cache)
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
    with pytest.raises(LLMError, match="text-only"):
        llm.chat([{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}])


def test_unknown_llm_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="smollm2"):
        make_llm("gpt-17", tmp_path)
    with pytest.raises(ValueError, match="cache_dir"):
        LocalLLM("smollm2", None)


# --- an OpenAI-compatible server -----------------------------------------------------------------


def test_server_replies_in_order_with_concurrent_requests() -> None:
    def answer(body: dict[str, Any]) -> str:
        n = int(body["messages"][-1]["content"])
        time.sleep(0.05 * (5 - n))  # later requests finish first
        return f"reply {n}"

    with ChatServer(answer) as server:
        llm = OpenAIChatLLM(server.url, "served-model", api_key="sk-test", max_concurrency=5)
        replies = llm.chat_batch([user(str(n)) for n in range(5)], max_tokens=7)
    assert replies == [f"reply {n}" for n in range(5)]
    assert {r["model"] for r in server.requests} == {"served-model"}
    assert {r["max_tokens"] for r in server.requests} == {7}
    assert all(r["temperature"] == 0 for r in server.requests)
    assert all(h["authorization"] == "Bearer sk-test" for h in server.headers)


def test_server_errors_name_the_url() -> None:
    url = dead_url()
    with pytest.raises(LLMError, match=f"cannot reach {url}"):
        OpenAIChatLLM(url, "m", max_retries=0, timeout=5).chat(user("hi"))
    with ChatServer(mode="500") as server:
        with pytest.raises(LLMError, match="HTTP 500.*out of memory") as e:
            OpenAIChatLLM(server.url, "m", max_retries=0).chat_batch([user("a"), user("b")], max_tokens=4)
        assert server.url in str(e.value)
    with ChatServer(mode="garbage") as server, pytest.raises(LLMError, match=server.url):
        OpenAIChatLLM(server.url, "m", max_retries=0).chat(user("hi"))


def test_replicas_share_the_work_and_a_failing_one_is_skipped_until_it_recovers() -> None:
    """Two OpenAI-compatible servers on 127.0.0.1 (speaking the chat-completions protocol; the real
    vLLM replicas are in test_llm_server.py): a batch spreads over both; one answering 500 gets at most
    the request in flight to it before it is skipped, every request still answered by the other;
    once it answers again and its cool-down has passed it takes work again."""
    with ChatServer(lambda b: "a") as a, ChatServer(lambda b: "b") as b:
        llm = OpenAIChatLLM(f"{a.url}, {b.url}", "m", max_concurrency=1, cooldown=2.0)
        assert [e["url"] for e in llm.health()] == [a.url, b.url]
        replies = llm.chat_batch([user(str(i)) for i in range(8)], max_tokens=4)
        assert sorted(set(replies)) == ["a", "b"]  # both took work (fewest in flight, ties in turn)
        b.mode, before = "500", len(b.requests)
        assert llm.chat_batch([user(str(i)) for i in range(8)], max_tokens=4) == ["a"] * 8
        assert len(b.requests) - before == 1  # the one in flight to it, then skipped
        state = llm.health()[1]
        assert not state["up"] and "HTTP 500" in state["last_error"] and state["failures"] >= 1
        failed = len(b.requests)
        assert llm.chat_batch([user(str(i)) for i in range(4)], max_tokens=4) == ["a"] * 4
        assert len(b.requests) == failed  # still cooling down: not tried
        b.mode = "ok"
        time.sleep(2.1)  # past its cool-down
        assert "b" in llm.chat_batch([user(str(i)) for i in range(8)], max_tokens=4)
        assert llm.health()[1]["up"] and llm.health()[1]["failures"] == 0
        a.mode = b.mode = "500"
        with pytest.raises(LLMError, match="no endpoint") as e:
            llm.chat(user("hi"))
        assert a.url in str(e.value) and b.url in str(e.value)


def test_bad_server_settings_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="http://"):
        OpenAIChatLLM("localhost:8000", "m")
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIChatLLM("http://127.0.0.1:1/v1", "m", max_concurrency=0)


def test_a_cut_short_json_reply_is_closed_and_a_whole_one_is_recognised() -> None:
    from memory.runtime.llm import _parse_json_reply, close_json, json_closed

    cut = '{"answerable": true, "citations": [2, 3], "answer": "The mask hides the \\"sky'
    assert json.loads(close_json(cut)) == {
        "answerable": True,
        "citations": [2, 3],
        "answer": 'The mask hides the "sky',
    }
    assert json.loads(close_json('{"a": [1, 2,')) == {"a": [1, 2]}
    assert close_json('{"a": 1}') is None and close_json('{"a":') is None and close_json("no json") is None
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    assert _parse_json_reply('{"answer": "half a sente', schema) == {"answer": "half a sente"}
    assert json_closed('{"a": "}", "b": {"c": [1]}} and more') and json_closed('prose {"a": 1}')
    assert not json_closed('{"a": "x\\"}"') and not json_closed('{"a": {"b": 1}')
