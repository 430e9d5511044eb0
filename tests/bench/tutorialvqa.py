"""TutorialVQA for the benchmarks and the fitting scripts: where the data lies, and its 76 transcripts
ingested once into a bench store through the normal path (service.evaluate, as `vidmem eval` does)."""

from __future__ import annotations

from tests.bench.common import SHARED, WORK

DATA = SHARED / "eval" / "tutorialvqa"


def open_library():  # type: ignore[no-untyped-def]
    """The bench store with the 76 tracks ingested (once), and dataset id -> video id."""
    from indexers import IngestOptions
    from indexers.captions import CaptionOptions
    from memory import Store
    from service.evaluate import LIBRARY, ingest_tracks

    home = WORK / "tutorialvqa-home"
    store = Store(home)
    opts = IngestOptions(library=LIBRARY, captions=CaptionOptions(llm=None))
    ids = ingest_tracks(store, DATA, home / "tracks", opts, home / "models")
    return store, ids
