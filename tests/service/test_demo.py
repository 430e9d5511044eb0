"""The README's first command runs the main job: `vidmem demo` makes a 2:40 film with narration at
known times, ingests it, prints the timeline, searches it and asks it a question. The searches must
land on the narrated moments, and the answer must cite the moment that holds it (the lines and
their times come from service.demo.NARRATION)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from kernels.timecode import parse_hms
from service.demo import NARRATION, QUERIES, QUESTION


def test_demo_ingests_shows_and_finds_the_narrated_moments(tmp_path: Path) -> None:
    vidmem = Path(sys.executable).parent / "vidmem"
    env = {**os.environ, "VIDMEM_HOME": str(tmp_path / "home")}
    res = subprocess.run(
        [str(vidmem), "demo", "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "Traceback" not in out + res.stderr
    shots = re.findall(r"^\s*(\d\d:\d\d:\d\d\.\d{3}) - (\d\d:\d\d:\d\d\.\d{3})\s+shot \d+", out, re.M)
    assert len(shots) >= 5, "a film sample has several shots"
    assert parse_hms(shots[-1][1]) >= 120.0, "the sample lasts at least two minutes"
    # each query's best moment covers the narration line it paraphrases
    expected = {QUERIES[0]: NARRATION[3][0], QUERIES[1]: NARRATION[4][0]}
    for query, spoken_at in expected.items():
        block = out.split(f"search {query!r}", 1)[1]
        first = re.search(r"(\d\d:\d\d:\d\d) - (\d\d:\d\d:\d\d)", block)
        assert first, f"no moment printed for {query!r}"
        start, end = parse_hms(first.group(1)), parse_hms(first.group(2))
        assert start - 2.0 <= spoken_at <= end + 1.0, (
            f"{query!r}: best moment {start}-{end}, spoken at {spoken_at}"
        )
    # the question is answered from the rodents' line, citing where it is said (extractive: the
    # embedded default; the words are the speech recogniser's)
    block = out.split(f"ask {QUESTION!r}", 1)[1]
    assert "behind the rocks" in block, block
    cited = re.findall(r"cites (\d\d:\d\d:\d\d) - (\d\d:\d\d:\d\d)", block)
    assert cited, block
    assert any(parse_hms(a) - 2.0 <= NARRATION[4][0] <= parse_hms(b) + 1.0 for a, b in cited), cited
    assert "engine extractive" in block
