"""Secrets never reach a log: one redaction function, and a logging filter that applies it to every record.

What is redacted: the password of a URL's user info (``mqtt://user:pass@host`` -> ``mqtt://user:***@host``; user
info without a password may itself be a token, so it goes whole), bearer tokens (``Bearer ...`` and the hub's own
``fh_...`` wherever they appear), and the values of fields whose name ends in password, secret, token, pepper or
api key (``password=...``, ``"token": "..."``, ``'secret': '...'``). A log line loses a little context rather than
keep a secret: when in doubt the pattern takes more, not less.

The filter sits on the handlers (not a logger): a handler sees the records of every logger that propagates to it,
those of libraries included. It redacts the formatted message, the exception text and the stack.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["MASK", "RedactingFilter", "install", "redact", "redact_url"]

MASK: Final = "***"

# scheme://userinfo@ — greedy to the last "@" of the run without whitespace, so a password holding an unencoded
# "@", "/" or ":" is still taken whole (a path with an "@" after it is over-redacted, never under).
# re.ASCII: only ASCII whitespace ends a run, so an exotic space inside a secret (NBSP) does not cut it short.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>\S*)@", re.ASCII)
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer)(?P<gap>\s+)[^\s'\",;]+", re.ASCII)
_HUB_TOKEN = re.compile(r"\bfh_[A-Za-z0-9_\-]+")
# name = value / name: value, the name quoted or not, the value quoted or up to a separator.
_FIELD = re.compile(
    r"""(?aix)
    (?P<key>(?P<q>['"]?)[\w.\-]*?(?:password|passwd|pwd|secret|token|pepper|api[_\-]?key)(?:[_\-]?(?:key|hash))?(?P=q))
    (?P<sep>\s*[=:]\s*)
    (?P<value>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s'"]+)""")


def _userinfo(match: re.Match[str]) -> str:
    info = match["info"]
    user, colon, _ = info.partition(":")
    # Keep a plain user name (it says which login); anything else in the user info is a secret.
    if colon and re.fullmatch(r"[A-Za-z0-9._~%!$&'()*+,;=\-]*", user):
        return f"{match['scheme']}{user}:{MASK}@"
    return f"{match['scheme']}{MASK}@"


def _field(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(_userinfo, text)
    text = _BEARER.sub(lambda m: f"{m['kind']}{m['gap']}{MASK}", text)
    text = _FIELD.sub(_field, text)
    return _HUB_TOKEN.sub("fh_" + MASK, text)


def redact_url(url: str | None) -> str:
    """A URL fit for a log line (``""`` for none)."""
    return redact(url or "")


class RedactingFilter(logging.Filter):
    """Rewrites each record so that whatever formats it sees no secret. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as it always does
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatted here so the handler's formatter uses the redacted text (it formats exc_text only once).
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one :class:`RedactingFilter` on every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    existing = [f for h in target.handlers for f in h.filters if isinstance(f, RedactingFilter)]
    installed = existing[0] if existing else RedactingFilter()
    for handler in target.handlers:
        if installed not in handler.filters:
            handler.addFilter(installed)
    return installed
