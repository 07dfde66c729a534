"""Matching place names the way officers type them (spacing and spelling variants)."""

from __future__ import annotations

import re
import unicodedata

# Spelling variants that differ by more than spacing (DOMAIN.md); keys and values normalised.
_ALIASES = {"penancangan": "panancangan"}
_PREFIXES = ("kecamatan", "kelurahan", "kec.", "kel.", "kec", "kel", "desa")


def normalize(name: str) -> str:
    """Lowercase, no accents, spaces or punctuation, known variants folded: 'Kalang Anyar' ->
    'kalanganyar'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix + " ") or (prefix.endswith(".") and text.startswith(prefix)):
            text = text[len(prefix) :]
            break
    text = re.sub(r"[^a-z0-9]", "", text)
    return _ALIASES.get(text, text)


KODE_KELURAHAN = re.compile(r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$")
KODE_KECAMATAN = re.compile(r"^\d{2}\.\d{2}\.\d{2}$")
