"""The local chat simulator, driven by a script on stdin as a person would type it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from bot.core import Core
from storage.models import BoardMember, Officer
from tests.bot.test_cli import cli


async def test_script_links_a_board_member_and_gets_the_greeting(
    cli_env: dict[str, str], tmp_path: Path, core: Core
) -> None:
    assert cli("init", "--sample", env=cli_env, cwd=tmp_path).returncode == 0
    script = "\n".join(
        [
            "1",  # a board member
            "sukawana",  # two match: the simulator lists them
            "2",  # Sukawana (Curug)
            "",  # role: Enter = bendahara
            "/lapor",  # a command where the name is asked: asked again
            "Siti Aminah",
            "/bantuan",
            "/keluar",
            "2",  # press [2] Batal
            ":keluar",
        ]
    )
    result = cli("run", env=cli_env, cwd=tmp_path, stdin=script + "\n")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Sukawana (Serang)" in out
    assert "Sukawana (Curug)" in out
    assert "Itu perintah untuk bot (/lapor), sedangkan yang ditanyakan nama Anda." in out
    assert "Anda: /start " in out
    assert "Bapak/Ibu Siti Aminah." in out
    assert (
        "Akun Anda sudah terhubung sebagai Bendahara pada Koperasi Kelurahan Merah Putih Sukawana"
        in out
    )
    assert "[1] Ya, putuskan   [2] Batal" in out
    assert "Anda: [Batal]" in out
    assert "tetap terhubung" in out
    assert "TELEGRAM_BOT_TOKEN belum diatur" in result.stderr
    async with core.db.sessions() as session:
        member = await session.scalar(select(BoardMember))
    assert member is not None


async def test_script_as_officer_and_switching_roles(
    cli_env: dict[str, str], tmp_path: Path, core: Core
) -> None:
    assert cli("init", "--sample", env=cli_env, cwd=tmp_path).returncode == 0
    script = "\n".join(
        ["2", "Rina Wati", "/bantuan", ":ganti", "3", "halo", "/start ZZZZ222222", "9"]
    )
    result = cli("simulate", env=cli_env, cwd=tmp_path, stdin=script + "\n")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "petugas Pemerintah Kota untuk seluruh kota, dengan hak mengirim undangan" in out
    assert "Sebagai petugas seluruh kota" in out
    assert "pengguna baru (belum terhubung)" in out
    assert "belum terhubung dengan koperasi" in out
    assert "kode undangan tersebut tidak dikenal" in out
    assert "Simulator selesai" in out  # end of input ends the simulator cleanly
    async with core.db.sessions() as session:
        officer = await session.scalar(select(Officer))
    assert officer is not None


async def test_moving_the_clock_delivers_the_opening_notice_and_its_button_works(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("init", "--sample", env=cli_env, cwd=tmp_path).returncode == 0
    script = "\n".join(
        [
            "1",
            "cipare",
            "",
            "Ani",
            ":waktu 2026-12-01 06:00",  # outside sending hours: nothing yet
            ":waktu 2026-12-01 09:00",
            "1",  # press the button under the notice
            ":waktu 2026-12-01 09:30",  # nothing new: the opening went out once
            ":waktu besok",
            ":keluar",
        ]
    )
    result = cli("run", env=cli_env, cwd=tmp_path, stdin=script + "\n")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pukul 06.00 WIB. Di luar jam kirim" in out
    assert "pukul 09.00 WIB. Pemberitahuan baru: 1 pesan; terkirim 1." in out
    assert out.count("--- 1 pesan otomatis masuk ---") == 1
    assert "Laporan bulan November 2026 untuk Koperasi Kelurahan Merah Putih Cipare" in out
    assert "Anda: [Isi laporan November 2026]" in out
    assert "Bagaimana status usaha koperasi pada bulan November 2026?" in out
    assert "pukul 09.30 WIB. Pemberitahuan baru: 0 pesan" in out
    assert 'Waktu "besok" tidak dapat dibaca' in out
    assert "apscheduler" not in result.stderr
