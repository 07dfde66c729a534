"""bench/broadcast.py at a tiny size: it prints every figure, and the summons reaches every
recipient exactly once through the real sender (the measured run is docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "broadcast.py"
FIGURES = {
    "write_seconds",
    "outbox_rows",
    "delivered",
    "achieved_rate",
    "achieved_share",
    "max_1s",
    "lost",
    "duplicated",
    "sender_cpu",
    "server_cpu",
    "targets_met",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )


def test_help_names_the_options() -> None:
    shown = run("--help")
    assert shown.returncode == 0, shown.stderr
    for option in ("--url", "--recipients", "--rate", "--processes", "--json"):
        assert option in shown.stdout


def test_a_small_broadcast_is_delivered_once_to_everyone() -> None:
    done = run("--recipients", "50", "--rate", "200", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert set(result) >= FIGURES
    assert (result["database"], result["rate_limit"], result["recipients"]) == ("sqlite", 200, 50)
    assert result["outbox_rows"] == result["delivered"] == 50
    assert result["lost"] == result["rows_not_sent"] == result["chats_without"] == 0
    assert result["duplicated"] == 0
    assert result["achieved_rate"] > 0
    assert result["max_1s"] >= 1
