"""redact.py: the one secret rule, used by URLs stored in rows, error details, logs and subprocess output."""

from __future__ import annotations

import io
import logging

import pytest

from sharp_dataset_pipeline.observe.logs import SecretFilter
from sharp_dataset_pipeline.records import Failure, IndexRow
from sharp_dataset_pipeline.redact import env_secrets, is_secret_param, redact, strip_url

V = "Zq9CANARYvalue77"


@pytest.mark.parametrize("name", [
    "client_id", "access_token", "token", "key", "api_key", "sig", "signature", "Signature", "Policy",
    "Key-Pair-Id", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature",
    "X-Goog-Credential", "hf_token", "my_secret", "password", "db_credentials", "auth", "oauth_nonce",
])
def test_credential_params_are_removed_from_urls(name: str) -> None:
    url = f"https://img.example/p/a.jpg?ixid=M3w1&w=1080&{name}={V}&q=80&fm=jpg"
    assert strip_url(url) == "https://img.example/p/a.jpg?ixid=M3w1&w=1080&q=80&fm=jpg"
    assert is_secret_param(name)


@pytest.mark.parametrize("name", ["ixid", "ixlib", "w", "h", "q", "fm", "fit", "crop", "page", "author", "id"])
def test_harmless_params_stay(name: str) -> None:
    url = f"https://images.unsplash.com/photo-1?{name}=rb-4.0.3%2Fx"
    assert strip_url(url) == url
    assert not is_secret_param(name)


def test_userinfo_and_only_secret_params() -> None:
    assert strip_url(f"https://bob:{V}@h.example/a.jpg") == "https://h.example/a.jpg"
    assert strip_url(f"https://h.example/a.jpg?sig={V}#frag") == "https://h.example/a.jpg#frag"
    assert strip_url("not a url at all") == "not a url at all"
    assert strip_url("https://unsplash.com/@ann?utm_source=x") == "https://unsplash.com/@ann?utm_source=x"
    assert strip_url("https://h.example/p#x?token=1") == "https://h.example/p#x?token=1"  # a fragment, not a query
    assert strip_url(f"https://h.example/p?a=1;sig={V};b=2") == "https://h.example/p?a=1&b=2"


@pytest.mark.parametrize("text", [
    f"GET https://s3.example/b/k.jpg?X-Amz-Algorithm=AWS4&X-Amz-Credential={V}&X-Amz-Signature={V}",
    f"call failed: api_key={V} page=2",
    f"Authorization: token {V}",
    f"{{'Authorization': 'Bearer {V}'}}",
    f"header Client-ID {V} sent",
    "with hf_Ab12Cd34 as the token",
    f'{{"api_key": "{V}", "page": 2}}',
    f"https://u:{V}@h.example/x",
])
def test_redact_masks_every_secret_shape(text: str) -> None:
    out = redact(text)
    assert V not in out and "hf_Ab12Cd34" not in out
    assert "***" in out


def test_redact_keeps_ordinary_text() -> None:
    text = "exit code=137, page=2, ixid=M3w1, hf_transfer not installed, author=Ann, 12:30:01"
    assert redact(text) == text
    assert redact(f"key {V} twice {V}", [V, "ab"]) == "key *** twice ***"


def test_rows_and_failures_never_hold_a_credential() -> None:
    row = IndexRow(id="a", source="s", unit="u", source_url=f"https://h/a.jpg?w=5&token={V}",
                   page_url=f"https://h/p?X-Goog-Signature={V}")
    assert row.source_url == "https://h/a.jpg?w=5" and row.page_url == "https://h/p"
    assert IndexRow.from_dict(row.to_dict() | {"source_url": f"https://h/b?sig={V}"}).source_url == "https://h/b"
    failure = Failure("a", "u", "fetch", "http_404", f"HTTP 404 for GET https://h/a?Signature={V}&w=1", False)
    assert V not in failure.detail and "w=1" in failure.detail


def test_env_secrets_are_the_secret_named_values() -> None:
    env = {"HF_TOKEN": V, "UNSPLASH_ACCESS_KEY": "k" * 12, "PATH": "/usr/bin", "XAUTHORITY": "/tmp/x", "AB_TOKEN": "ab"}
    assert sorted(env_secrets(env)) == sorted([V, "k" * 12])


def test_log_filter_masks_messages_args_and_tracebacks() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(SecretFilter(["given-secret-value"]))
    log = logging.getLogger("test_redact_filter")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("fetching %s with %s", f"https://h/a?api_key={V}", "Authorization: token tok9value")
        log.info("token hf_Xy12ab in use, key given-secret-value")
        try:
            raise ValueError(f"boom https://h/a?X-Amz-Signature={V}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    out = buffer.getvalue()
    assert "fetching https://h/a?api_key=***" in out and "boom" in out and "ValueError" in out
    for leak in (V, "tok9value", "hf_Xy12ab", "given-secret-value"):
        assert leak not in out


def test_huggingface_hub_warnings_print_once_and_masked() -> None:
    """huggingface_hub's own stderr handler would print its warnings (signed CDN URLs in them) a
    second time, past the secret filter; the CLI's logging setup routes them through the filter."""
    import subprocess
    import sys

    script = (
        "from sharp_dataset_pipeline.observe.logs import setup_logging\n"
        "setup_logging('INFO', [])\n"
        "from huggingface_hub.utils import logging as hf_logging\n"
        "hf_logging.get_logger('huggingface_hub.file_download').warning(\n"
        f"    'Retrying in 1s [Retry 1/5]: https://cas-bridge.example/x?X-Amz-Signature={V}&X-Amz-Date=1')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert V not in done.stderr + done.stdout
    assert done.stderr.count("Retrying in 1s [Retry 1/5]: https://cas-bridge.example/x") == 1, done.stderr
