"""Schemathesis against the app's own OpenAPI schema: every operation, generated requests (valid and
not), with an admin key, over a catalog holding one ingested transcript. No request may get a 5xx;
every response must have a status, a content type and a body the schema documents for it (so the
typed response models and the declared error responses cannot drift from what the routes send);
and every error must have the service's one error shape."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service import jobs
from service.app import announce_admin_key, create_app
from tests.helpers import ADMIN, TALK, settings_for
from tests.media import write_srt

APP = create_app(settings_for(Path(tempfile.mkdtemp(prefix="vidmem-schema-"))))
"""Built at import: schemathesis reads the schema when the module is collected; the data comes below."""
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _catalog() -> Iterator[None]:
    """An admin key and one ingested transcript, so the video routes have something to find."""
    svc = APP.state.service
    cfg, store = svc.settings, svc.store
    announce_admin_key(store, cfg)  # what the lifespan does at start
    with store.session() as s:
        store.library(s, "main")
    srt = write_srt(cfg.media_roots[0] / "talk.srt", TALK)
    jobs.enqueue(store, "main", srt, srt.name, upload=False)
    jobs.work(cfg, once=True)
    yield
    shutil.rmtree(cfg.home.parent, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN}"},
        # An ask on the in-process `local` engine loads and runs the packaged LLM on the CPU: on a
        # loaded 2-core runner that outlasts schemathesis' 10 s default. A slow answer is not a 5xx.
        timeout=300,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    if response.status_code >= 400:  # one error shape, whatever went wrong
        body = response.json()
        assert set(body) == {"error"}, body
        assert body["error"]["status"] == response.status_code, body
