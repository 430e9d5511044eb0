"""Ingestion: decode, shots, transcript, embeddings -- each a small class behind one method.

`ingest(store, path)` is the one-call entry; the stage classes are public for composing your own.
Heavy backends (PyAV, decord, faster-whisper, sentence-transformers) load only when a stage runs.
"""

from indexers.decode import DecodeOptions, MediaError, MediaInfo, probe
from indexers.pipeline import IngestOptions, IngestResult, ingest
from indexers.shots import ContentShotDetector, Shot, ShotOptions
from indexers.transcript import Cue, TranscribeOptions, read_subtitles

__all__ = [
    "ContentShotDetector",
    "Cue",
    "DecodeOptions",
    "IngestOptions",
    "IngestResult",
    "MediaError",
    "MediaInfo",
    "Shot",
    "ShotOptions",
    "TranscribeOptions",
    "ingest",
    "probe",
    "read_subtitles",
]
