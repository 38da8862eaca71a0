"""Digest verification against an independent client implementation (aiosipua's), with and without qop, and
every refusal."""

from __future__ import annotations

import itertools

import pytest
from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import AuthChallenge, parse_auth, stringify_auth
from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181.digest import (
    Credentials,
    DigestError,
    NonceTable,
    challenge,
    expected_response,
    parse_authorization,
    verify,
)

DEV = "34020000001320000001"
REALM = "3402000000"
URI = "sip:34020000002000000001@3402000000"


def client_answer(password: str, header: str, *, qop: bool = True, username: str = DEV, nc: int = 1) -> str:
    """What a device sends back: aiosipua's client-side digest, not ours."""
    parsed = parse_auth(header)
    params = dict(parsed.params)
    if not qop:
        params.pop("qop", None)
    creds = build_credentials(
        SipDigestAuth(username, password), AuthChallenge(parsed.scheme, params), "REGISTER", URI, nonce_count=nc
    )
    assert creds is not None
    return stringify_auth(creds)


def counting_tokens() -> NonceTable:
    counter = itertools.count()
    return NonceTable(lifetime_s=300.0, max_size=3, token=lambda: f"n{next(counter)}")


@pytest.mark.parametrize("qop", [True, False])
def test_a_right_password_is_accepted_with_and_without_qop(qop: bool) -> None:
    nonces = NonceTable()
    header = challenge(REALM, nonces.issue(now=10.0))
    creds = parse_authorization(client_answer("s3cret", header, qop=qop))
    assert creds.username == DEV
    assert (creds.qop is not None) is qop
    assert verify(creds, method="REGISTER", password="s3cret", realm=REALM, nonces=nonces, now=11.0) == "ok"


def test_the_rfc_2617_example_response() -> None:
    # RFC 2617 section 3.5 (Mufasa): a published vector, so our MD5 chain is not only checked against one client.
    assert (
        expected_response(
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_wrong_password_wrong_realm_unknown_nonce_and_wrong_method_are_refused() -> None:
    nonces = NonceTable()
    nonce = nonces.issue(now=0.0)
    header = challenge(REALM, nonce)
    wrong = parse_authorization(client_answer("guess", header))
    assert verify(wrong, method="REGISTER", password="s3cret", realm=REALM, nonces=nonces, now=1.0) == "wrong_response"
    right = parse_authorization(client_answer("s3cret", header))
    assert verify(right, method="MESSAGE", password="s3cret", realm=REALM, nonces=nonces, now=1.0) == "wrong_response"
    assert verify(right, method="REGISTER", password="s3cret", realm="x", nonces=nonces, now=1.0) == "wrong_realm"
    nonces.forget(nonce)
    assert verify(right, method="REGISTER", password="s3cret", realm=REALM, nonces=nonces, now=1.0) == "unknown_nonce"


def test_an_old_nonce_is_stale_only_when_the_password_is_right() -> None:
    nonces = NonceTable(lifetime_s=300.0)
    header = challenge(REALM, nonces.issue(now=0.0))
    right = parse_authorization(client_answer("s3cret", header))
    wrong = parse_authorization(client_answer("guess", header))

    def check(creds: Credentials, now: float) -> str:
        return verify(creds, method="REGISTER", password="s3cret", realm=REALM, nonces=nonces, now=now)

    assert check(right, 300.0) == "ok"
    assert check(right, 301.0) == "stale"
    assert check(wrong, 301.0) == "wrong_response"
    assert challenge(REALM, "n", stale=True).endswith("stale=true")
    assert "stale" not in challenge(REALM, "n")


def test_unsupported_algorithms_and_qops_are_refused() -> None:
    nonces = NonceTable()
    nonce = nonces.issue(now=0.0)
    base = f'Digest username="{DEV}", realm="{REALM}", nonce="{nonce}", uri="{URI}", response="00"'
    sha = parse_authorization(base + ", algorithm=SHA-256")
    auth_int = parse_authorization(base + ', qop=auth-int, nc=00000001, cnonce="c"')
    no_nc = parse_authorization(base + ', qop=auth, cnonce="c"')
    for creds in (sha, auth_int, no_nc):
        assert verify(creds, method="REGISTER", password="p", realm=REALM, nonces=nonces, now=0.0) == "unsupported"


def test_the_nonce_table_is_bounded_oldest_first() -> None:
    nonces = counting_tokens()
    issued = [nonces.issue(now=float(i)) for i in range(5)]
    assert len(nonces) == 3
    assert nonces.evicted == 2
    assert [nonces.state(n, now=5.0) for n in issued] == ["unknown", "unknown", "fresh", "fresh", "fresh"]
    assert nonces.state(issued[4], now=305.0) == "stale"


def test_quoted_commas_and_case_are_read() -> None:
    creds = parse_authorization(
        f'digest USERNAME="{DEV}",realm="{REALM}", nonce="a,b", uri="sip:x@y", response="AB", opaque="o"'
    )
    assert (creds.nonce, creds.response, creds.opaque, creds.algorithm) == ("a,b", "AB", "o", "MD5")


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("Basic dXNlcjpwYXNz", "is not Digest"),
        (f'Digest username="{DEV}", realm="r", nonce="n", uri="u"', "missing response"),
        ('Digest username="a", realm', "has no value"),
        ('Digest realm="r", username="abc', "unterminated"),
        ("Digest", "missing username"),
    ],
)
def test_unreadable_authorization_headers_say_why(header: str, why: str) -> None:
    with pytest.raises(DigestError, match=why):
        parse_authorization(header)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_credentials_or_a_digest_error(text: str) -> None:
    nonces = NonceTable()
    try:
        creds = parse_authorization("Digest " + text)
    except DigestError:
        return
    assert verify(creds, method="REGISTER", password="p", realm=REALM, nonces=nonces, now=0.0) != "ok"
