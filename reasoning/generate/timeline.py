"""The edited timeline an editor opens: an OpenTimelineIO document, its EDL and FCP XML, and a
rendered preview.

The timeline runs at the source's frame rate. Track V1 (and A1, its sound) holds the source as clips
of one external reference, cut where the edit goes, with the insert between them as a clip of its
own file; its metadata (`vidmem`) carries the job, backend, operation, prompt and seed. A crossfade
is an SMPTE dissolve centred on the cut (the rendered dissolve is named in its metadata). Markers:
the edit itself, and the video's chapters where they still are.

The preview renders the timeline, or for a long one the window around the edit (`CONTEXT_SECONDS`
each side), frame-exactly: its frame count is the window's length in frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoning.generate.media import (
    AUDIO_CODEC,
    PREVIEW_CODEC,
    RATE,
    TO_709,
    has_audio,
    opened,
    run_ffmpeg,
    seek,
)
from reasoning.generate.request import Plan

if TYPE_CHECKING:
    from reasoning.generate.media import Media

WHOLE_PREVIEW_SECONDS = 120.0
"""A timeline up to this long is previewed whole."""
CONTEXT_SECONDS = 10.0
"""Else the preview shows this much of the timeline before and after the edit."""


@dataclass(frozen=True)
class Piece:
    """A run of frames on the timeline, taken from a file."""

    kind: str  # source | insert
    media: Media
    first: int
    """First frame, in the file."""
    frames: int


@dataclass(frozen=True)
class Cut:
    """The edit laid out: the pieces in order, where the insert lies on the timeline, and the
    dissolve of a crossfade (`half` frames before the cut, the rest after)."""

    pieces: list[Piece]
    insert_at: int
    """Timeline frame of the insert's (or the cut's) first frame."""
    insert_frames: int
    transition: tuple[int, int] | None = None

    @property
    def frames(self) -> int:
        return sum(p.frames for p in self.pieces)


def lay_out(plan: Plan, insert: Path | None) -> Cut:
    """Where everything goes, in frames of the source's rate (the insert conformed to it)."""
    src = plan.source
    last = max(1, round(plan.source.duration * plan.source.fps))
    s, e, n = plan.start, plan.end, plan.timeline_frames

    def piece(kind: str, media: Media, first: int, frames: int) -> list[Piece]:
        return [Piece(kind, media, first, frames)] if frames > 0 else []

    if plan.operation == "crossfade":
        assert insert is not None
        half = n // 2
        pieces = piece("source", src, 0, s - half) + piece("insert", insert, 0, n)
        pieces += piece("source", src, e + n - half, last - (e + n - half))
        return Cut(pieces, s - half, n, (half, n - half))
    head = piece("source", src, 0, s)
    tail = piece("source", src, e, last - e)
    body = piece("insert", insert, 0, n) if insert is not None and n > 0 else []
    return Cut(head + body + tail, s, n)


def preview_window(cut: Cut, fps: float) -> tuple[int, int]:
    """[first, end) timeline frames the preview shows."""
    if cut.frames <= WHOLE_PREVIEW_SECONDS * fps:
        return 0, cut.frames
    ctx = round(CONTEXT_SECONDS * fps)
    return max(0, cut.insert_at - ctx), min(cut.frames, cut.insert_at + cut.insert_frames + ctx)


def render_preview(cut: Cut, plan: Plan, out: Path, progress: Any = lambda f: None) -> dict[str, Any]:
    """Render the preview window of `cut` to `out`; what it holds, as the job reports it."""
    fps, w, h = plan.source.fps, plan.source.width, plan.source.height
    lo, hi = preview_window(cut, fps)
    inputs: list[str] = []
    chains: list[str] = []
    labels: list[str] = []
    starts: list[int] = []
    at = 0
    for piece in cut.pieces:
        starts.append(at)
        a, b = max(lo, at), min(hi, at + piece.frames)
        if b > a:
            first, frames = piece.first + (a - at), b - a
            k = inputs.count("-i")
            rate = plan.source.fps
            inputs += [*seek(first, rate), "-t", f"{(frames + 2) / rate:.6f}", *opened(piece.media)]
            chains.append(
                f"[{k}:v]setpts=PTS-STARTPTS,scale={w}:{h}:flags=bicubic:{TO_709},setsar=1,fps={fps},format=yuv420p,"
                f"tpad=stop_mode=clone:stop={frames},trim=end_frame={frames},setpts=PTS-STARTPTS[v{len(labels)}]"
            )
            if has_audio(piece.media):
                sound = f"[{k}:a]asetpts=PTS-STARTPTS,"
            else:
                inputs += [
                    "-f",
                    "lavfi",
                    "-t",
                    f"{frames / fps + 1:.6f}",
                    "-i",
                    f"anullsrc=r={RATE}:cl=stereo",
                ]
                sound = f"[{k + 1}:a]"
            samples = round((a - lo + frames) * RATE / fps) - round((a - lo) * RATE / fps)
            chains.append(
                f"{sound}aresample={RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,apad,"
                f"atrim=end_sample={samples},asetpts=PTS-STARTPTS[a{len(labels)}]"
            )
            labels.append(f"[v{len(labels)}][a{len(labels)}]")
        at += piece.frames
    graph = ";".join(chains) + f";{''.join(labels)}concat=n={len(labels)}:v=1:a=1[vo][ao]"
    # a keyframe where each piece starts: a player seeks straight to the insert, and its first frame
    # is coded whole, not as an inter frame after a cut (which fell under the tests' 45 dB)
    cuts = ",".join(f"{(c - lo) / fps:.6f}" for c in starts if lo < c < hi) or "0"
    args = [*inputs, "-filter_complex", graph, "-map", "[vo]", "-map", "[ao]", *PREVIEW_CODEC, *AUDIO_CODEC]
    args += ["-force_key_frames", cuts]
    run_ffmpeg([*args, "-r", f"{fps}", str(out)], hi - lo, progress, "rendering the preview")
    return {"file": out.name, "first_frame": lo, "frames": hi - lo, "start": round(lo / fps, 4), "fps": fps}


