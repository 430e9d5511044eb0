"""A video's timeline as data: the flat form `vidmem show --json` prints, the nested hierarchy and
WebVTT chapter markers that `vidmem export` writes for players and editing tools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernels.timecode import hms

if TYPE_CHECKING:
    from memory import Store

Timeline = dict[str, Any]


def timeline(store: Store, video_id: str, uri: bool = True) -> Timeline:
    """Video facts (`Video.to_json`, plus the media's `uri` on the server unless `uri` is False),
    summary, chapters, scenes, shots (with what was read and recognised in each), on-screen text and
    transcript (seconds as floats). Every chapter, scene and shot has `tags`: candidates, not facts;
    a chapter's or scene's are its shots' (`Store.segment_tags`). A shot has `retained` (whether the
    library's memory keeps it: true in a live slot, its own or one it folded into; false skipped or
    evicted; None never gated) and `salience` (the memory's score, None never gated)."""
    from sqlalchemy import select

    from memory import ScreenText, Segment, TranscriptCue

    with store.session() as s:
        video = store.get_video(s, video_id)
        segments = s.scalars(
            select(Segment).where(Segment.video_id == video_id).order_by(Segment.start)
        ).all()
        level = {
            name: [g for g in segments if g.level == name] for name in ("video", "chapter", "scene", "shot")
        }
        cues = s.scalars(
            select(TranscriptCue).where(TranscriptCue.video_id == video_id).order_by(TranscriptCue.start)
        ).all()
        texts = s.scalars(
            select(ScreenText).where(ScreenText.video_id == video_id).order_by(ScreenText.start)
        ).all()
        tags = store.segment_tags(s, video_id)
        root = level["video"][0] if level["video"] else None

        def spans(name: str) -> list[dict[str, Any]]:
            return [
                {"start": g.start, "end": g.end, "caption": g.caption, "tags": tags.get(g.id, [])}
                for g in level[name]
            ]

        def shots() -> list[dict[str, Any]]:
            """Shots also say whether the library's memory keeps them, and their salience."""
            return [
                {**span, "retained": g.retained, "salience": g.salience}
                for span, g in zip(spans("shot"), level["shot"], strict=True)
            ]

        return {
            "video": {**video.to_json(), "uri": video.uri} if uri else video.to_json(),
            "summary": root.caption if root else None,
            "chapters": spans("chapter"),
            "scenes": spans("scene"),
            "shots": shots(),
            "screen_text": [
                {"start": t.start, "end": t.end, "text": t.text, "box": t.box, "score": round(t.score, 4)}
                for t in texts
            ],
            "transcript": [{"start": c.start, "end": c.end, "text": c.text} for c in cues],
        }


def _inside(children: list[dict], start: float, end: float) -> list[dict]:
    return [c for c in children if start - 1e-6 <= c["start"] < end - 1e-6]


def nested(t: Timeline) -> Timeline:
    """Chapters holding their scenes, scenes their shots and transcript cues."""
    chapters = []
    for ch in t["chapters"]:
        scenes = []
        for sc in _inside(t["scenes"], ch["start"], ch["end"]):
            scenes.append(
                {
                    **sc,
                    "shots": _inside(t["shots"], sc["start"], sc["end"]),
                    "screen_text": _inside(t.get("screen_text", []), sc["start"], sc["end"]),
                    "transcript": _inside(t["transcript"], sc["start"], sc["end"]),
                }
            )
        chapters.append({**ch, "scenes": scenes})
    return {"format": "vidmem.timeline/1", "video": t["video"], "summary": t["summary"], "chapters": chapters}


def webvtt_chapters(t: Timeline) -> str:
    """A WebVTT chapters track (`<track kind="chapters">`): one cue per chapter, titled by its caption,
    or else by the first words spoken in it (quoted, cut at 60 characters)."""
    lines = ["WEBVTT", ""]
    for i, ch in enumerate(t["chapters"], 1):
        said = _inside(t["transcript"], ch["start"], ch["end"])
        first = said[0]["text"].strip() if said else ""
        if len(first) > 60:
            first = first[:59].rsplit(" ", 1)[0] + "…"
        title = ch["caption"] or (f'Chapter {i}: "{first}"' if first else f"Chapter {i}")
        title = " ".join(title.split())  # one line: a blank line would end the cue
        title = title.replace("-->", "->")
        lines += [
            f"chapter-{i}",
            f"{hms(ch['start'], millis=True)} --> {hms(ch['end'], millis=True)}",
            title,
            "",
        ]
    return "\n".join(lines)
