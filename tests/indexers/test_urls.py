"""Media by URL: `s3://`, `http(s)://` and `file://` sources ingested like local files, read by byte
ranges, known again by what the store says of them, and refused cleanly when they cannot be read.

The S3-compatible server is moto's (`moto.server.ThreadedMotoServer`, moto[server] 5.2) on
127.0.0.1: real HTTP, reached by s3fs/botocore and by ffmpeg through pre-signed URLs; nothing is
patched in-process. The HTTP server is a small `http.server` that honours `Range` and counts what
it sends (tests/remote.py). Real SQLite, decoders and speech model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from indexers import IngestOptions, MediaError, ingest, probe
from indexers.captions import CaptionOptions
from indexers.decode import sample_frames
from indexers.source import StorageOptions, media_source, source_uri, under
from indexers.transcript import TranscribeOptions
from memory import EmbeddingRow, Library, Segment, Store, TranscriptCue, Video
from tests.media import CutClip, make_cut_clip, make_narrated_clip, truncate_copy, write_srt
from tests.remote import RangeServer, S3Server

VIDMEM = Path(sys.executable).parent / "vidmem"


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s, three shots (cuts at 3 s and 7 s), one spoken phrase."""
    return make_narrated_clip(
        tmp_path_factory.mktemp("talk"), phrases=("the purple giraffe eats bright oranges",), starts=(2.0,),
        total_seconds=10.0, cut_frames=(72, 168), name="talk.mp4",
    ).path  # fmt: skip


def _options(storage: StorageOptions, **extra: Any) -> IngestOptions:
    return IngestOptions(
        library="urls",
        captions=CaptionOptions(llm=None),
        look=None,
        transcribe=TranscribeOptions(model="tiny.en"),
        storage=storage,
        **extra,
    )


def _rows(store: Store) -> dict[str, Any]:
    """Everything the video's ingestion wrote that does not name where the bytes came from."""
    with store.session() as s:
        video = s.scalars(select(Video)).one()
        segments = s.scalars(select(Segment).where(Segment.video_id == video.id)).all()
        cues = s.scalars(select(TranscriptCue).where(TranscriptCue.video_id == video.id)).all()
        n_vectors = s.scalar(select(func.count()).select_from(EmbeddingRow))
        return {
            "video": (
                video.title,
                video.kind,
                video.duration,
                video.fps,
                video.width,
                video.height,
                video.size_bytes,
                video.status,
            ),  # fmt: skip
            "segments": sorted((g.level, round(g.start, 4), round(g.end, 4), g.caption) for g in segments),
            "cues": sorted((round(c.start, 3), round(c.end, 3), c.text) for c in cues),
            "vectors": n_vectors,
        }


def _counts(store: Store) -> tuple[int, int, int]:
    with store.session() as s:
        return (
            int(s.scalar(select(func.count()).select_from(Video)) or 0),
            int(s.scalar(select(func.count()).select_from(Segment)) or 0),
            int(s.scalar(select(func.count()).select_from(Library)) or 0),
        )


def test_an_s3_object_ingests_to_the_rows_of_the_same_local_file_and_is_known_again(
    s3: S3Server, talk: Path, tmp_path: Path, model_cache: Path
) -> None:
    storage = StorageOptions(s3_endpoint_url=s3.endpoint)
    url = s3.put("media", "talks/2026/talk.mp4", talk)

    local = Store(tmp_path / "local")
    remote = Store(tmp_path / "remote")
    try:
        ingest(local, talk, _options(storage), cache_dir=model_cache)
        first = ingest(remote, url, _options(storage), cache_dir=model_cache)  # the visual pass in a worker
        assert first.identity == "s3-etag" and not first.existed
        expected, got = _rows(local), _rows(remote)
        assert got == expected
        assert len([g for g in got["segments"] if g[0] == "shot"]) == 3, got["segments"]
        assert any("giraffe" in c[2].lower() for c in got["cues"]), got["cues"]  # audio read via ffmpeg
        with remote.session() as s:
            video = s.scalars(select(Video)).one()
            assert video.uri == url and video.title == "talk.mp4" and video.size_bytes == talk.stat().st_size
            assert video.identity == "s3-etag" and video.to_json()["identity"] == "s3-etag"
        with local.session() as s:
            assert s.scalars(select(Video)).one().identity == "sha256"

        again = ingest(remote, url, _options(storage), cache_dir=model_cache)
        assert again.existed and again.video_id == first.video_id
        # the same bytes under another key, uploaded the same way: the same ETag and size, one video
        copy = s3.put("media", "elsewhere/copy.mp4", talk)
        assert ingest(remote, copy, _options(storage), cache_dir=model_cache).video_id == first.video_id
        assert _counts(remote)[0] == 1
    finally:
        local.close()
        remote.close()


