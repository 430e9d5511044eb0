"""Shot-boundary ground truth composed from real clips, plus scoring.

:func:`compose_cut_set` cuts pieces out of the real recordings in ``/work/shared/media`` (see its
README), each piece lying inside a single shot of its source, re-encodes every piece to an
intermediate of an exact frame count (640x360, 24 fps, yuv420p, letterboxed where the aspect
differs), and joins them in one ffmpeg filter graph: ``concat`` for hard cuts and ``xfade`` for
gradual transitions (``fade`` = dissolve, ``fadeblack`` / ``fadewhite`` = fades through a colour).
Since every piece is cut-free, the joins are the only shot boundaries of the result, and their
frame positions follow from the frame counts. The result is probed with ffprobe and checked
against that arithmetic.

How the pieces were chosen (the ``SHOTS`` table below, checked in code by :func:`_check_recipe`):

* ``vtest.avi`` - fixed camera, no cuts at all (README; PySceneDetect finds none).
* ``bikes.mp4`` (25 fps) and ``megamind.avi`` (29.97 fps) - the cuts listed in the README were
  confirmed at frame level with ffmpeg's scene score (``select='gte(scene,0)'``,
  ``metadata=print``) and with PySceneDetect's ContentDetector: bikes 30/76/137/187/242
  (1.20/3.04/5.48/7.48/9.68 s), megamind 98/154/200 (4.129/6.465/8.383 s), the latter after one
  changed frame at its very start (frame 1, 0.083 s). Every other frame scores <= 0.09 (bikes:
  the frame right after each cut is slightly raised) and <= 0.02 (megamind).
* ``bbb_10min.mp4`` (24 fps, ~130 cuts) - every frame's ffmpeg scene score was computed
  (scaled to 320 px), and PySceneDetect's ContentDetector was run with a stats file. A frame is a
  boundary if its ffmpeg score is > 0.08 or PySceneDetect cuts there (the two disagree on a few
  frames, and ffmpeg's score misses some cuts that PySceneDetect finds, e.g. 7180/7208); the
  shots below are stretches between boundaries. Per-frame scores do NOT reveal dissolves: 553-1145
  scores <= 0.032 throughout yet holds the title overlay fading in and out and a ~40-frame
  dissolve (756-800), so that stretch starts at 804 here. Every chosen piece starts and ends
  >= 12 frames clear of a boundary; inside the pieces the ffmpeg score stays <= 0.031 and
  PySceneDetect's content_val <= 9.9 (its cut threshold is 27; the film's median is 2.0);
  stretches with heavy motion (content_val 18-46) were left out. Each piece was also looked at as
  a strip of 10 evenly spaced frames, and the composed result as first/middle/last frame of every
  piece: one continuous shot each, no dissolve, no overlay. Opening titles and end credits are
  not used.

Every piece keeps at least ``MARGIN_S`` seconds away from the ends of its shot.

Public API: :class:`Transition`, :class:`CutSet`, :func:`compose_cut_set`,
:func:`default_work_dir`, :class:`Score`, :func:`score`, :func:`pyscenedetect_boundaries`,
:func:`frame_diffs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "FPS",
    "MEDIA_DIR",
    "CutSet",
    "Score",
    "Transition",
    "compose_cut_set",
    "default_work_dir",
    "frame_diffs",
    "media_available",
    "pyscenedetect_boundaries",
    "score",
]

FPS = 24
WIDTH, HEIGHT = 640, 360
MARGIN_S = 0.2
RECIPE_VERSION = 4  # bump when the composition code changes in a way the recipe does not show

MEDIA_DIR = Path(
    os.environ.get("VIDMEM_SHARED_MEDIA", Path(__file__).resolve().parents[3] / "shared" / "media")
)

SOURCES: dict[str, str] = {
    "bbb": "bbb_10min.mp4",
    "bikes": "bikes.mp4",
    "megamind": "megamind.avi",
    "vtest": "vtest.avi",
}


def _bbb(first: int, end: int) -> tuple[float, float]:
    """A bbb stretch given by frame numbers at 24 fps: ``first`` .. ``end - 1`` are one shot."""
    return first / 24.0, end / 24.0


# Cut-free shots of each source, in source seconds (start, end). See the module docstring.
SHOTS: dict[str, list[tuple[float, float]]] = {
    "vtest": [(0.0, 79.5)],
    "bikes": [(1.20, 3.04), (3.04, 5.48), (5.48, 7.48), (7.48, 9.68)],
    "megamind": [(0.125, 4.129), (4.129, 6.465), (6.465, 8.383), (8.383, 11.261)],
    "bbb": [
        _bbb(285, 378),
        _bbb(804, 1145),  # 553-756: title overlay fading in/out, 756-800: a dissolve (score <= 0.03!)
        _bbb(1145, 1346),
        _bbb(1346, 1456),
        _bbb(1531, 1666),
        _bbb(1813, 1919),
        _bbb(1919, 2154),
        _bbb(2194, 2394),
        _bbb(2494, 2704),
        _bbb(2704, 2831),
        _bbb(3045, 3513),
        _bbb(3578, 3744),
        _bbb(3744, 3860),
        _bbb(5579, 5809),
        _bbb(6388, 6488),
        _bbb(6833, 7013),
        _bbb(8318, 8907),
        _bbb(9148, 9379),
        _bbb(9891, 9987),
        _bbb(10679, 10842),
        _bbb(11349, 11524),
    ],
}


@dataclass(frozen=True)
class _Piece:
    source: str  # key of SOURCES
    start: float  # source seconds
    frames: int  # output frames at 24 fps


@dataclass(frozen=True)
class _Join:
    effect: str  # "cut" or an xfade transition name
    frames: int = 0  # transition length in output frames (0 for a cut)


def _b(frame: int, frames: int) -> _Piece:
    return _Piece("bbb", frame / 24.0, frames)


CUT = _Join("cut")


def _dissolve(frames: int) -> _Join:
    return _Join("fade", frames)


def _fadeblack(frames: int) -> _Join:
    return _Join("fadeblack", frames)


def _fadewhite(frames: int) -> _Join:
    return _Join("fadewhite", frames)


# Pieces alternate with joins. 36 pieces, 25 hard cuts, 10 gradual transitions (0.5-1.5 s).
# Consecutive pieces never come from the same source except bbb, and then from distant scenes.
SEQUENCE: tuple[_Piece | _Join, ...] = (
    _b(10691, 120),
    CUT,
    _Piece("bikes", 3.25, 48),
    CUT,
    _b(1160, 120),
    _dissolve(24),
    _Piece("vtest", 3.0, 96),
    CUT,
    _b(2210, 120),
    CUT,
    _Piece("megamind", 0.35, 84),
    CUT,
    _b(3100, 120),
    _fadeblack(24),
    _b(1940, 120),
    CUT,
    _Piece("bikes", 1.40, 34),
    CUT,
    _b(6850, 120),
    _fadewhite(12),
    _Piece("vtest", 15.0, 96),
    CUT,
    _b(1545, 100),
    CUT,
    _Piece("megamind", 4.33, 46),
    CUT,
    _b(9170, 120),
    _dissolve(36),
    _b(3600, 120),
    CUT,
    _Piece("bikes", 5.70, 36),
    CUT,
    _b(11370, 120),
    _fadeblack(18),
    _Piece("vtest", 28.0, 96),
    CUT,
    _b(297, 66),
    CUT,
    _Piece("megamind", 6.67, 36),
    CUT,
    _b(2520, 120),
    _fadewhite(24),
    _b(960, 120),
    CUT,
    _Piece("vtest", 41.0, 96),
    CUT,
    _b(1358, 84),
    _dissolve(12),
    _b(3350, 120),
    CUT,
    _Piece("bikes", 7.70, 42),
    CUT,
    _b(5600, 120),
    _fadeblack(36),
    _Piece("vtest", 55.0, 96),
    CUT,
    _b(1825, 78),
    CUT,
    _Piece("megamind", 8.60, 56),
    CUT,
    _b(2716, 96),
    _fadewhite(30),
    _b(8700, 120),
    CUT,
    _b(3756, 90),
    _dissolve(30),
    _Piece("vtest", 68.0, 96),
    CUT,
    _b(6400, 72),
    CUT,
    _b(9903, 70),
)

_X264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "high")
_PIECE_ENC = (*_X264, "-preset", "veryfast", "-crf", "12")
_FINAL_ENC = (*_X264, "-preset", "veryfast", "-crf", "18", "-movflags", "+faststart")


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class Transition:
    """One shot boundary of the cut set.

    ``start``/``end`` are seconds: for a hard cut both are the time of the first frame of the new
    shot; for a gradual transition ``start`` is the time of the first frame that differs from the
    old shot (a blend) and ``end`` the time of the first frame that is purely the new shot.
    ffmpeg's ``xfade`` with ``offset`` O and ``duration`` D (in frames) keeps output frame O pure,
    blends O+1 .. O+D-2 and shows the new shot from O+D-1 on (measured with ffmpeg 5.1: black ->
    white over D=12 gives luma 16, 34, 52, ..., 198, 235), so ``start_frame`` = O+1 and
    ``end_frame`` = O+D-1; ``length_frames`` is D. ``mid`` is the middle of ``start``..``end``.
    """

    kind: str  # 'cut' | 'dissolve' | 'fade'
    start: float
    end: float
    mid: float
    effect: str = "cut"  # 'cut' | 'fade' (xfade dissolve) | 'fadeblack' | 'fadewhite'
    start_frame: int = 0
    end_frame: int = 0
    length_frames: int = 0  # xfade duration D in frames (0 for a hard cut)


@dataclass
class CutSet:
    path: Path
    fps: float
    duration: float
    transitions: list[Transition]
    n_frames: int = 0
    recipe_hash: str = ""
    pieces: list[dict] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Transition]:
        return [t for t in self.transitions if t.kind == kind]


# --------------------------------------------------------------------------- recipe


def _pieces_and_joins() -> tuple[list[_Piece], list[_Join]]:
    pieces = [x for x in SEQUENCE[0::2]]
    joins = [x for x in SEQUENCE[1::2]]
    if not all(isinstance(p, _Piece) for p in pieces) or not all(isinstance(j, _Join) for j in joins):
        raise ValueError("SEQUENCE must alternate pieces and joins")
    if len(joins) != len(pieces) - 1:
        raise ValueError("SEQUENCE must start and end with a piece")
    return pieces, joins  # type: ignore[return-value]


def _check_recipe(pieces: Sequence[_Piece], joins: Sequence[_Join]) -> None:
    """Every piece lies inside one cut-free shot with a margin; every transition fits its pieces."""
    for p in pieces:
        end = p.start + p.frames / FPS
        if not any(a + MARGIN_S <= p.start and end <= b - MARGIN_S for a, b in SHOTS[p.source]):
            raise ValueError(f"piece {p} is not inside a known cut-free shot of {p.source}")
    for i, j in enumerate(joins):
        if j.effect == "cut":
            continue
        if not 12 <= j.frames <= 36:
            raise ValueError(f"gradual transition {j} must last 0.5-1.5 s")
        # the clean (unblended) part on both sides must stay >= 1 s
        left = pieces[i].frames - j.frames - (joins[i - 1].frames if i > 0 else 0)
        right = pieces[i + 1].frames - j.frames - (joins[i + 1].frames if i + 1 < len(joins) else 0)
        if min(left, right) < FPS:
            raise ValueError(f"pieces around join {i} are too short for {j}")


def _truth(pieces: Sequence[_Piece], joins: Sequence[_Join]) -> tuple[list[Transition], int, list[dict]]:
    """Frame arithmetic of the join: transitions, total frame count, output position of each piece."""
    acc = pieces[0].frames
    placed = [
        {"source": pieces[0].source, "src_start": pieces[0].start, "frames": pieces[0].frames, "out_start": 0}
    ]
    transitions: list[Transition] = []
    for j, p in zip(joins, pieces[1:], strict=True):
        if j.effect == "cut":
            first_new = acc
            transitions.append(
                Transition(
                    "cut", first_new / FPS, first_new / FPS, first_new / FPS, "cut", first_new, first_new
                )
            )
            out_start = acc
            acc += p.frames
        else:
            o = acc - j.frames  # xfade offset: output frame o is the last pure frame of the old shot
            s, e = o + 1, o + j.frames - 1  # first blended frame, first pure frame of the new shot
            kind = "dissolve" if j.effect == "fade" else "fade"
            transitions.append(
                Transition(kind, s / FPS, e / FPS, (s + e) / 2 / FPS, j.effect, s, e, j.frames)
            )
            out_start = o
            acc += p.frames - j.frames
        placed.append({"source": p.source, "src_start": p.start, "frames": p.frames, "out_start": out_start})
    return transitions, acc, placed


def _ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else ""


def _recipe_hash(pieces: Sequence[_Piece], joins: Sequence[_Join]) -> str:
    srcs = {}
    for key, name in SOURCES.items():
        st = (MEDIA_DIR / name).stat()
        srcs[key] = [name, st.st_size, int(st.st_mtime)]
    recipe = {
        "version": RECIPE_VERSION,
        "size": [WIDTH, HEIGHT, FPS],
        "pieces": [asdict(p) for p in pieces],
        "joins": [asdict(j) for j in joins],
        "enc": [_PIECE_ENC, _FINAL_ENC],
        "sources": srcs,
        "ffmpeg": _ffmpeg_version(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- ffmpeg helpers


def _run(cmd: Sequence[str | os.PathLike[str]]) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _probe(path: Path) -> dict:
    out = _run(
        [
            "ffprobe", "-v", "error", "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,pix_fmt,r_frame_rate,avg_frame_rate,nb_read_frames"
            ":format=duration",
            "-of", "json", path,
        ]
    )  # fmt: skip
    return json.loads(out)


def _video_frames(info: dict) -> int:
    vs = [s for s in info["streams"] if s["codec_type"] == "video"]
    return int(vs[0]["nb_read_frames"])


def _encode_piece(p: _Piece, dst: Path) -> None:
    src = MEDIA_DIR / SOURCES[p.source]
    vf = (
        f"setpts=PTS-STARTPTS,fps={FPS},"
        f"scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=decrease:flags=bicubic,"
        f"pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,format=yuv420p"
    )
    _run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-ss", f"{p.start:.6f}", "-i", src,
            "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", vf, "-frames:v", str(p.frames),
            *_PIECE_ENC, dst,
        ]
    )  # fmt: skip
    got = _video_frames(_probe(dst))
    if got != p.frames:
        raise RuntimeError(f"piece {p}: wrote {got} frames, wanted {p.frames}")


def _join_graph(pieces: Sequence[_Piece], joins: Sequence[_Join]) -> tuple[str, str]:
    """Filter graph: pieces linked by gradual joins form runs (xfade chains); one concat joins the runs.

    (Nesting one concat per hard cut works too but pushes every frame through ~35 levels of filters.)
    """
    norm = f"settb=1/{FPS},setpts=N,fps={FPS},format=yuv420p"
    parts = [f"[{i}:v]{norm}[p{i}]" for i in range(len(pieces))]
    runs: list[str] = []
    run_label, run_len = "p0", pieces[0].frames
    for i, (j, p) in enumerate(zip(joins, pieces[1:], strict=True), start=1):
        if j.effect == "cut":
            runs.append(run_label)
            run_label, run_len = f"p{i}", p.frames
            continue
        offset = run_len - j.frames  # within the run
        out = f"x{i}"
        parts.append(
            f"[{run_label}][p{i}]xfade=transition={j.effect}:duration={j.frames / FPS:.6f}"
            f":offset={offset / FPS:.6f},{norm}[{out}]"
        )
        run_label, run_len = out, run_len + p.frames - j.frames
    runs.append(run_label)
    parts.append(
        "".join(f"[{r}]" for r in runs) + f"concat=n={len(runs)}:v=1:a=0,settb=1/{FPS},setpts=N[out]"
    )
    return ";\n".join(parts), "out"


def default_work_dir() -> Path:
    """Where generated media goes: ``$VIDMEM_BENCH_DIR`` or ``/tmp/vidmem-bench`` (outside the repo)."""
    return Path(os.environ.get("VIDMEM_BENCH_DIR", "/tmp/vidmem-bench"))


def media_available() -> bool:
    return shutil.which("ffmpeg") is not None and all((MEDIA_DIR / n).is_file() for n in SOURCES.values())


def _load(json_path: Path, video: Path, h: str) -> CutSet | None:
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("recipe_hash") != h or not video.is_file():
        return None
    return CutSet(
        path=video,
        fps=float(data["fps"]),
        duration=float(data["duration"]),
        transitions=[Transition(**t) for t in data["transitions"]],
        n_frames=int(data["n_frames"]),
        recipe_hash=h,
        pieces=list(data["pieces"]),
    )


def compose_cut_set(work_dir: Path | None = None) -> CutSet:
    """Build (or reuse from ``work_dir``) the cut-set video and its ground truth."""
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir()
    pieces, joins = _pieces_and_joins()
    _check_recipe(pieces, joins)
    h = _recipe_hash(pieces, joins)
    video = work_dir / f"cutset_{h}.mp4"
    truth_json = work_dir / f"cutset_{h}.json"
    cached = _load(truth_json, video, h)
    if cached is not None:
        return cached

    transitions, n_frames, placed = _truth(pieces, joins)
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"cutset_{h}_", dir=work_dir) as tmp:
        tmpd = Path(tmp)
        piece_files = [tmpd / f"piece_{i:02d}.mp4" for i in range(len(pieces))]
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            list(pool.map(_encode_piece, pieces, piece_files))
        graph, out_label = _join_graph(pieces, joins)
        graph_file = tmpd / "graph.txt"
        graph_file.write_text(graph)
        tmp_video = tmpd / "cutset.mp4"
        inputs: list[str | Path] = []
        for f in piece_files:
            inputs += ["-i", f]
        _run(
            [
                "ffmpeg", "-nostdin", "-v", "error", "-y", *inputs,
                "-filter_complex_script", graph_file, "-map", f"[{out_label}]",
                "-an", "-fps_mode", "passthrough", *_FINAL_ENC, "-r", str(FPS), tmp_video,
            ]
        )  # fmt: skip

        info = _probe(tmp_video)
        vs = [s for s in info["streams"] if s["codec_type"] == "video"]
        problems = []
        if len(info["streams"]) != 1 or len(vs) != 1:
            problems.append(f"streams: {info['streams']}")
        v = vs[0] if vs else {}
        got = int(v.get("nb_read_frames", -1))
        duration = float(info["format"]["duration"])
        if got != n_frames:
            problems.append(f"frame count {got} != {n_frames} from the recipe")
        if (v.get("width"), v.get("height"), v.get("pix_fmt"), v.get("codec_name")) != (
            WIDTH, HEIGHT, "yuv420p", "h264",
        ):  # fmt: skip
            problems.append(f"format {v}")
        if v.get("r_frame_rate") != f"{FPS}/1" or v.get("avg_frame_rate") != f"{FPS}/1":
            problems.append(f"frame rate {v.get('r_frame_rate')} / {v.get('avg_frame_rate')}")
        if abs(duration - n_frames / FPS) > 1.5 / FPS:
            problems.append(f"duration {duration} != {n_frames / FPS}")
        if problems:
            raise RuntimeError("composed cut set failed verification: " + "; ".join(problems))

        os.replace(tmp_video, video)
    data = {
        "recipe_hash": h,
        "fps": float(FPS),
        "n_frames": n_frames,
        "duration": n_frames / FPS,
        "probed_duration": duration,
        "transitions": [asdict(t) for t in transitions],
        "pieces": placed,
    }
    tmp_json = truth_json.with_suffix(f".json.{os.getpid()}.tmp")
    tmp_json.write_text(json.dumps(data, indent=1))
    os.replace(tmp_json, truth_json)
    loaded = _load(truth_json, video, h)
    assert loaded is not None
    return loaded


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Score:
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    recall_by_kind: dict[str, float]
    matches: list[tuple[float, Transition]] = field(default_factory=list, repr=False)


def score(predicted: Sequence[float], truth: Sequence[Transition], tolerance: float) -> Score:
    """Match predicted boundary times to truth transitions, one to one.

    A prediction ``p`` may match transition ``t`` if ``t.start - tolerance <= p <= t.end + tolerance``.
    Admissible pairs are taken greedily in order of ``|p - t.mid|`` (ties: earlier first).
    """
    preds = sorted(float(p) for p in predicted)
    pairs = []
    for i, p in enumerate(preds):
        for j, t in enumerate(truth):
            if t.start - tolerance <= p <= t.end + tolerance:
                pairs.append((abs(p - t.mid), i, j))
    pairs.sort()
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches: list[tuple[float, Transition]] = []
    for _, i, j in pairs:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        matches.append((preds[i], truth[j]))
    tp = len(matches)
    fp = len(preds) - tp
    fn = len(truth) - tp
    precision = tp / len(preds) if preds else (1.0 if not truth else 0.0)
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    by_kind: dict[str, float] = {}
    for kind in sorted({t.kind for t in truth}):
        total = sum(1 for t in truth if t.kind == kind)
        hit = sum(1 for _, t in matches if t.kind == kind)
        by_kind[kind] = hit / total
    matches.sort(key=lambda m: m[0])
    return Score(tp, fp, fn, precision, recall, f1, by_kind, matches)


def pyscenedetect_boundaries(path: str | os.PathLike[str]) -> tuple[list[float], float]:
    """PySceneDetect ``ContentDetector()`` with defaults: boundary times (s) and wall seconds.

    The time covers the whole ``scenedetect.detect`` call, decoding included.
    """
    from scenedetect import ContentDetector, detect

    t0 = time.perf_counter()
    scenes = detect(str(path), ContentDetector())
    elapsed = time.perf_counter() - t0
    return [float(start.seconds) for start, _ in scenes[1:]], elapsed


def frame_diffs(path: str | os.PathLike[str], width: int = 160) -> list[float]:
    """Mean absolute luma difference between each frame and the previous one (index 0 is 0.0).

    Decoded with PyAV at a reduced width; used to check the truth's frame positions.
    """
    import av
    import numpy as np

    out: list[float] = []
    prev = None
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        h = max(2, round(stream.height * width / stream.width / 2) * 2)
        for frame in c.decode(stream):
            y = frame.reformat(width=width, height=h, format="gray").to_ndarray().astype(np.float32)
            out.append(0.0 if prev is None else float(np.abs(y - prev).mean()))
            prev = y
    return out
