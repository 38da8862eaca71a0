"""What a client may put in a string: text PostgreSQL can store, without control characters.

PostgreSQL refuses NUL in text and jsonb, and a lone surrogate (which JSON's ``\\udXXX`` escapes can
produce) cannot be encoded at all; neither may reach a service, a log line or the database. One rule for
every string a client sends (body values and keys at any depth, path and query values, their names):
no C0 or C1 control character other than tab, line feed and carriage return, no DEL, no lone surrogate.
Single-line fields (names, categories, reasons) refuse tab and line breaks too (:data:`Line`).

Request bodies get the rule by deriving from :class:`ApiModel`; path and query values by the app-wide
dependency :func:`refuse_unstorable_params`. Both answer 422 through the usual validation error.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, model_validator
from starlette.requests import HTTPConnection

__all__ = ["ApiModel", "Line", "refuse_unstorable_params", "unstorable"]

_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"[\t\n\r]")
_NAMES = {"\x00": "a NUL character", "\t": "a tab", "\n": "a line break", "\r": "a line break"}


def _describe(char: str) -> str:
    if char in _NAMES:
        return _NAMES[char]
    kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"{kind} (U+{ord(char):04X})"


def unstorable(value: str) -> str | None:
    """Why ``value`` may not be stored (None: it may)."""
    found = _UNSTORABLE.search(value)
    return None if found is None else f"contains {_describe(found.group())}"


def _single_line(value: str) -> str:
    found = _LINE_BREAKS.search(value)
    if found is not None:
        raise ValueError(f"must be one line; contains {_describe(found.group())}")
    return value


Line = Annotated[str, AfterValidator(_single_line)]


def _where(loc: tuple[str | int, ...]) -> str:
    # ascii(): a key that is itself hostile is shown escaped, never echoed raw.
    return ".".join(ascii(p)[1:-1] if isinstance(p, str) else str(p) for p in loc) or "body"


def _walk(value: Any, loc: tuple[str | int, ...]) -> None:
    if isinstance(value, str):
        why = unstorable(value)
        if why is not None:
            raise ValueError(f"{_where(loc)}: {why}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (why := unstorable(key)) is not None:
                raise ValueError(f"{_where((*loc, key))}: the key {why}")
            _walk(item, (*loc, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, (*loc, i))


class ApiModel(BaseModel):
    """Base of every request body: no string in it, at any depth, keys included, may be unstorable."""

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any) -> Any:
        _walk(data, ())
        return data


def refuse_unstorable_params(connection: HTTPConnection) -> None:
    """App-wide dependency: path and query values (and query names) must be storable text."""
    errors = []
    for where, items in (("path", connection.path_params.items()),
                         ("query", connection.query_params.multi_items())):
        for name, value in items:
            why = unstorable(name) or (unstorable(value) if isinstance(value, str) else None)
            if why is not None:
                errors.append({"type": "value_error", "loc": (where, ascii(name)[1:-1]), "msg": why, "input": None})
    if errors:
        raise RequestValidationError(errors)
