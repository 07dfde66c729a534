"""Settings: .env.example is valid and documents every setting, as does the README."""

from __future__ import annotations

from bot.config import Settings
from tests.bot.test_cli import ROOT


def test_env_example_is_valid_and_complete() -> None:
    example = ROOT / ".env.example"
    settings = Settings(_env_file=example)  # type: ignore[call-arg]
    assert settings.report_reminder_days == [5, 8]
    text = example.read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"\n{name.upper()}=" in text, name
        assert f"`{name.upper()}`" in readme, name
