"""bench/updates.py runs and prints its figures (timings themselves are claimed only in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "updates.py"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_prints_answers_echo_ratio_and_latencies() -> None:
    # 30 updates, one form at a time: a whole report (27 updates), then a second one begun.
    out = run("--updates", "30", "--koperasi", "2", "--interleave", "1")

    assert out.startswith("sqlite: 30 report updates (1 reports submitted")
    for figure in ("answers/s", "echo/s", "ratio", "p50", "p99"):
        assert figure in out


def test_json_figures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    figures = json.loads(run("--updates", "5", "--koperasi", "1", "--json", "--url", url))

    assert figures["database"] == "sqlite"
    assert figures["updates"] == 5
    for key in ("answers_per_second", "echo_per_second", "ratio", "p50_ms", "p99_ms"):
        assert figures[key] > 0
