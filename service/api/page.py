"""The editor's page: one HTML file (its script and stylesheet are under `/static`), served at `/`
and at each video's deep link `/videos/{id}`; it asks the API for everything else."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text())


@router.get("/videos/{video_id}")
def video_page(video_id: str) -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text())
