"""Settings read from the environment and `.env` (pydantic-settings)."""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/koperasi.db"
OFFICIAL_API_BASE_URL = "https://api.telegram.org"
# What Telegram accepts as a webhook's secret_token (setWebhook).
WEBHOOK_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it in one line."""


# The message kinds sent outside WhatsApp's 24-hour window, and the template each uses by
# default (their Indonesian sample texts to submit to Meta are messages/id/wa_template_*.txt).
WHATSAPP_TEMPLATES = {
    "open": "kmp_laporan_dibuka",
    "reminder": "kmp_pengingat_laporan",
    "summons": "kmp_undangan_rapat",
    "digest": "kmp_rekap_petugas",
    "ops": "kmp_peringatan_operasi",
    # Anything else: "a message is waiting, reply to read it".
    "default": "kmp_pesan_baru",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    telegram_bot_token: SecretStr | None = None
    telegram_api_base_url: str = "https://api.telegram.org"
    telegram_bot_username: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    timezone: str = "Asia/Jakarta"
    language: Literal["id", "en"] = "id"
    invite_ttl_days: int = Field(default=14, ge=1, le=365)
    invite_max_failures_per_hour: int = Field(default=5, ge=1, le=1000)
    report_deadline_day: int = Field(default=10, ge=1, le=28)
    report_open_months: int = Field(default=3, ge=1, le=24)
    draft_ttl_days: int = Field(default=14, ge=1, le=365)
    # The reporting calendar: for month M, days of month M+1 (local time).
    report_open_day: int = Field(default=1, ge=1, le=28)
    report_reminder_days: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [5, 8])
    report_notice_time: time = time(9, 0)
    # Proactive messages only inside this window (local time); later ones wait for the start.
    send_window_start: time = time(7, 0)
    send_window_end: time = time(20, 0)
    # The outbox sender: Telegram allows about 30 msg/s on the free tier, 1 msg/s per chat;
    # paid broadcasts allow up to 1000 msg/s.
    outbox_rate_per_second: float = Field(default=25.0, gt=0, le=1000)
    outbox_per_chat_interval_seconds: float = Field(default=1.0, ge=0, le=60)
    outbox_max_attempts: int = Field(default=5, ge=1, le=50)
    # Sends in flight at once; a killed sender may send at most this many of them again.
    outbox_concurrency: int = Field(default=64, ge=1, le=1000)
    # How long rows claimed by the bot's own sender stay reserved: when the process dies,
    # another sender takes them over after this long (`send --lease-seconds` for `send`).
    outbox_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    run_scheduler: bool = True
    # With several processes one runs the calendar; the others check this often whether it is
    # still there, so a take-over happens within about this many seconds (bot/leader.py).
    scheduler_takeover_seconds: float = Field(default=15.0, ge=0.5, le=600)
    # Flood control (with Telegram): more than FLOOD_LIMIT updates from one person within
    # FLOOD_WINDOW_SECONDS is answered once, then ignored until their pace drops.
    flood_limit: int = Field(default=20, ge=1, le=10_000)
    flood_window_seconds: float = Field(default=10.0, gt=0, le=3600)
    # Who signs the city's summons (the letter's closing).
    summons_signer: str = "Wali Kota Serang"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `run --webhook`: Telegram POSTs updates to WEBHOOK_URL (TLS ends at a reverse proxy in
    # front), which forwards them to WEBHOOK_LISTEN; each request must carry WEBHOOK_SECRET.
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1:8443"
    webhook_secret: SecretStr | None = None
    # WhatsApp Business Cloud API (the second channel; on when the first four are set).
    whatsapp_phone_number_id: str | None = None
    whatsapp_access_token: SecretStr | None = None
    whatsapp_app_secret: SecretStr | None = None
    whatsapp_verify_token: SecretStr | None = None
    whatsapp_api_base_url: str = "https://graph.facebook.com/v21.0"
    # The business number as digits (6281234567890), for wa.me links in invites.
    whatsapp_business_number: str | None = None
    # The local host:port serving the WhatsApp webhook (path /whatsapp) behind the TLS proxy.
    whatsapp_listen: str = "127.0.0.1:8444"
    # The Cloud API's default throughput is 80 messages/s per number.
    whatsapp_rate_per_second: float = Field(default=20.0, gt=0, le=1000)
    # Approved message templates for messages outside the 24-hour window: kind=name pairs.
    whatsapp_templates: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(WHATSAPP_TEMPLATES)
    )
    whatsapp_template_language: str = "id"

    @field_validator("telegram_bot_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str):
            value = value.strip()
            head, sep, tail = value.partition(":")
            if not (sep and head.isdigit() and tail):
                raise ValueError("expected the form 123456789:ABC... given by @BotFather")
        return value

    @field_validator("whatsapp_phone_number_id", "whatsapp_business_number", mode="before")
    @classmethod
    def _digits(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lstrip("+").replace(" ", "").replace("-", "") or None
            if value is not None and not value.isdigit():
                raise ValueError("digits only, e.g. 6281234567890")
        return value

    @field_validator(
        "whatsapp_access_token", "whatsapp_app_secret", "whatsapp_verify_token", mode="before"
    )
    @classmethod
    def _empty_secret_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("whatsapp_templates", mode="before")
    @classmethod
    def _templates(cls, value: object) -> object:
        # Written in .env as "open=laporan_dibuka,reminder=pengingat_laporan".
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for part in value.replace(";", ",").split(","):
                if not part.strip():
                    continue
                kind, sep, name = part.partition("=")
                if not (sep and kind.strip() and name.strip()):
                    raise ValueError("give kind=template pairs, e.g. open=laporan_dibuka")
                pairs[kind.strip()] = name.strip()
            return pairs
        return value

    @property
    def whatsapp_enabled(self) -> bool:
        """Whether the WhatsApp channel runs: the number, the token, the app secret (to check
        the webhook's signatures) and the verify token are all set."""
        return None not in (
            self.whatsapp_phone_number_id,
            self.whatsapp_access_token,
            self.whatsapp_app_secret,
            self.whatsapp_verify_token,
        )

    @field_validator("report_reminder_days", mode="before")
    @classmethod
    def _days(cls, value: object) -> object:
        # Written in .env as "5,8"; an empty value means no reminders.
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            return [part for part in parts if part]
        return value

    @field_validator("report_notice_time", "send_window_start", "send_window_end", mode="before")
    @classmethod
    def _clock_time(cls, value: object) -> object:
        # People write 09.00 as well as 09:00.
        if isinstance(value, str):
            return value.strip().replace(".", ":")
        return value

    @model_validator(mode="after")
    def _calendar(self) -> Settings:
        days = self.report_reminder_days
        if sorted(set(days)) != days:
            raise ValueError("REPORT_REMINDER_DAYS: give increasing days, e.g. 5,8")
        if days and not (self.report_open_day < days[0] and days[-1] <= self.report_deadline_day):
            raise ValueError(
                "REPORT_REMINDER_DAYS: reminders fall after REPORT_OPEN_DAY and no later "
                "than REPORT_DEADLINE_DAY"
            )
        if self.report_open_day > self.report_deadline_day:
            raise ValueError("REPORT_OPEN_DAY: must not be after REPORT_DEADLINE_DAY")
        if self.send_window_start >= self.send_window_end:
            raise ValueError("SEND_WINDOW_START: must be before SEND_WINDOW_END")
        # Telegram delivers webhooks over HTTPS only; a local Bot API server also takes http.
        if (
            self.webhook_url is not None
            and not self.webhook_url.startswith("https://")
            and self.telegram_api_base_url == OFFICIAL_API_BASE_URL
        ):
            raise ValueError(
                "WEBHOOK_URL: Telegram needs an https:// URL (TLS may end at a reverse proxy "
                "that forwards to WEBHOOK_LISTEN)"
            )
        return self

    @field_validator("telegram_api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("telegram_bot_username", mode="before")
    @classmethod
    def _username(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lstrip("@") or None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        # People paste plain URLs; the bot always talks to the database through async drivers.
        for plain, driver in (
            ("postgres://", "postgresql+asyncpg://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite:///path/to.db or postgresql://user@host:port/name")
        return value

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_url(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("expected the public URL, e.g. https://bot.example.go.id/telegram")
        if parts.query or parts.fragment:
            raise ValueError("give the URL without ?query or #fragment")
        return value

    @field_validator("webhook_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        value = value.strip()
        _split_listen(value)
        return value

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _secret(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            # The message never repeats the value: it is a secret.
            if not WEBHOOK_SECRET_PATTERN.fullmatch(value):
                raise ValueError(
                    "use 1 to 256 characters of A-Z, a-z, 0-9, _ and - (as Telegram requires)"
                )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Jakarta)") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def invite_ttl(self) -> timedelta:
        return timedelta(days=self.invite_ttl_days)

    @property
    def webhook_address(self) -> tuple[str, int]:
        """WEBHOOK_LISTEN as (host, port)."""
        return _split_listen(self.webhook_listen)

    @property
    def webhook_path(self) -> str:
        """The path of WEBHOOK_URL, which the webhook server answers on."""
        return urlsplit(self.webhook_url or "").path or "/"

    def check_webhook(self) -> None:
        """`run --webhook` needs the token, the URL and the secret: say which one is missing."""
        for name, value in (
            ("TELEGRAM_BOT_TOKEN", self.telegram_bot_token),
            ("WEBHOOK_URL", self.webhook_url),
            ("WEBHOOK_SECRET", self.webhook_secret),
        ):
            if value is None:
                raise ConfigError(f"{name}: required for `run --webhook`")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The database file for SQLite URLs (None for in-memory or PostgreSQL)."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        if not path or path == ":memory:":
            return None
        return Path(path)


def _split_listen(value: str) -> tuple[str, int]:
    """host:port as (host, port): 127.0.0.1:8443, 0.0.0.0:8443, [::1]:8443."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("expected host:port, e.g. 127.0.0.1:8443")
    return host, int(port)


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation error into one line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else ""
        message = first["msg"].removeprefix("Value error, ")
        if not name:  # a check across settings names them itself
            name, _, message = message.partition(": ")
        raise ConfigError(f"{name}: {message}") from None
