"""The embedded generation backend: ffmpeg renders edits that need no model, and says so.

What each operation really makes (nothing is synthesised from a prompt; `generate` and `retake` are
refused with the names of the backends that can):
- `title`: a card with the text, drawn with Pillow's bundled font, faded in and out;
- `freeze`: the anchor's frame, held;
- `extend`: the last frame before the anchor, held with a slow push-in (a zoom, not new motion);
- `bridge`: a dissolve from the frame before the span to the frame after it (not a morph);
- `slowmo`: the span slowed to `speed` with motion-compensated interpolation (`minterpolate`, mci),
  its sound time-stretched (`atempo`, pitch kept) when the audio is kept;
- `pip`: the overlay moment scaled into a corner of the span;
- `crossfade`: the frames around the cut of a removed span, dissolved (sound cross-faded);
- `trim`: nothing to render; the timeline leaves the span out.
Every result has exactly `plan.frames` frames at the source's rate and size, and a sound track
(silence where the edit adds time, or when asked).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from reasoning.generate.backends import Artifact, Backend, Run
from reasoning.generate.media import (
    AUDIO_CODEC,
    RATE,
    TO_709,
    VIDEO_CODEC,
    has_audio,
    opened,
    run_ffmpeg,
    seek,
    still,
)
from reasoning.generate.request import FrameGrid, Plan, RequestError, Source

MAX_SECONDS = 600
"""The longest piece it renders (ten minutes)."""


class FfmpegBackend(Backend):
    name = "ffmpeg"
    operations = frozenset({"extend", "bridge", "title", "freeze", "slowmo", "pip", "trim", "crossfade"})
    grid = FrameGrid(least=1, most=MAX_SECONDS * 120)
    describe = (
        "renders with ffmpeg: title cards, freezes, push-in extensions, dissolve bridges, "
        "motion-interpolated slow motion, picture-in-picture, crossfades and trims; never from a prompt"
    )

    def check(self, plan: Plan) -> None:
        super().check(plan)
        if plan.frames > MAX_SECONDS * plan.fps:
            raise RequestError(f"the ffmpeg backend renders at most {MAX_SECONDS} s in one piece")

    def render(self, plan: Plan, out: Path, run: Run) -> Artifact:
        out.mkdir(parents=True, exist_ok=True)
        src = plan.source
        n, fps = plan.frames, plan.fps
        w, h = plan.source.width, plan.source.height
        keep = plan.request.audio == "keep" and has_audio(src)
        inputs, graph, audio = getattr(self, "_" + plan.operation)(plan, src, out, keep)
        # one shape for every piece: exact frame count, size, rate and pixel format; sound as long
        graph += (
            f";[v]scale={w}:{h}:flags=bicubic:{TO_709},setsar=1,fps={fps},format=yuv420p,"
            f"tpad=stop_mode=clone:stop={n},trim=end_frame={n},setpts=PTS-STARTPTS[vo]"
        )
        samples = round(n / fps * RATE)
        if audio is None:
            inputs += ["-f", "lavfi", "-t", f"{n / fps + 1:.6f}", "-i", f"anullsrc=r={RATE}:cl=stereo"]
            audio = f"[{_count(inputs) - 1}:a]"
        graph += (
            f";{audio}aresample={RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
            f"apad,atrim=end_sample={samples},asetpts=PTS-STARTPTS[ao]"
        )
        path = out / "insert.mp4"
        args = [*inputs, "-filter_complex", graph, "-map", "[vo]", "-map", "[ao]", *VIDEO_CODEC, *AUDIO_CODEC]
        run_ffmpeg([*args, "-r", f"{fps}", str(path)], n, run.progress, f"rendering the {plan.operation}")
        return Artifact(path, n, fps, w, h, True, self.name, {"renders": self.describe})

    # each returns (inputs, a graph ending in [v], the audio pad or None for silence)

    def _source(self, plan: Plan, src: Source, frame: int, frames: int) -> list[str]:
        return [*seek(frame, plan.source.fps), "-t", f"{(frames + 2) / plan.source.fps:.6f}", *opened(src)]

    def _title(self, plan: Plan, src: Source, out: Path, keep: bool) -> tuple[list[str], str, str | None]:
        card = _title_card(
            plan.request.text or plan.prompt, plan.source.width, plan.source.height, out / "card.png"
        )
        fade = min(0.25, plan.seconds / 4)
        graph = f"[0:v]fade=t=in:st=0:d={fade:.4f},fade=t=out:st={plan.seconds - fade:.4f}:d={fade:.4f}[v]"
        return ["-loop", "1", "-framerate", f"{plan.fps}", "-i", str(card)], graph, None

    def _freeze(self, plan: Plan, src: Source, out: Path, keep: bool) -> tuple[list[str], str, str | None]:
        last = max(0, round(plan.source.duration * plan.source.fps) - 1)
        frame = still(src, min(plan.start, last), plan.source.fps, out / "freeze.png")
        return ["-loop", "1", "-framerate", f"{plan.fps}", "-i", str(frame)], "[0:v]null[v]", None

    def _extend(self, plan: Plan, src: Source, out: Path, keep: bool) -> tuple[list[str], str, str | None]:
        c = plan.conditions[0]
        frame = still(src, c.frame, plan.source.fps, out / "last.png")
        n, w, h = plan.frames, plan.source.width, plan.source.height
        zoom = f"1+0.08*on/{max(n - 1, 1)}"
        graph = f"[0:v]zoompan=z='{zoom}':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d={n}:s={w}x{h}:fps={plan.fps}[v]"
        return ["-i", str(frame)], graph, None

    def _bridge(self, plan: Plan, src: Source, out: Path, keep: bool) -> tuple[list[str], str, str | None]:
        first, last = plan.conditions[0], plan.conditions[-1]
        a = still(src, first.frame, plan.source.fps, out / "from.png")
        b = still(src, last.frame, plan.source.fps, out / "to.png")
        span = max(plan.frames - 1, 1) / plan.fps
        inputs = ["-loop", "1", "-framerate", f"{plan.fps}", "-i", str(a)]
        inputs += ["-loop", "1", "-framerate", f"{plan.fps}", "-i", str(b)]
        graph = (
            f"[0:v]format=gbrp[a];[1:v]format=gbrp[b];"
            f"[a][b]blend=all_expr='A*(1-min(T/{span:.6f},1))+B*min(T/{span:.6f},1)'[v]"
        )
        if keep:
            inputs += self._source(plan, src, plan.start, plan.frames)
            return inputs, graph, "[2:a]"
        return inputs, graph, None

    def _slowmo(self, plan: Plan, src: Source, out: Path, keep: bool) -> tuple[list[str], str, str | None]:
        m = plan.end - plan.start
        stretch = plan.frames / m  # > 1: the span lasts this many times longer
        inputs = self._source(plan, src, plan.start, m)
        graph = (
            f"[0:v]setpts=PTS-STARTPTS,trim=end_frame={m},setpts={stretch:.6f}*PTS,"
            f"minterpolate=fps={plan.fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1[v]"
        )
        if not keep:
            return inputs, graph, None
        graph += f";[0:a]asetpts=PTS-STARTPTS,atrim=end_sample={round(m / plan.source.fps * RATE)},{_atempo(1 / stretch)}[sa]"
        return inputs, graph, "[sa]"

    def _pip(self, plan: Plan, src: Source, out: Path, keep: bool) -> tuple[list[str], str, str | None]:
        o, other = plan.request.overlay, plan.overlay
        assert o is not None and other is not None
        n = plan.frames
        inputs = self._source(plan, src, plan.start, n)
        inputs += [*seek(round(o.start * other.fps), other.fps), "-t", f"{(n + 2) / plan.fps:.6f}"]
        inputs += opened(other)
        w = 2 * round(plan.source.width * o.scale / 2)
        margin = round(plan.source.width * 0.03)
        x = str(margin) if o.corner.endswith("left") else f"W-w-{margin}"
        y = str(margin) if o.corner.startswith("top") else f"H-h-{margin}"
        graph = (
            f"[0:v]setpts=PTS-STARTPTS[main];[1:v]setpts=PTS-STARTPTS,fps={plan.fps},scale={w}:-2[inset];"
            f"[main][inset]overlay=x={x}:y={y}:eof_action=repeat[v]"
        )
        return inputs, graph, ("[0:a]" if keep else None)

    def _crossfade(self, plan: Plan, src: Source, out: Path, keep: bool) -> tuple[list[str], str, str | None]:
        n = plan.frames
        half = n // 2
        inputs = self._source(plan, src, plan.start - half, n) + self._source(plan, src, plan.end - half, n)
        span = max(n - 1, 1) / plan.fps
        graph = (
            f"[0:v]setpts=PTS-STARTPTS,trim=end_frame={n},format=gbrp[a];"
            f"[1:v]setpts=PTS-STARTPTS,trim=end_frame={n},format=gbrp[b];"
            f"[a][b]blend=all_expr='A*(1-min(T/{span:.6f},1))+B*min(T/{span:.6f},1)'[v]"
        )
        if not keep:
            return inputs, graph, None
        secs = n / plan.fps
        graph += (
            f";[0:a]asetpts=PTS-STARTPTS,atrim=duration={secs:.6f}[a0];[1:a]asetpts=PTS-STARTPTS,atrim=duration={secs:.6f}[a1];"
            f"[a0]afade=t=out:d={secs:.6f}[f0];[a1]afade=t=in:d={secs:.6f}[f1];[f0][f1]amix=inputs=2:normalize=0[xa]"
        )
        return inputs, graph, "[xa]"


def _count(inputs: list[str]) -> int:
    return inputs.count("-i")


def _atempo(speed: float) -> str:
    """A chain of `atempo` filters for `speed` (each takes 0.5 to 2)."""
    parts = []
    while speed < 0.5:
        parts.append("atempo=0.5")
        speed /= 0.5
    while speed > 2.0:
        parts.append("atempo=2.0")
        speed /= 2.0
    parts.append(f"atempo={speed:.6f}")
    return ",".join(parts)


def _title_card(text: str, width: int, height: int, out: Path) -> Path:
    """White text, centred and wrapped, on black, at the video's size."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    size = max(12, height // 12)
    font = ImageFont.load_default(size=size)
    chars = max(8, int(width * 0.85 / (size * 0.55)))
    lines = textwrap.wrap(text.strip(), chars)[:6] or [" "]
    gap = size // 3
    total = len(lines) * size + (len(lines) - 1) * gap
    y = (height - total) // 2
    for line in lines:
        box = draw.textbbox((0, 0), line, font=font)
        draw.text(((width - (box[2] - box[0])) // 2, y), line, font=font, fill=(255, 255, 255))
        y += size + gap
    image.save(out)
    return out
