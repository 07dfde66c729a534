"""The koperasi-bot command line, run as a person runs it (a subprocess with its own env)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.core import Core
from storage.models import Invite, Officer

ROOT = Path(__file__).resolve().parents[2]


def cli(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        input=stdin,
        timeout=120,
        check=False,
    )


async def test_init_invite_officer_roundtrip(
    cli_env: dict[str, str], tmp_path: Path, core: Core
) -> None:
    init = cli("init", "--sample-if-empty", env=cli_env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "67 koperasi baru" in init.stdout
    again = cli("init", "--sample-if-empty", env=cli_env, cwd=tmp_path)
    assert "Registri sudah berisi 67 koperasi" in again.stdout

    invite = cli(
        "invite",
        "--coop",
        "36.73.04.1007",
        "--role",
        "bendahara",
        "--json",
        env=cli_env,
        cwd=tmp_path,
    )
    assert invite.returncode == 0, invite.stderr
    payload = json.loads(invite.stdout.strip().splitlines()[-1])
    assert len(payload["code"]) == 10
    assert payload["link"] == f"https://t.me/koperasi_simulator_bot?start={payload['code']}"
    assert "Kecamatan Curug" in invite.stdout
    async with core.db.sessions() as session:
        stored = await session.scalar(select(Invite))
    assert stored is not None
    assert stored.created_by == "cli:invite"

    officer = cli(
        "officer",
        "add",
        "--telegram-id",
        "5551",
        "--name",
        "Budi Santoso",
        "--kecamatan",
        "cipocok jaya",
        "--can-broadcast",
        env=cli_env,
        cwd=tmp_path,
    )
    assert officer.returncode == 0, officer.stderr
    assert "Kecamatan Cipocok Jaya, boleh mengirim undangan" in officer.stdout
    async with core.db.sessions() as session:
        saved = await session.scalar(select(Officer))
    assert saved is not None
    assert saved.can_broadcast
    listed = cli("officer", "list", env=cli_env, cwd=tmp_path)
    assert "5551  Budi Santoso" in listed.stdout


def test_cli_refuses_bad_input_with_one_clear_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli("init", "--sample", env=cli_env, cwd=tmp_path)
    unknown = cli(
        "invite", "--coop", "36.73.99.9999", "--role", "bendahara", env=cli_env, cwd=tmp_path
    )
    assert unknown.returncode == 2
    assert "tidak ada di registri" in unknown.stderr
    role = cli(
        "invite", "--coop", "36.73.04.1007", "--role", "bendahari", env=cli_env, cwd=tmp_path
    )
    assert role.returncode == 2
    assert "Jabatan tidak dikenal. Pilihan: ketua, " in role.stderr
    kec = cli(
        "officer",
        "add",
        "--telegram-id",
        "1",
        "--name",
        "X",
        "--kecamatan",
        "Bogor",
        env=cli_env,
        cwd=tmp_path,
    )
    assert kec.returncode == 2
    assert "Kecamatan tidak dikenal" in kec.stderr
    missing = cli("import-coops", "tidak-ada.csv", env=cli_env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "tidak ditemukan" in missing.stderr


def test_import_coops_reports_bad_rows_and_exits_1(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "coops.csv"
    path.write_text(
        "kode_kemendagri,kecamatan,kelurahan\n36.73.01.1001,Serang,Serang\nxx,Serang,Cipare\n",
        encoding="utf-8",
    )
    result = cli("import-coops", str(path), env=cli_env, cwd=tmp_path)
    assert result.returncode == 1
    assert "1 koperasi baru" in result.stdout
    assert 'baris 3: kode wilayah "xx" tidak sah' in result.stdout


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DATABASE_URL", "mysql://x", "DATABASE_URL:"),
        ("TIMEZONE", "Mars/Olympus", "TIMEZONE: unknown time zone"),
        ("TELEGRAM_BOT_TOKEN", "not-a-token", "TELEGRAM_BOT_TOKEN:"),
        ("LANGUAGE", "fr", "LANGUAGE:"),
        ("INVITE_TTL_DAYS", "banyak", "INVITE_TTL_DAYS:"),
    ],
)
def test_malformed_setting_stops_with_one_line_naming_it(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    result = cli("roles", env={name: value}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Konfigurasi salah: {expected}")


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIMEZONE=Nowhere/City\n", encoding="utf-8")
    result = cli("roles", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert "TIMEZONE" in result.stderr


def test_export_csv_writes_the_whole_registry(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli("init", "--sample", env=cli_env, cwd=tmp_path)
    out = tmp_path / "ekspor" / "2026-10.csv"
    result = cli(
        "export",
        "--period",
        "2026-10",
        "--format",
        "csv",
        "--out",
        str(out),
        env=cli_env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "67 koperasi ditulis" in result.stdout
    lines = out.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("kode_wilayah,kecamatan,kelurahan,nama_koperasi,status_operasional,")
    assert lines[0].endswith(",revisi,dikirim_oleh,dikirim_pada,terlambat")
    assert len(lines) == 68
    bad = cli("export", "--period", "Oktober", "--out", str(out), env=cli_env, cwd=tmp_path)
    assert bad.returncode == 2
    assert "TAHUN-BULAN" in bad.stderr
