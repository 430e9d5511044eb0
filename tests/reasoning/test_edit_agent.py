"""The edit agent on the suite's real vLLM server (Qwen2.5-Coder-0.5B, CPU build): 20+ scripted
intents about a subtitled excerpt of Big Buck Bunny become valid requests — anchor inside the video,
an insertion snapped to a shot boundary, a non-empty prompt — queued as jobs. Nothing here is a double:
real catalog, real search, real model under vLLM's structured output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from indexers import ingest
from indexers.captions import CaptionOptions
from indexers.pipeline import IngestOptions
from memory import Store
from reasoning.edit_agent import request_from_intent
from reasoning.generate import load_source
from service import jobs
from tests.helpers import INTENTS, edit_footage


@pytest.fixture(scope="module")
def workshop(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Any:
    root = tmp_path_factory.mktemp("workshop")
    clip, srt = edit_footage(root)
    store = Store(root / "home")
    options = IngestOptions(library="shop", subtitles=srt, captions=CaptionOptions(llm=None), look=None)
    vid = ingest(store, clip, options, cache_dir=model_cache).video_id
    yield store, vid
    store.close()


def test_intents_become_valid_requests(workshop: Any, served: Any) -> None:
    store, vid = workshop
    source = load_source(store, vid)
    boundaries = {round(b * source.fps) for b in source.boundaries}
    edits = jobs.QueueEdits(store, "shop")
    results = [request_from_intent(store, served, intent, vid, edits, "shop") for intent, _, _ in INTENTS]
    valid = [r for r in results if r.valid]
    assert len(results) >= 20
    assert len(valid) >= 0.9 * len(results), [r.error for r in results if not r.valid]
    for r in valid:
        plan = r.job["plan"]  # type: ignore[index]
        assert 0 <= plan["start"] <= plan["end"] <= source.duration
        assert plan["prompt"].strip() and plan["prompt_source"] == "caller"  # the model wrote it
        if plan["start"] == plan["end"]:  # an insertion: on a shot boundary
            assert round(plan["start"] * source.fps) in boundaries
        job, _ = jobs.get_job(store, r.job["id"])  # type: ignore[index]
        assert job.status == "queued" and job.kind == "generate"
    # what the model chose is checked, not trusted: a choice that cannot be made is refused with a reason
    assert all(r.error for r in results if not r.valid)