def test_an_object_replaced_while_it_is_ingested_fails_and_leaves_nothing(
    s3: S3Server, talk: Path, cut_clip: CutClip, tmp_path: Path, model_cache: Path
) -> None:
    """The video was decoded from one version of the object; if another replaced it meanwhile, the
    rows would describe neither: the ingestion fails and writes nothing (run it again to ingest it)."""
    url = s3.put("media", "moving/talk.mp4", talk)
    replaced: list[str] = []

    def progress(stage: str, fraction: float) -> None:
        if stage == "structure" and not replaced:  # the decoders are done with the first version
            s3.put("media", "moving/talk.mp4", cut_clip.path)
            replaced.append(stage)

    store = Store(tmp_path / "home")
    try:
        with pytest.raises(MediaError, match="replaced while it was being ingested"):
            ingest(store, url, _options(StorageOptions(s3_endpoint_url=s3.endpoint)), model_cache, progress)
        assert replaced and _counts(store) == (0, 0, 0)
    finally:
        store.close()


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> CutClip:
    """~8 s of 640x360 with cuts (several hundred KB, far more than the reads below need)."""
    return make_cut_clip(
        tmp_path_factory.mktemp("big"),
        cut_frames=(48, 120),
        total_frames=200,
        size=(640, 360),
        name="big.mp4",
    )


@pytest.fixture
def web(big_clip: CutClip) -> Iterator[RangeServer]:
    server = RangeServer(big_clip.path.parent)
    try:
        yield server
    finally:
        server.stop()


def test_http_media_is_read_by_ranges_not_downloaded(web: RangeServer, big_clip: CutClip) -> None:
    """A probe and a decode of the first half second fetch a fraction of the file, by Range."""
    storage = StorageOptions(block_size=64 * 1024, cache_blocks=4)
    url = f"{web.url}/big.mp4"
    size = big_clip.path.stat().st_size
    info = probe(url, storage)
    local = probe(big_clip.path)
    assert (info.duration, info.fps, info.width, info.size_bytes) == (
        local.duration, local.fps, local.width, local.size_bytes
    )  # fmt: skip
    web.log.clear()
    frames = list(sample_frames(info, [0.1, 0.4], max_side=320))
    assert [i for i, _, _ in frames] == [0, 1]
    sent = web.log.bytes_sent("/big.mp4")
    assert web.log.ranged("/big.mp4"), web.log.requests  # every read is a Range request
    assert all(r.status == 206 for r in web.log.ranged("/big.mp4"))
    assert 0 < sent < size / 2, (sent, size)


def test_http_ingest_finds_the_shots_of_the_local_file(
    web: RangeServer, big_clip: CutClip, tmp_path: Path, model_cache: Path
) -> None:
    store = Store(tmp_path / "home")
    try:
        res = ingest(store, f"{web.url}/big.mp4", _options(StorageOptions()), cache_dir=model_cache)
        assert res.identity == "http-etag"
        with store.session() as s:
            starts = sorted(
                round(g.start, 2)
                for g in s.scalars(
                    select(Segment).where(Segment.level == "shot", Segment.video_id == res.video_id)
                )
            )
        assert starts == [0.0, 2.0, 5.0]  # cuts at frames 48 and 120 at 24 fps
        assert ingest(store, f"{web.url}/big.mp4", _options(StorageOptions()), cache_dir=model_cache).existed
    finally:
        store.close()


def test_a_file_url_is_the_local_file(cut_clip: CutClip, tmp_path: Path, model_cache: Path) -> None:
    store = Store(tmp_path / "home")
    try:
        by_path = ingest(store, cut_clip.path, _options(StorageOptions()), cache_dir=model_cache)
        by_url = ingest(
            store, cut_clip.path.resolve().as_uri(), _options(StorageOptions()), cache_dir=model_cache
        )
        assert by_url.existed and by_url.video_id == by_path.video_id and by_url.identity == "sha256"
    finally:
        store.close()


