"""The one secret rule of the project: what counts as a credential, and how it is removed.

Two entry points. ``strip_url`` removes credential-bearing query parameters (and ``user:password@``) from a
URL before it is stored or published: the URL stays usable for a reader, the secret is gone, not masked.
``redact`` masks secrets in free text (log lines, error messages, summaries, subprocess output): the given
secret values, secret query values inside URLs, ``Authorization``/``Bearer``/``Client-ID`` values and
Hugging Face token shapes.

Pure: standard library only, imports nothing of the package, so every stage may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import unquote

MASK = "***"

# Exact parameter names that carry credentials (compared lower-cased).
_SECRET_PARAMS = frozenset({
    "client_id", "client-id", "access_token", "token", "key", "api_key", "apikey", "api-key", "sig", "signature",
    "policy", "key-pair-id", "jwt", "x-api-key",
})
# Cloud signing schemes: every parameter of these families is part of a signature.
_SECRET_PREFIXES = ("x-amz-", "x-goog-", "x-ms-")
# "Anything named like a secret". "author" is attribution, not authentication.
_SECRET_WORDS = re.compile(r"token|secret|passw|credential|auth|signature", re.IGNORECASE)
_NOT_SECRET = frozenset({"author", "authors", "author_name", "author_url"})

# name=value inside free text (URLs in messages, query strings, "api_key=x" in a log line).
_TEXT_PARAM = re.compile(r"(?<![\w.\-])([A-Za-z][\w.\-]*)=([^&\s'\"#,;)\]}>]+)")
# "api_key": "x" / 'token': 'x' / password: x  (JSON, Python reprs, YAML-ish).
_TEXT_FIELD = re.compile(r"""(?i)(['"]?)([\w\-]*(?:token|secret|passw|api_?key|credential)[\w\-]*)\1(\s*:\s*['"]?)"""
                         r"""([^\s'",}\]]+)""")
# Header-style secrets: "Authorization: Bearer x", "'Authorization': 'token x'", "Basic x".
_AUTH_HEADER = re.compile(
    r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic|token|client-id|digest)\s+)?)([^\s'\",&;}]+)"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer\s+|client-id\s+)([^\s'\",&;}]+)")
# Hugging Face tokens have a recognisable shape (short ones too; a digit or capital tells them from
# names like hf_transfer); mask them even when nobody passed them in.
_HF_TOKEN = re.compile(r"\bhf_(?=[a-z]*[A-Z0-9])[A-Za-z0-9]{6,}\b")
# user:password@ in a URL (in free text, and at the start of a URL's authority).
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://)[^/\s@:]+:[^/\s@]+@")
_URL_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.\-]*://)[^/?#]*@")
_QUERY_SEP = re.compile(r"[&;]")
# Environment variable names whose values are secrets ("auth" alone would catch XAUTHORITY).
_SECRET_ENV_NAME = re.compile(r"(?i)token|secret|passw|credential|api_?key|access_key|private_key")

_MIN_SECRET_LEN = 4


@lru_cache(maxsize=4096)  # a pure memo: the same few parameter names come back in every row
def is_secret_param(name: str) -> bool:
    """True when a query parameter or field called ``name`` carries a credential."""
    low = unquote(name).strip().lower()
    if low in _NOT_SECRET:
        return False
    if low in _SECRET_PARAMS or low.startswith(_SECRET_PREFIXES):
        return True
    return bool(_SECRET_WORDS.search(low))


def strip_url(url: str) -> str:
    """``url`` without credential-bearing query parameters or userinfo; other parameters kept verbatim.

    ``https://h/p.jpg?ixid=a&w=1080&X-Amz-Signature=s&client_id=k`` becomes ``https://h/p.jpg?ixid=a&w=1080``.
    Text that is not a URL with a query is returned unchanged. (Plain string work, no URL parsing: every
    index row read passes through here.)
    """
    if not url or ("?" not in url and "@" not in url):
        return url
    head, hash_, fragment = url.partition("#")
    base, question, query = head.partition("?")
    if "@" in base:
        base = _URL_USERINFO.sub(r"\1", base, count=1)
    pieces = _QUERY_SEP.split(query) if question else []
    kept = [piece for piece in pieces if piece and not is_secret_param(piece.split("=", 1)[0])]
    if len(kept) == len(pieces) and base == head.partition("?")[0]:
        return url
    return base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secrets, secret query/field values, auth header values and HF tokens masked.

    Secrets shorter than 4 characters are ignored (masking them would shred ordinary text).
    """
    out = text
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", out)
    out = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, out)
    out = _AUTH_SCHEME.sub(lambda m: m.group(1) + MASK, out)
    out = _TEXT_PARAM.sub(_mask_param, out)
    out = _TEXT_FIELD.sub(lambda m: m.group(1) + m.group(2) + m.group(1) + m.group(3) + MASK, out)
    return _HF_TOKEN.sub(MASK, out)


def _mask_param(m: re.Match[str]) -> str:
    if is_secret_param(m.group(1)) and m.group(2) != MASK:
        return f"{m.group(1)}={MASK}"
    return m.group(0)


def env_secrets(environ: Mapping[str, str]) -> list[str]:
    """The values of secret-named variables in ``environ`` (``HF_TOKEN``, ``UNSPLASH_ACCESS_KEY``, ...)."""
    return [v for k, v in environ.items() if _SECRET_ENV_NAME.search(k) and len(v) >= _MIN_SECRET_LEN]


def is_secret_env_name(name: str) -> bool:
    """True when an environment variable called ``name`` holds a secret (it is kept from child processes)."""
    return bool(_SECRET_ENV_NAME.search(name))
