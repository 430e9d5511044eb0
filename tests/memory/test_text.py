"""The text encoder: the embedded default runs without sentence-transformers and gives its vectors;
other folders still run in sentence-transformers; token counts are the model tokenizer's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory.runtime import bert
from memory.runtime.text import SentenceEmbedder, text_model_path, token_counts

ROOT = Path(__file__).resolve().parents[2]

TEXTS = [
    "a rabbit wakes up in the forest",
    "  on screen: BIG BUCK BUNNY HAS BEEN REALISED  ",  # sentence-transformers strips the ends
    "",
    "x",
    "Élan vital — naïve café, 東京 and ÅNGSTRÖM",
    "the speaker explains how to set the white balance before shooting " * 40,  # > 256 tokens: cut
    *[f"step {i}: press the button labelled {chr(65 + i)} twice" for i in range(70)],  # two batches
]


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(text_model_path("all-MiniLM-L6-v2")), device="cpu")


def test_the_default_model_gives_sentence_transformers_vectors(reference) -> None:  # type: ignore[no-untyped-def]
    folder = text_model_path("all-MiniLM-L6-v2")
    assert bert.runs(folder)
    ours = SentenceEmbedder().embed(TEXTS)
    theirs = reference.encode(TEXTS, batch_size=64, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5
    # and the vectors mean something: a paraphrase is nearer than an unrelated line
    q = SentenceEmbedder().embed(["a bunny gets up in the woods"])[0]
    assert q @ ours[0] > q @ ours[6] + 0.2


def test_embedding_and_counting_import_no_sentence_transformers() -> None:
    code = (
        "import sys\n"
        "from memory.runtime.text import SentenceEmbedder, token_counts\n"
        "v = SentenceEmbedder().embed(['a rabbit in the forest'])\n"
        "n = token_counts(['a rabbit in the forest'])\n"
        "print(v.shape, n, sorted(m for m in ('sentence_transformers', 'transformers', 'sklearn') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(1, 384) [5] []"


def test_a_folder_it_cannot_run_goes_to_sentence_transformers(tmp_path: Path, reference) -> None:  # type: ignore[no-untyped-def]
    # the packaged model with CLS pooling instead of the mean: another sentence-transformers model
    folder = tmp_path / "cls-model"
    shutil.copytree(text_model_path("all-MiniLM-L6-v2"), folder)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(
        json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    )
    assert not bert.runs(folder)
    lowered = tmp_path / "lower-cased"  # sentence-transformers would lower-case its input first
    shutil.copytree(text_model_path("all-MiniLM-L6-v2"), lowered)
    (lowered / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": True})
    )
    assert not bert.runs(lowered)

    from sentence_transformers import SentenceTransformer

    ours = SentenceEmbedder(str(folder)).embed(TEXTS[:5])
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:5], normalize_embeddings=True)
    assert np.abs(ours - theirs).max() < 1e-6
    assert np.abs(ours - reference.encode(TEXTS[:5], normalize_embeddings=True)).max() > 1e-2  # not the mean


def test_token_counts_are_the_tokenizers_without_truncation() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(text_model_path("all-MiniLM-L6-v2")))
    expected = [len(ids) for ids in tokenizer(TEXTS, add_special_tokens=False)["input_ids"]]
    assert token_counts(TEXTS) == expected
    assert max(expected) > 256  # counted whole, not cut where the encoder cuts
    assert token_counts([]) == []