def test_bad_urls_are_media_errors_that_say_why_and_write_nothing(
    s3: S3Server, web: RangeServer, cut_clip: CutClip, tmp_path: Path, model_cache: Path
) -> None:
    from tests.helpers import free_port

    storage = StorageOptions(s3_endpoint_url=s3.endpoint, timeout=5.0)
    s3.put("media", "broken/cut short.mp4", truncate_copy(cut_clip.path, tmp_path / "half.mp4", 0.5))
    s3.put("media", "broken/notes.txt.mp4", b"not a video at all\n" * 50)
    s3.put("media", "broken/empty.mp4", b"")
    cases = {
        "gs://media/x.mp4": "unsupported scheme 'gs'",
        "ftp://127.0.0.1/x.mp4": "unsupported scheme 'ftp'",
        "s3://media": "expected s3://BUCKET/KEY",
        "s3://media/none/such.mp4": "no such object (404)",
        "s3://no-such-bucket/x.mp4": "no such object (404)",
        "s3://media/broken/cut%20short.mp4": "truncated video: frames stop at",
        "s3://media/broken/notes.txt.mp4": "not readable as media",
        "s3://media/broken/empty.mp4": "empty file",
        f"{web.url}/missing.mp4": "no such object (404)",
        f"http://127.0.0.1:{free_port()}/x.mp4": "cannot reach the server",
        "https://user:secret@127.0.0.1:1/x.mp4?token=hush": "cannot reach the server",
    }
    store = Store(tmp_path / "home")
    try:
        for url, why in cases.items():
            with pytest.raises(MediaError) as e:
                ingest(store, url, _options(storage), cache_dir=model_cache)
            message = str(e.value)
            assert why in message, (url, message)
            assert "secret" not in message and "hush" not in message and "X-Amz-" not in message, message
            assert _counts(store) == (0, 0, 0), url
    finally:
        store.close()


def test_sidecar_and_transcript_only_subtitles_are_read_from_the_store(
    s3: S3Server, cut_clip: CutClip, tmp_path: Path, model_cache: Path
) -> None:
    """`talk.srt` beside `talk.mp4` in the bucket is its transcript; an .srt alone is an item."""
    from tests.helpers import TALK

    srt = write_srt(tmp_path / "cuts.srt", TALK)
    s3.put("media", "side/cuts.mp4", cut_clip.path)
    s3.put("media", "side/cuts.srt", srt)
    storage = StorageOptions(s3_endpoint_url=s3.endpoint)
    store = Store(tmp_path / "home")
    try:
        res = ingest(store, "s3://media/side/cuts.mp4", _options(storage), cache_dir=model_cache)
        alone = ingest(store, "s3://media/side/cuts.srt", _options(storage), cache_dir=model_cache)
        with store.session() as s:
            for vid in (res.video_id, alone.video_id):
                cues = s.scalars(select(TranscriptCue.text).where(TranscriptCue.video_id == vid)).all()
                assert len(cues) == len(TALK), cues
            assert s.get(Video, alone.video_id).kind == "transcript"  # type: ignore[union-attr]
    finally:
        store.close()


def test_the_cli_ingests_by_url_with_the_endpoint_from_the_environment(s3: S3Server, tmp_path: Path) -> None:
    """`vidmem ingest s3://…` in its own process: settings from VIDMEM_S3_ENDPOINT_URL, credentials
    from the AWS variables; a bad URL is one `error:` line and exit status 1."""
    from tests.helpers import TALK

    s3.put("media", "cli/notes.srt", write_srt(tmp_path / "notes.srt", TALK))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDMEM_")}
    env.update(VIDMEM_HOME=str(tmp_path / "home"), VIDMEM_S3_ENDPOINT_URL=s3.endpoint, VIDMEM_LLM="none")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VIDMEM), *args], env=env, capture_output=True, text=True, timeout=600)

    ok = run("ingest", "s3://media/cli/notes.srt")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    said = " ".join(ok.stdout.split())  # rich wraps lines at the terminal's width
    assert "notes.srt" in said and "known by its s3-etag" in said, ok.stdout
    bad = run("ingest", "s3://media/cli/missing.srt")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no such object" in lines[0], bad.stderr


def test_url_roots_and_normal_forms() -> None:
    assert source_uri("S3://bucket/a b.mp4".replace(" ", "%20")) == "s3://bucket/a%20b.mp4"
    assert media_source("s3://bucket/dir/a%20b.mp4").name == "a b.mp4"
    assert source_uri(Path("x/../y.mp4")) == str(Path("y.mp4").resolve())
    root = "https://cdn.example.com/media"
    assert under("https://cdn.example.com/media/talk.mp4", root)
    assert under("https://CDN.example.com/media/a/b.mp4?sig=1", root)
    for outside in (
        "https://cdn.example.com/media",  # the root itself names no file
        "https://cdn.example.com/mediax/talk.mp4",
        "https://cdn.example.com/media/../secret.mp4",
        "https://cdn.example.com/media/%2e%2e/secret.mp4",
        "https://cdn.example.com.evil.net/media/talk.mp4",
        "https://cdn.example.com@evil.net/media/talk.mp4",
        "http://cdn.example.com/media/talk.mp4",
        "s3://cdn.example.com/media/talk.mp4",
    ):
        assert not under(outside, root), outside
    assert under("s3://bucket/prefix/x/y.mp4", "s3://bucket/prefix/")
    assert not under("s3://bucket/prefix2/y.mp4", "s3://bucket/prefix")
