"""Redaction covers every form a secret takes on the wire and in logs, and pieces of it."""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote, quote_plus

import pytest

from voicerouter.config.secrets import MASK, redact, redact_value, remember_secret, remember_url_credentials

KEY = "cnry-hardening-key/with+odd=chars 42"


@pytest.fixture(autouse=True)
def known_key():
    remember_secret(KEY)


def encodings(secret: str) -> list[str]:
    raw = secret.encode()
    forms = [secret, quote(secret, safe=""), quote_plus(secret), quote(secret, safe="").lower(), raw.hex(), raw.hex().upper(), json.dumps(secret)[1:-1]]
    for prefix in (b"", b"k", b"k="):  # every byte alignment of base64
        encoded = base64.b64encode(prefix + raw).decode()
        forms += [encoded, encoded.rstrip("="), base64.urlsafe_b64encode(prefix + raw).decode().rstrip("=")]
    return forms


@pytest.mark.parametrize("form", encodings(KEY))
def test_every_encoding_is_masked(form):
    text = redact(f"upstream said: {form} (echo)")
    assert MASK in text and text.startswith("upstream said: ") and text.endswith(" (echo)")
    for piece in encodings(KEY):
        assert piece not in text


def test_a_cut_off_prefix_is_masked_and_short_words_are_not():
    cut = KEY[:12]
    assert redact(f"key={cut}...") == f"key={MASK}..."
    assert redact(f"key={base64.b64encode(KEY.encode()).decode()[:10]}") == f"key={MASK}"
    assert redact("cnry-ha is fine") == "cnry-ha is fine"  # shorter than the prefix rule


def test_basic_auth_pairs_from_urls():
    remember_url_credentials("https://alice:pa%24%24word-cnry@api.example/v1")
    basic = base64.b64encode(b"alice:pa$$word-cnry").decode()
    assert redact(f"Authorization: Basic {basic}") == f"Authorization: Basic {MASK}"
    assert "pa$$word-cnry" not in redact("password pa$$word-cnry rejected")
    assert "pa%24%24word-cnry" not in redact("url https://alice:pa%24%24word-cnry@api.example")


def test_redact_value_walks_json_and_hex_of_long_bodies():
    body = "x" * 190 + KEY + "y" * 50
    data = redact_value({"error": {"message": body, KEY: [binascii.hexlify(KEY.encode()).decode()]}})
    assert KEY not in json.dumps(data) and KEY.encode().hex() not in json.dumps(data)


def test_log_records_of_any_library_are_redacted(caplog):
    import logging

    from voicerouter.config.secrets import install_log_redaction

    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info("GET %s %r", f"https://api.example/?token={KEY}", {"key": KEY})
    assert KEY not in caplog.text and MASK in caplog.text
