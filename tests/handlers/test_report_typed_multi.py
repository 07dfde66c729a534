"""A multi-select answered by typing the options' numbers ("1, 3, 5"), on any channel: checked as
pressed choices are when Selesai is pressed, and leading to the same next question and review."""

from __future__ import annotations

from bot.core import Core
from handlers.local_api import LocalChat
from tests.conftest import Chats
from tests.handlers.test_report import draft_of, linked, play_to_review, texts


async def to_units(chat: LocalChat) -> None:
    await chat.send("/lapor")
    await chat.press("Beroperasi rutin")


async def test_typed_numbers_answer_a_multi_select(registry_loaded: Core, chats: Chats) -> None:
    chat = await linked(registry_loaded, chats)
    await to_units(chat)

    answer = await chat.send("1, 3")

    assert "pertanyaan 3 dari" in texts(answer)  # on to the number of members
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert draft.answers["unit_usaha"] == ["sembako", "klinik"]
    assert draft.current_field == "jumlah_anggota"


async def test_typed_numbers_in_any_order_and_spacing(registry_loaded: Core, chats: Chats) -> None:
    chat = await linked(registry_loaded, chats)
    await to_units(chat)

    await chat.send("4 dan 1 1")

    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    # The form's order, each once.
    assert draft.answers["unit_usaha"] == ["sembako", "simpan_pinjam"]


async def test_wrong_numbers_are_refused_and_the_question_asked_again(
    registry_loaded: Core, chats: Chats
) -> None:
    chat = await linked(registry_loaded, chats)
    await to_units(chat)

    out_of_range = texts(await chat.send("2, 42"))
    words = texts(await chat.send("sembako saja"))

    assert "Tidak ada pilihan nomor 42" in out_of_range
    assert "pertanyaan 2 dari" in out_of_range
    assert "ketik nomor pilihannya sekaligus" in words
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert "unit_usaha" not in draft.answers
    assert draft.current_field == "unit_usaha"


async def test_an_exclusive_option_stands_alone(registry_loaded: Core, chats: Chats) -> None:
    chat = await linked(registry_loaded, chats)
    review = await play_to_review(chat)
    assert review[-1].button_labels == ["Kirim", "Ubah", "Batal"]
    # Change the obstacles from the review screen, typing them this time.
    await chat.press("Ubah")
    await chat.press("Kendala")
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert draft.current_field == "kendala"
    from bot.laporan import KENDALA

    nihil = KENDALA.index("NIHIL") + 1

    refused = texts(await chat.send(f"1, {nihil}"))
    accepted = await chat.send("1, 3")

    assert "tidak dapat digabung" in refused
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert draft.answers["kendala"] == [KENDALA[0], KENDALA[2]]
    assert accepted