def build_timeline(
    cut: Cut,
    plan: Plan,
    name: str,
    metadata: dict[str, Any],
    chapters: list[tuple[float, float, str]] = (),  # type: ignore[assignment]
) -> Any:
    """The OpenTimelineIO timeline of `cut`. `metadata` goes on the insert (or the dissolve) under
    `vidmem`; `chapters` (start, end seconds in the source, title) become markers where they survive."""
    import opentimelineio as otio
    from opentimelineio.opentime import RationalTime, TimeRange

    fps = plan.source.fps
    last = max(1, round(plan.source.duration * fps))

    def rt(frames: int) -> RationalTime:
        return RationalTime(frames, fps)

    def reference(url: str, frames: int) -> Any:
        return otio.schema.ExternalReference(target_url=url, available_range=TimeRange(rt(0), rt(frames)))

    source = plan.source  # by its URL when remote (never the pre-signed one ffmpeg read)
    source_url = source.uri if source.remote else Path(source.path).resolve().as_uri()
    source_ref = reference(source_url, last)
    timeline = otio.schema.Timeline(name=name, global_start_time=rt(0))
    timeline.metadata["vidmem"] = {"video_id": plan.source.video_id, "edit": plan.to_json()}
    tracks = {
        kind: otio.schema.Track(name=label, kind=kind)
        for kind, label in ((otio.schema.TrackKind.Video, "V1"), (otio.schema.TrackKind.Audio, "A1"))
    }
    # the source cut around the edit: a crossfade keeps its clips whole, the dissolve overlaps them
    if cut.transition is not None:
        half, rest = cut.transition
        clips = [("source", 0, plan.start), ("dissolve", 0, 0), ("source", plan.end, last - plan.end)]
    else:
        clips = []
        for p in cut.pieces:
            clips.append((p.kind, p.first, p.frames))
    for track in tracks.values():
        for what, first, frames in clips:
            if what == "dissolve":
                t = otio.schema.Transition(
                    name=f"{plan.operation}",
                    transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                    in_offset=rt(half),
                    out_offset=rt(rest),
                )
                t.metadata["vidmem"] = metadata
                track.append(t)
                continue
            if frames <= 0:
                continue
            if what == "source":
                clip = otio.schema.Clip(
                    name=plan.source.name,
                    media_reference=source_ref.clone(),
                    source_range=TimeRange(rt(first), rt(frames)),
                )
            else:
                insert = next(p for p in cut.pieces if p.kind == "insert")
                clip = otio.schema.Clip(
                    name=f"{plan.operation} {metadata.get('job', '')}".strip(),
                    media_reference=reference(Path(str(insert.media)).resolve().as_uri(), insert.frames),
                    source_range=TimeRange(rt(0), rt(frames)),
                )
                clip.metadata["vidmem"] = metadata
            track.append(clip)
        timeline.tracks.append(track)
    video = tracks[otio.schema.TrackKind.Video]
    marker = otio.schema.Marker(
        name=f"{plan.operation}: {plan.prompt[:80]}".strip(": "),
        marked_range=TimeRange(rt(cut.insert_at), rt(max(cut.insert_frames, 1))),
        color=otio.schema.MarkerColor.RED,
    )
    marker.metadata["vidmem"] = {"job": metadata.get("job")}
    video.markers.append(marker)
    for start, _end, title in chapters:
        frame = round(start * fps)
        moved = _moved(frame, plan, cut)
        if moved is not None:
            video.markers.append(
                otio.schema.Marker(
                    name=title[:80] or "chapter",
                    marked_range=TimeRange(rt(moved), rt(1)),
                    color=otio.schema.MarkerColor.BLUE,
                )
            )
    return timeline


def _moved(frame: int, plan: Plan, cut: Cut) -> int | None:
    """Where source frame `frame` lands on the timeline (None: it was cut out or replaced)."""
    if frame < plan.start:
        return frame
    if plan.start < plan.end and frame < plan.end:
        return None
    return frame - plan.end + plan.start + (0 if cut.transition else cut.insert_frames)


def write_exports(timeline: Any, folder: Path, stem: str = "edit") -> dict[str, str]:
    """The timeline as `.otio`, CMX 3600 `.edl` (its video track: an EDL holds one) and FCP `.xml`."""
    import opentimelineio as otio

    files = {"otio": folder / f"{stem}.otio", "edl": folder / f"{stem}.edl", "fcpxml": folder / f"{stem}.xml"}
    otio.adapters.write_to_file(timeline, str(files["otio"]))
    video_only = timeline.deepcopy()
    for track in list(video_only.tracks):
        if track.kind != otio.schema.TrackKind.Video:
            video_only.tracks.remove(track)
    otio.adapters.write_to_file(video_only, str(files["edl"]), adapter_name="cmx_3600")
    otio.adapters.write_to_file(timeline, str(files["fcpxml"]), adapter_name="fcp_xml")
    return {k: v.name for k, v in files.items()}
