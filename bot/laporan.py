"""The monthly KMP report as a form declaration (DOMAIN.md), shared by chat and exports."""

from __future__ import annotations

from typing import Any

from bot.forms import Answers, Field, Form, Kind

STATUS = ("belum", "persiapan", "sebagian", "rutin")
UNIT_USAHA = (
    "sembako",
    "apotek",
    "klinik",
    "simpan_pinjam",
    "kantor",
    "gudang",
    "logistik",
    "lpg_pupuk",
    "lainnya",
)
SUMBER_MODAL = ("simpanan", "himbara", "apbd", "csr", "pinjaman_pengurus")
TEMPAT = ("milik_sendiri", "sewa", "pinjam_pemkot", "menumpang", "belum_ada")
YA_TIDAK = ("ya", "tidak")
KENDALA = (
    "PAHAM",
    "MANAJEMEN",
    "MODAL",
    "TEMPAT",
    "LEGALITAS",
    "SDM",
    "PENDAMPINGAN",
    "REGULASI",
    "DIGITAL",
    "PASAR",
    "LAIN",
    "NIHIL",
)
BANTUAN = ("pelatihan", "konsultasi", "kunjungan", "modal", "tempat", "perizinan")

OMZET_CONFIRM_ABOVE = 1_000_000_000


def _members(value: Any, _answers: Answers, last: Answers) -> tuple[str, ...]:
    before = last.get("jumlah_anggota")
    if not isinstance(before, int) or before <= 0:
        return ()
    if value < before:
        return ("members_down",)
    if value > before * 1.5:
        return ("members_up",)
    return ()


def _omzet(value: Any, _answers: Answers, last: Answers) -> tuple[str, ...]:
    reasons: tuple[str, ...] = ()
    if value > OMZET_CONFIRM_ABOVE:
        reasons += ("omzet_big",)
    before = last.get("omzet_bulan")
    if isinstance(before, int) and before > 0 and value > 10 * before:
        reasons += ("omzet_jump",)
    return reasons


def _pokok(value: Any, _answers: Answers, last: Answers) -> tuple[str, ...]:
    before = last.get("simpanan_pokok_total")
    # Cumulative: it should not fall; a fall is usually a typo, sometimes a member leaving.
    return ("pokok_down",) if isinstance(before, int) and value < before else ()


def _operating(answers: Answers) -> bool:
    return answers.get("status_operasional") not in (None, "belum")


def _has_kendala(answers: Answers) -> bool:
    return bool(answers.get("kendala", []) != ["NIHIL"])


def _kendala_choices(answers: Answers) -> tuple[str, ...]:
    return tuple(k for k in answers.get("kendala", []) if k != "NIHIL")


def previous_obstacles(answers: Answers) -> tuple[str, ...]:
    """Last month's obstacles (filled in when the draft starts), NIHIL left out."""
    return tuple(k for k in answers.get("kendala_lalu", []) if k != "NIHIL")


def _unsolved(answers: Answers) -> tuple[str, ...]:
    solved = set(answers.get("kendala_teratasi", []))
    return tuple(k for k in previous_obstacles(answers) if k not in solved)


def main_obstacle(answers: Answers) -> str | None:
    """The main obstacle: the one chosen, or the only one named."""
    if "kendala_utama" in answers:
        return str(answers["kendala_utama"])
    named = _kendala_choices(answers)
    return named[0] if len(named) == 1 else None


MONTHLY_REPORT = Form(
    id="laporan_bulanan",
    fields=(
        Field("status_operasional", Kind.CHOICE, STATUS, carry=True),
        Field("unit_usaha", Kind.MULTI, UNIT_USAHA, ask_if=_operating, carry=True),
        Field(
            "unit_usaha_lain",
            Kind.TEXT,
            ask_if=lambda a: _operating(a) and "lainnya" in a.get("unit_usaha", []),
            min_length=3,
            max_length=200,
            carry=True,
        ),
        Field("jumlah_anggota", Kind.INTEGER, min_value=0, max_value=20_000, plausible=_members),
        Field("anggota_baru", Kind.INTEGER, min_value=0, max_of="jumlah_anggota"),
        Field(
            "simpanan_pokok_total",
            Kind.MONEY,
            max_value=10**13,
            carry=True,
            plausible=_pokok,
        ),
        Field("simpanan_wajib_bulan", Kind.MONEY, max_value=10**13),
        Field("omzet_bulan", Kind.MONEY, max_value=10**13, plausible=_omzet),
        Field("modal_baru", Kind.MONEY, max_value=10**13),
        Field(
            "modal_sumber",
            Kind.MULTI,
            SUMBER_MODAL,
            ask_if=lambda a: bool(a.get("modal_baru")),
        ),
        Field("tempat_usaha", Kind.CHOICE, TEMPAT, carry=True),
        Field("nib", Kind.CHOICE, YA_TIDAK, carry=True),
        Field("npwp", Kind.CHOICE, YA_TIDAK, carry=True),
        Field("akun_simkopdes", Kind.CHOICE, YA_TIDAK, carry=True),
        Field("microsite", Kind.CHOICE, YA_TIDAK, carry=True),
        Field("kegiatan", Kind.TEXT, min_length=3, max_length=500),
        # Obstacles carry forward: last month's are asked about before this month's.
        Field(
            "kendala_lalu",
            Kind.MULTI,
            KENDALA,
            system=True,
            ask_if=lambda a: bool(previous_obstacles(a)),
        ),
        Field(
            "kendala_teratasi",
            Kind.MULTI,
            options_from=previous_obstacles,
            labels_of="kendala",
            min_selected=0,
            ask_if=lambda a: bool(previous_obstacles(a)),
        ),
        Field(
            "kendala_memburuk",
            Kind.MULTI,
            options_from=_unsolved,
            labels_of="kendala",
            min_selected=0,
            ask_if=lambda a: bool(_unsolved(a)),
        ),
        Field("kendala", Kind.MULTI, KENDALA, exclusive=("NIHIL",), carry=True),
        Field(
            "kendala_utama",
            Kind.CHOICE,
            ask_if=lambda a: len(_kendala_choices(a)) > 1,
            options_from=_kendala_choices,
            labels_of="kendala",
            derive=main_obstacle,
        ),
        Field(
            "kendala_uraian",
            Kind.TEXT,
            ask_if=_has_kendala,
            max_length=1000,
            min_length=3,
            required_if=lambda a: "LAIN" in a.get("kendala", []),
        ),
        Field("kebutuhan_bantuan", Kind.MULTI, BANTUAN, min_selected=0),
        Field("foto", Kind.PHOTO, optional=True, min_selected=0),
    ),
)
