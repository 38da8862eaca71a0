"""The limits a device payload cannot cross, and the checks that enforce them (SPEC section 2).

Two jobs, both before anything else trusts a payload:

* **Bounded parsing.** :func:`parse` refuses an oversized or too deeply nested
  document *before* the recursive JSON parser runs (a 5,000-level ``[[[...]]]``
  would otherwise end in ``RecursionError``), and turns every parser failure into
  a :class:`PayloadError`.
* **Storage-safe values.** :class:`Inspector` walks a decoded value and refuses
  what PostgreSQL (``text``, ``jsonb``, ``bigint``) cannot store or what no device
  has a reason to send: NUL, lone surrogates, control characters, integers
  beyond int64, non-finite floats, too many keys, over-long strings and arrays.

Policy on text (``bad_text``): NUL (PostgreSQL refuses it in ``text`` and
``jsonb``), lone surrogates (JSON may escape them, UTF-8 cannot encode them) and
the other C0 control characters are refused; tab, newline and carriage return
are allowed. DEL and C1 controls are valid UTF-8 that PostgreSQL stores, so they
pass. Valid surrogate pairs (``\\ud83d\\ude00``) decode to one character and pass.
"""

from __future__ import annotations

import json
import math
import operator
import re
from itertools import accumulate
from typing import Any, Final

import msgspec

from devices.errors import PayloadError

MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_DEPTH: Final = 32  # containers nested in one document, the outermost counting 1
MAX_KEYS: Final = 256  # keys of one object
MAX_TEXT: Final = 4096  # characters of one string value or key
MAX_ARRAY: Final = 1000  # elements of one array (the largest legal one is a batch of 1000 fixes)
INT_MIN: Final = -(2**63)  # bigint, and what every JSON consumer of the hub can hold
INT_MAX: Final = 2**63 - 1

# Everything refused in a string or key: NUL and the other C0 controls but
# tab/newline/CR, and lone surrogates (a Python str holds a pair as one character).
_BAD_TEXT: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
# What PostgreSQL text cannot hold at all; storable_text replaces only these.
_UNSTORABLE: Final = re.compile(r"[\x00\ud800-\udfff]")

_decoder = msgspec.json.Decoder()
_OPEN_CLOSE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


def storable_text(s: str, limit: int) -> str:
    """``s`` cut to ``limit`` characters, NUL and lone surrogates replaced by U+FFFD.

    For text the hub stores about a bad message (a reject's detail, its topic):
    whatever the device sent, the row can be written.
    """
    return _UNSTORABLE.sub("\ufffd", s[: max(limit, 0)])


def show(value: Any, limit: int = 60) -> str:
    """A short, storable rendering of a foreign value for an error detail."""
    if type(value) is int and value.bit_length() > 64:  # repr() of a 5,000-digit int raises
        return f"<integer of {value.bit_length()} bits>"
    return storable_text(repr(value), limit)


def check_text(s: str, what: str = "string") -> None:
    """Refuse a string PostgreSQL cannot store or that carries control characters."""
    bad = _BAD_TEXT.search(s)
    if bad is not None:
        raise PayloadError("bad_text", f"{what} holds U+{ord(bad.group()):04X} at {bad.start()}")


def too_deep() -> PayloadError:
    """The refusal of a document nested deeper than MAX_DEPTH, whichever check finds it."""
    return PayloadError("too_deep", f"containers nested deeper than {MAX_DEPTH}")


