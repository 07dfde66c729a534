"""Onboarding through real Updates: invites, greetings, /bantuan, /keluar, group chats."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from bot import officers, onboarding
from bot.core import Core
from storage.models import AuditLog, BoardMember, ChatIdentity, Invite, Person
from tests.conftest import Chats

SUKAWANA_CURUG = "36.73.04.1007"


async def invite(core: Core, kode: str = SUKAWANA_CURUG, role: str = "bendahara") -> str:
    created = await onboarding.create_invite(core, koperasi_kode=kode, role=role, created_by="test")
    return created.code


async def count(core: Core, model: type) -> int:
    async with core.db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_start_with_code_links_and_greets_by_name_and_cooperative(
    registry_loaded: Core, chats: Chats
) -> None:
    code = await invite(registry_loaded)
    chat = chats.user("Siti", "Aminah")

    replies = await chat.send(f"/start {code}")

    assert len(replies) == 1
    text = replies[0].text
    assert text.startswith("Selamat pagi, Bapak/Ibu <b>Siti Aminah</b>.")
    assert "<b>Bendahara</b> pada <b>Koperasi Kelurahan Merah Putih Sukawana</b>" in text
    assert "Kecamatan Curug" in text
    async with registry_loaded.db.sessions() as session:
        member = await session.scalar(select(BoardMember))
        assert member is not None
        person = await session.get(Person, member.person_id)
        assert person is not None
        assert person.nama == "Siti Aminah"
        identity = await session.scalar(select(ChatIdentity))
        assert identity is not None
        assert (identity.channel, identity.external_id) == ("telegram", str(chat.user.user_id))
        used = await session.scalar(select(Invite))
        assert used is not None
        assert used.used_at is not None
        assert used.used_by_person_id == person.id
        actions = (await session.scalars(select(AuditLog.action))).all()
        assert "board.linked" in actions


async def test_invite_code_is_stored_hashed(registry_loaded: Core) -> None:
    code = await invite(registry_loaded)
    async with registry_loaded.db.sessions() as session:
        stored = await session.scalar(select(Invite.code_hash))
    assert stored is not None
    assert code not in stored
    assert stored == onboarding.hash_code(code)


async def test_used_code_is_refused_and_changes_nothing(
    registry_loaded: Core, chats: Chats
) -> None:
    code = await invite(registry_loaded)
    await chats.user("Siti").send(f"/start {code}")
    other = chats.user("Ahmad", "Fauzi")

    replies = await other.send(f"/start {code}")

    assert "sudah pernah dipakai" in replies[0].text
    assert await count(registry_loaded, BoardMember) == 1
    assert await count(registry_loaded, Person) == 1


async def test_expired_code_is_refused(registry_loaded: Core, chats: Chats, clock) -> None:
    code = await invite(registry_loaded)
    clock.set(clock.now() + registry_loaded.settings.invite_ttl + timedelta(seconds=1))

    replies = await chats.user().send(f"/start {code}")

    assert "kedaluwarsa" in replies[0].text
    assert await count(registry_loaded, BoardMember) == 0


async def test_unknown_code_is_refused_politely(registry_loaded: Core, chats: Chats) -> None:
    replies = await chats.user().send("/start ZZZZ222222")
    assert "tidak dikenal" in replies[0].text
    assert "/start KODE" in replies[0].text
    assert await count(registry_loaded, BoardMember) == 0
    assert await count(registry_loaded, Person) == 0


async def test_code_is_read_case_and_space_insensitive(registry_loaded: Core, chats: Chats) -> None:
    code = await invite(registry_loaded)
    spaced = f"{code[:5].lower()} {code[5:].lower()}"
    replies = await chats.user().send(f"/start {spaced}")
    assert "Akun Anda sudah terhubung" in replies[0].text


async def test_pasting_only_the_code_links_too(registry_loaded: Core, chats: Chats) -> None:
    code = await invite(registry_loaded)
    replies = await chats.user().send(code)
    assert "Akun Anda sudah terhubung" in replies[0].text
    assert await count(registry_loaded, BoardMember) == 1


async def test_guessing_is_limited_per_hour(registry_loaded: Core, chats: Chats, clock) -> None:
    chat = chats.user()
    limit = registry_loaded.settings.invite_max_failures_per_hour
    for _ in range(limit):
        await chat.send("/start ZZZZ222222")
    code = await invite(registry_loaded)

    replies = await chat.send(f"/start {code}")

    assert "terlalu banyak" in replies[0].text
    assert await count(registry_loaded, BoardMember) == 0
    clock.set(clock.now() + timedelta(hours=1, seconds=1))
    replies = await chat.send(f"/start {code}")
    assert "Akun Anda sudah terhubung" in replies[0].text


async def test_one_cooperative_per_person_several_people_per_cooperative(
    registry_loaded: Core, chats: Chats
) -> None:
    siti, ahmad = chats.user("Siti"), chats.user("Ahmad")
    await siti.send(f"/start {await invite(registry_loaded, role='bendahara')}")
    await ahmad.send(f"/start {await invite(registry_loaded, role='ketua')}")
    assert await count(registry_loaded, BoardMember) == 2

    same = await siti.send(f"/start {await invite(registry_loaded)}")
    assert "sudah terhubung dengan <b>Koperasi Kelurahan Merah Putih Sukawana</b>" in same[0].text
    elsewhere_code = await invite(registry_loaded, kode="36.73.01.1001")
    elsewhere = await siti.send(f"/start {elsewhere_code}")
    assert "hanya dapat terhubung dengan satu koperasi" in elsewhere[0].text
    assert "/keluar" in elsewhere[0].text
    assert await count(registry_loaded, BoardMember) == 2
    async with registry_loaded.db.sessions() as session:
        unused = await session.scalar(
            select(func.count()).select_from(Invite).where(Invite.used_at.is_(None))
        )
    assert unused == 2  # refused codes stay usable for the person they were meant for


async def test_start_without_code(registry_loaded: Core, chats: Chats) -> None:
    stranger = await chats.user().send("/start")
    assert "belum terhubung" in stranger[0].text
    assert "kode undangan" in stranger[0].text

    member = chats.user("Siti")
    await member.send(f"/start {await invite(registry_loaded)}")
    again = await member.send("/start")
    assert "Akun Anda terhubung sebagai <b>Bendahara</b>" in again[0].text


async def test_officer_is_greeted_with_scope(registry_loaded: Core, chats: Chats) -> None:
    await officers.add_officer(
        registry_loaded,
        telegram_id="4242",
        nama="Dewi Lestari",
        kecamatan="Kasemen",
        can_broadcast=False,
        actor="test",
    )
    replies = await chats.user("Dewi", user_id=4242).send("/start")
    assert "petugas Pemerintah Kota untuk <b>Kecamatan Kasemen</b>" in replies[0].text
    assert "Bapak/Ibu <b>Dewi Lestari</b>" in replies[0].text


async def test_bantuan_depends_on_who_asks(registry_loaded: Core, chats: Chats) -> None:
    stranger = await chats.user().send("/bantuan")
    assert "/start KODE" in stranger[0].text
    assert "/keluar" not in stranger[0].text

    member = chats.user("Siti")
    await member.send(f"/start {await invite(registry_loaded)}")
    board = await member.send("/bantuan")
    assert "/keluar" in board[0].text
    assert "Sebagai Bendahara Koperasi Kelurahan Merah Putih Sukawana" in board[0].text

    await officers.add_officer(
        registry_loaded,
        telegram_id="77",
        nama="Rina",
        kecamatan=None,
        can_broadcast=True,
        actor="test",
    )
    officer = await chats.user("Rina", user_id=77).send("/bantuan")
    assert "Sebagai petugas seluruh kota" in officer[0].text


async def test_keluar_asks_then_unlinks(registry_loaded: Core, chats: Chats) -> None:
    member = chats.user("Siti")
    await member.send(f"/start {await invite(registry_loaded)}")

    confirm = await member.send("/keluar")
    assert confirm[0].button_labels == ["Ya, putuskan", "Batal"]
    assert await count(registry_loaded, BoardMember) == 1

    done = await member.press("Ya, putuskan")
    assert "sudah tidak terhubung" in done[0].text
    assert done[0].buttons == []
    assert await count(registry_loaded, BoardMember) == 0
    async with registry_loaded.db.sessions() as session:
        actions = (await session.scalars(select(AuditLog.action))).all()
    assert "board.unlinked" in actions

    after = await member.send("/keluar")
    assert "tidak sedang terhubung" in after[0].text


async def test_keluar_cancel_keeps_link(registry_loaded: Core, chats: Chats) -> None:
    member = chats.user("Siti")
    await member.send(f"/start {await invite(registry_loaded)}")
    await member.send("/keluar")
    cancelled = await member.press("Batal")
    assert "tetap terhubung" in cancelled[0].text
    assert await count(registry_loaded, BoardMember) == 1


async def test_pressing_yes_twice_or_forged_changes_nothing(
    registry_loaded: Core, chats: Chats
) -> None:
    member = chats.user("Siti")
    await member.send(f"/start {await invite(registry_loaded)}")
    confirm = (await member.send("/keluar"))[0]
    await member.press("Ya, putuskan", confirm)
    # The old button again, and the same data from someone never linked.
    again = await member.process(member.user.callback_update(confirm, "keluar:ya"))
    assert "tidak sedang terhubung" in again[0].text
    stranger = chats.user("Joko")
    forged = await stranger.process(stranger.user.callback_update(confirm, "keluar:ya"))
    assert "tidak sedang terhubung" in forged[0].text
    assert await count(registry_loaded, BoardMember) == 0


async def test_unknown_callback_data_is_answered_as_stale(
    registry_loaded: Core, chats: Chats, api
) -> None:
    member = chats.user("Siti")
    await member.send("/start")
    message = member.last_message()
    assert message is not None
    await member.process(member.user.callback_update(message, "' OR 1=1 --"))
    answer = api.calls[-1]
    assert answer.method == "answerCallbackQuery"
    assert answer.params["text"] == "Tombol ini sudah tidak berlaku."


async def test_group_chat_gets_a_pointer_to_private_chat(
    registry_loaded: Core, chats: Chats
) -> None:
    code = await invite(registry_loaded)
    group = chats.user("Siti", chat_id=-100123)
    replies = await group.send(f"/start {code}")
    assert "hanya melayani percakapan pribadi" in replies[0].text
    assert await count(registry_loaded, BoardMember) == 0
    # Ordinary group chatter is not answered at all.
    assert await group.send("halo semua") == []


async def test_unknown_command_and_stray_input(registry_loaded: Core, chats: Chats) -> None:
    chat = chats.user()
    assert "perintah tersebut tidak dikenal" in (await chat.send("/foo"))[0].text
    assert "belum terhubung" in (await chat.send("halo"))[0].text
    await chat.send(f"/start {await invite(registry_loaded)}")
    assert "belum memahami" in (await chat.send("halo"))[0].text
    sticker = chat.user.message_json(
        sticker={
            "file_id": "x",
            "file_unique_id": "y",
            "width": 1,
            "height": 1,
            "is_animated": False,
            "is_video": False,
            "type": "regular",
        }
    )
    replies = await chat.process({"update_id": chat.api.next_update_id(), "message": sticker})
    assert "belum dapat saya proses" in replies[0].text


async def test_user_input_is_escaped_in_replies(registry_loaded: Core, chats: Chats) -> None:
    code = await invite(registry_loaded)
    replies = await chats.user("<b>Evil</b>", "&amp;").send(f"/start {code}")
    assert "&lt;b&gt;Evil&lt;/b&gt; &amp;amp;" in replies[0].text


async def test_command_menu_is_set_in_indonesian(app, api) -> None:
    await app.post_init(app)
    call = next(c for c in api.calls if c.method == "setMyCommands")
    commands = {c["command"]: c["description"] for c in call.params["commands"]}
    assert set(commands) == {"start", "bantuan", "keluar", "lapor", "batal", "jadwal"}
    assert commands["bantuan"] == "Apa saja yang dapat dilakukan"
    assert call.params["scope"] == {"type": "all_private_chats"}


async def test_officers_get_their_own_command_menu(
    registry_loaded: Core, chats: Chats, api
) -> None:
    from bot import officers

    chat = chats.user("Rina", None)
    await officers.add_officer(
        registry_loaded,
        telegram_id=str(chat.user.user_id),
        nama="Rina",
        kecamatan=None,
        can_broadcast=True,
        actor="t",
    )
    await chat.send("/start")
    call = next(c for c in reversed(api.calls) if c.method == "setMyCommands")
    assert call.params["scope"] == {"type": "chat", "chat_id": chat.chat_id}
    commands = [c["command"] for c in call.params["commands"]]
    assert {"rekap", "panggil", "undangan", "jadwal"} <= set(commands)


async def test_whatsapp_without_the_channel_set_up_is_explained(
    registry_loaded: Core, chats: Chats
) -> None:
    chat = chats.user("Siti", None)
    (answer,) = await chat.send("/whatsapp")
    assert "Layanan WhatsApp belum tersedia" in answer.text
    async with registry_loaded.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Invite)) == 0
