"""Timestamps as people read and copy them."""

from __future__ import annotations

from datetime import UTC, datetime


def hms(seconds: float, millis: bool = False) -> str:
    """Seconds -> `HH:MM:SS` (or `HH:MM:SS.mmm`); negative input clamps to zero."""
    total_ms = max(0, round(seconds * 1000))
    h, rem = divmod(total_ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}" if millis else f"{h:02d}:{m:02d}:{s:02d}"


def parse_hms(text: str) -> float:
    """`HH:MM:SS[.mmm]`, `MM:SS`, `SS` or `HH:MM:SS,mmm` (SRT) -> seconds; ValueError otherwise."""
    parts = text.strip().replace(",", ".").split(":")
    if not 1 <= len(parts) <= 3 or any(p == "" for p in parts):
        raise ValueError(f"not a timestamp: {text!r} (expected HH:MM:SS.mmm)")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    if seconds < 0:
        raise ValueError(f"negative timestamp: {text!r}")
    return seconds


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z` (SQLite hands back naive datetimes; they were written in UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