# ------------------------------------------------------------------ parsing
def nesting_exceeds(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when ``raw`` may nest containers deeper than ``limit``.

    Runs before the (recursive) parser, in a few milliseconds at most even for
    a 256 KiB payload built to be slow. Exact for valid JSON; for broken JSON it
    may over-estimate, never under-estimate the depth the parser would reach
    before it stops at the first error.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # not enough brackets to be deeper, strings or not
    # Drop escaped backslashes, then escaped quotes: the quotes left delimit strings.
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    shape = b"".join(text.split(b'"')[::2]).translate(_OPEN_CLOSE, _NOT_BRACKET)
    # A pass removes every innermost pair "[]": the depth drops by one (by at
    # most one if unbalanced). Passes pay while they remove much (many small
    # containers); then the depth of what is left is summed over its runs.
    passes = 0
    while shape.count(b"[]") * 16 > len(shape):
        shape = shape.replace(b"[]", b"")
        passes += 1
        if passes > limit:
            return True
    return passes + _max_depth(shape) > limit


_RUNS: Final = re.compile(rb"\[+|\]+")


def _max_depth(shape: bytes) -> int:
    """The deepest running depth of a string of brackets (over the whole string: never less
    than the parser reaches before an unmatched ``]`` stops it)."""
    lengths = list(map(len, _RUNS.findall(shape)))
    if shape[:1] == b"]":
        lengths.insert(0, 0)  # runs alternate: openers at even indices
    lengths[1::2] = map(operator.neg, lengths[1::2])
    return max(accumulate(lengths), default=0)


def _huge_int(digits: str) -> int:
    # The stdlib refuses ints of more than 4,300 digits with a ValueError; any
    # int beyond int64 is as good as the real one for refusing it later.
    return int(digits) if len(digits) <= 20 else INT_MAX + 1


def parse(raw: bytes) -> Any:
    """Parse untrusted ``raw`` JSON within the size and depth limits.

    The result may still hold NaN, infinities, huge integers and lone
    surrogates (each refused with its own reason by :class:`Inspector` or the
    field checks, so a batch loses only the element that holds one).
    """
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError("oversized", f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    if nesting_exceeds(raw):
        raise too_deep()
    try:
        return _decoder.decode(raw)
    except RecursionError:  # not expected after the pre-scan; kept as a net
        raise too_deep() from None
    except UnicodeDecodeError as exc:
        raise PayloadError("invalid_json", storable_text(f"not UTF-8: {exc}", 200)) from None
    except msgspec.DecodeError as exc:
        first_error = str(exc)
    # The fast parser refuses NaN/Infinity tokens, numbers beyond its range and
    # lone surrogate escapes; the standard library reads them, which lets the
    # checks name the reason. It must be UTF-8 first (json.loads would also
    # guess UTF-16/32, which the contract does not allow).
    try:
        return json.loads(bytes(raw).decode("utf-8"), parse_int=_huge_int)
    except RecursionError:
        raise too_deep() from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PayloadError("invalid_json", storable_text(first_error, 200)) from None


# --------------------------------------------------------------- inspecting
class Inspector:
    """Walks a decoded JSON value and refuses what cannot be stored.

    ``budget`` (bytes, optional) bounds the text of the whole value: past it the
    walk stops with ``over_budget`` as the reason (``attrs_too_large`` for
    attributes) before it would name a long string; the caller still measures
    the exact encoded size. ``strict_text=False`` (hub-authored commands) keeps
    the structural limits only.
    """

    __slots__ = ("budget", "over_budget", "strict_text", "used")

    def __init__(self, budget: int | None = None, over_budget: str = "attrs_too_large",
                 strict_text: bool = True) -> None:
        self.budget = budget
        self.over_budget = over_budget
        self.strict_text = strict_text
        self.used = 0

    def value(self, value: Any, depth: int = 0) -> None:
        """Check ``value``, found inside ``depth`` enclosing containers."""
        kind = type(value)
        if kind is str:
            self._text(value, "string")
        elif kind is int:
            if not INT_MIN <= value <= INT_MAX:
                raise PayloadError("number_too_large", f"an integer of {value.bit_length()} bits is beyond int64")
        elif kind is float:
            if not math.isfinite(value):
                raise PayloadError("non_finite", f"number is {value}")
        elif kind is dict:
            self._object(value, depth + 1)
        elif kind is list:
            self._array(value, depth + 1)
        elif value is not None and kind is not bool:
            raise PayloadError("wrong_type", f"{kind.__name__} is not a JSON value")

    def items(self, obj: dict[Any, Any], depth: int) -> None:
        """Check the keys and values of an object that sits at ``depth``."""
        for key, item in obj.items():
            if type(key) is not str:
                raise PayloadError("wrong_type", f"key {show(key)} is not a string")
            self._text(key, "key")
            self.value(item, depth)

    def _object(self, obj: dict[Any, Any], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise too_deep()
        if len(obj) > MAX_KEYS:
            raise PayloadError("too_many_keys", f"an object has {len(obj)} keys > {MAX_KEYS}")
        self.items(obj, depth)

    def _array(self, array: list[Any], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise too_deep()
        if len(array) > MAX_ARRAY:
            raise PayloadError("too_long", f"an array has {len(array)} elements > {MAX_ARRAY}")
        for item in array:
            self.value(item, depth)

    def _text(self, s: str, what: str) -> None:
        if self.budget is not None:
            self.used += len(s)  # characters: never more than the UTF-8 bytes
            if self.used > self.budget:
                raise PayloadError(self.over_budget, f"more than {self.budget} bytes")
        if self.strict_text:
            if len(s) > MAX_TEXT:
                raise PayloadError("too_long", f"a {what} of {len(s)} characters > {MAX_TEXT}")
            check_text(s, what)
