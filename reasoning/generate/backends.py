"""One protocol for every generation backend, and the registry that picks one by name.

A backend says what it can do (`operations`, `grid`, `fps`, `audio`, `masks`, `describe`) and
renders a `Plan` into an `Artifact`: a video file at the source's rate and size with exactly
`plan.timeline_frames` frames (its own `plan.frames` at `plan.fps`, conformed), with a sound track. It reports progress through `Run.progress` and keeps what it
must not lose across a worker crash (a remote job's id) with `Run.remember`; a restarted job gets
that back in `Run.saved`, so a remote backend resumes polling instead of submitting again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory.runtime import Registry
from reasoning.generate.request import FrameGrid, Plan, RequestError


class BackendError(RuntimeError):
    """The backend failed while rendering (a remote failure, a crashed tool): the job fails with it."""


class Cancelled(RuntimeError):
    """The job was cancelled while it ran."""


@dataclass(frozen=True)
class Artifact:
    """What a backend made."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    audio: bool
    backend: str
    details: dict[str, Any] = field(default_factory=dict)
    """Backend facts worth keeping with the job (a remote id, the pipeline class, the seed used)."""

    @classmethod
    def piece(cls, path: Path, plan: Plan, backend: str, details: dict[str, Any]) -> Artifact:
        """A piece conformed to the plan's timeline (`media.conform`), with sound."""
        s = plan.source
        return cls(path, plan.timeline_frames, s.fps, s.width, s.height, True, backend, details)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "frames": self.frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "audio": self.audio,
            "backend": self.backend,
            **self.details,
        }


@dataclass
class Run:
    """A backend's line to its job: progress in [0, 1], and state that survives a restart."""

    progress: Callable[[float], None] = lambda fraction: None
    saved: dict[str, Any] = field(default_factory=dict)
    """What an earlier attempt of this job remembered (empty on the first)."""
    keep: Callable[[dict[str, Any]], None] = lambda state: None

    def remember(self, **state: Any) -> None:
        self.saved.update(state)
        self.keep(dict(self.saved))


class Backend(ABC):
    """A generation backend. Subclasses set the class attributes and implement `render`."""

    name: str = ""
    operations: frozenset[str] = frozenset()
    grid: FrameGrid = FrameGrid()
    audio: frozenset[str] = frozenset({"keep", "silence"})
    masks: bool = False
    describe: str = ""
    """What it really does, in one line (the docs and the refusal messages quote it)."""

    def fps(self, source_fps: float) -> float:
        """The frame rate it renders at for a source at `source_fps`."""
        return source_fps

    def check(self, plan: Plan) -> None:
        """`RequestError` for what this backend cannot do with `plan` (beyond its operation)."""
        if plan.request.audio not in self.audio:
            raise RequestError(
                f"the {self.name} backend cannot make audio {plan.request.audio!r}; it does "
                f"{', '.join(sorted(self.audio))}; " + _who_can("sound")
            )
        if plan.request.mask is not None and not self.masks:
            raise RequestError(f"the {self.name} backend cannot work inside a mask; {_who_can('masks')}")

    @abstractmethod
    def render(self, plan: Plan, out: Path, run: Run) -> Artifact:
        """Write the result under the folder `out` and describe it."""


BACKENDS: Registry[type[Backend]] = Registry(
    "generation backend",
    {
        "ffmpeg": "reasoning.generate.ffmpeg:FfmpegBackend",
        "diffusers": "reasoning.generate.diffusion:DiffusersBackend",
        "http": "reasoning.generate.remote:HttpBackend",
    },
)
"""Backends by name; each imported only when chosen."""

CAPABILITIES: dict[str, dict[str, Any]] = {
    "ffmpeg": {"operations": {"extend", "bridge", "title", "freeze", "slowmo", "pip", "trim", "crossfade"}},
    "diffusers": {"operations": {"generate", "extend", "bridge", "retake"}, "masks": True, "sound": True},
    "http": {"operations": {"generate", "extend", "bridge", "retake"}, "sound": True},
}
"""What each registered backend can do, known without importing it (for refusals that name the
backends that can). Kept equal to the classes' attributes by a test."""


def _who_can(what: str, operation: str | None = None) -> str:
    names = [
        n
        for n, cap in CAPABILITIES.items()
        if (operation is not None and operation in cap["operations"]) or (operation is None and cap.get(what))
    ]
    return f"backends that can: {', '.join(names)}" if names else "no backend can"


def backend_for(name: str, operation: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend called `name`, built with `options`, if it can do `operation`; else `RequestError`
    naming the backends that can."""
    if name not in BACKENDS:
        raise RequestError(str(BACKENDS.unknown(name)))
    ops = CAPABILITIES.get(name, {}).get("operations")
    if ops is not None and operation not in ops:
        raise RequestError(f"the {name} backend cannot {operation}; {_who_can('', operation)}")
    return BACKENDS.get(name)(**(options or {}))
