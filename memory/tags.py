"""A segment's tags as JSON: a shot's own, and a scene's or chapter's gathered from its shots.

Tags (ImageNet labels, faces, people) sit below any measured precision (indexers.vision), so they
are shown as candidates, never as facts. A scene or chapter has no tags of its own: it shows the
strongest of its shots', so that a reader can tell what its shots may show without opening each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from memory.catalog import Tag

SPAN_TAG_LIMIT = 8
"""Most tags a scene or chapter carries: the strongest, so that a long chapter of many shots stays
readable on the page and in `vidmem show`."""


def tag_json(tag: Tag) -> dict[str, Any]:
    """A shot's tag: `score` the model's confidence, `count` the most seen on one frame, `shots` 1."""
    return {"kind": tag.kind, "name": tag.name, "score": round(tag.score, 4), "count": tag.count, "shots": 1}


def aggregate_tags(tags: Iterable[dict[str, Any]], limit: int = SPAN_TAG_LIMIT) -> list[dict[str, Any]]:
    """The tags of a span from its shots' (`tag_json` shapes): one per (kind, name), with the
    highest `score` and `count` any shot gave it and `shots` the number of shots that carry it;
    strongest first (score, then shots), at most `limit`.

    Scores of different kinds are on different scales (a probability, a Haar weight, a HOG
    margin), as they are in a shot's own list, which is ordered the same way."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for tag in tags:
        key = (tag["kind"], tag["name"])
        seen = merged.get(key)
        if seen is None:
            merged[key] = dict(tag)
            continue
        seen["score"] = max(seen["score"], tag["score"])
        seen["count"] = max(seen["count"], tag["count"])
        seen["shots"] += tag["shots"]
    ranked = sorted(merged.values(), key=lambda t: (-t["score"], -t["shots"], t["kind"], t["name"]))
    return ranked[: max(0, limit)]
