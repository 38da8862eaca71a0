"""No secret reaches a log: the redaction (hub/logsafe.py) on its own, on log records, and a whole hub's output.

The hub runs as ``fieldhub serve -v`` (its own process, as deployed) with a password in its broker URL, a
bootstrap token, a token pepper and a hotline token in its environment, is used over HTTP with good and bad
tokens, and stopped; nothing it wrote on stdout or stderr holds any of them. A hub that cannot start, with
passwords in both service URLs, says why without them.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hub.cli import cannot_start
from hub.config import Settings
from hub.infra.embedded import free_port
from hub.logsafe import MASK, RedactingFilter, install, redact, redact_url
from tests.conftest import hub_env, wait_for

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------- the function
@pytest.mark.parametrize(("line", "expected"), [
    ("hub up: mqtt mqtt://hub:s3cret@127.0.0.1:1883, database postgresql://fh:pw@db:5432/fieldhub",
     "hub up: mqtt mqtt://hub:***@127.0.0.1:1883, database postgresql://fh:***@db:5432/fieldhub"),
    ("mqtts://dev-1:p@ss/w:rd@broker:8883?cafile=/ca.pem", "mqtts://dev-1:***@broker:8883?cafile=/ca.pem"),
    ("https://fh_abcdef@hub.example/whip/cam", "https://***@hub.example/whip/cam"),
    ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
    ("GET /api/v1/live?token=fh_AbC-12_x&x=1 101", "GET /api/v1/live?token=*** 101"),
    ("given fh_Zm9vYmFy-_baz as the bootstrap", "given fh_*** as the bootstrap"),
    ("host=db password=pa,ss dbname=fieldhub", "host=db password=*** dbname=fieldhub"),
    ("{'password': 'two words', 'name': 'n'}", "{'password': '***', 'name': 'n'}"),
    ('{"token":"ab\\"cd","type":"video_start"}', '{"token":"***","type":"video_start"}'),
    ("FIELDHUB_TOKEN_PEPPER=xyz FIELDHUB_HOTLINE_TOKEN: abc", "FIELDHUB_TOKEN_PEPPER=*** FIELDHUB_HOTLINE_TOKEN: ***"),
    ("video_media_server_secret='s'", "video_media_server_secret='***'"),
])
def test_secrets_are_masked(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize("line", [
    "MQTT connected to mqtt://127.0.0.1:1883 (session present: True)",
    "video_start sent to v1-body (cmd c-17), whip_url https://hub.example:8443/whip/v1-body",
    "tokens: 5 reloaded; 3 units, 12 devices", "a password is required", "",
])
def test_what_holds_no_secret_is_left_alone(line: str) -> None:
    assert redact(line) == line


def test_redact_url() -> None:
    assert redact_url(None) == ""
    assert redact_url("postgresql://fieldhub@127.0.0.1/x") == "postgresql://***@127.0.0.1/x"
    assert redact_url("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"


# Anything a password can hold in a URL written by hand (no whitespace), "@", ":", "/", "%" and quotes included.
SECRET = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="\x7f"),
                 min_size=8, max_size=40)
USER = st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True)
SCHEME = st.sampled_from(["mqtt", "mqtts", "postgresql", "postgres", "https", "http", "redis", "amqp"])
HOST = st.sampled_from(["127.0.0.1", "broker.example", "[::1]", "db"])
TAIL = st.sampled_from(["", ":1883", ":5432/fieldhub", "/whip/cam-1?x=1", ":8883?cafile=/etc/ca.pem"])
AROUND = st.sampled_from(["{}", "connecting to {} now", "url={}, retry in 1 s", "('{}',)", '{{"url": "{}"}}'])


@given(scheme=SCHEME, user=USER, secret=SECRET, host=HOST, tail=TAIL, around=AROUND, encoded=st.booleans())
def test_a_password_in_a_url_never_survives(scheme: str, user: str, secret: str, host: str, tail: str,
                                             around: str, encoded: bool) -> None:
    password = quote(secret, safe="") if encoded else secret
    line = around.format(f"{scheme}://{user}:{password}@{host}{tail}")
    assume(password not in around.format(f"{scheme}://{user}:@{host}{tail}"))
    clean = redact(line)
    assert password not in clean
    assert f"{scheme}://" in clean and f"@{host}{tail}" in clean  # the place stays readable


@given(secret=st.from_regex(r"[A-Za-z0-9_\-]{8,60}", fullmatch=True),
       form=st.sampled_from(["Authorization: Bearer {}", "bearer {} refused", "?token=fh_{}&a=1", "fh_{}",
                             "token={}", "'token': '{}'", '"api_key":"{}"', "client_secret = {} ;", "PASSWORD: {}"]))
def test_a_token_never_survives(secret: str, form: str) -> None:
    assume(secret not in form)
    assert secret not in redact(form.format(secret))


@given(secret=SECRET.filter(lambda s: "'" not in s and "\\" not in s))
def test_a_quoted_field_never_survives(secret: str) -> None:
    line = f"settings: {{'mqtt_url': None, 'hotline_token': '{secret}', 'port': 8000}}"
    assume(secret not in line.replace(secret, ""))
    assert secret not in redact(line)


# ------------------------------------------------------------------------------------------- the filter
def _logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    install(logger)
    return logger, out


def test_the_filter_redacts_arguments_exceptions_and_stacks() -> None:
    logger, out = _logger("test_log_secrets.filter")
    password, token = secrets.token_urlsafe(12), "fh_" + secrets.token_urlsafe(16)
    logger.info("hub up: mqtt %s, bootstrap %s", f"mqtt://hub:{password}@127.0.0.1:1883", token)
    try:
        raise ConnectionError(f"cannot reach postgresql://fieldhub:{password}@db/fieldhub")
    except ConnectionError:
        logger.exception("storage failed with Authorization: Bearer %s", token)
    logger.warning("where: %s", f"mqtt://hub:{password}@x", stack_info=True)
    logger.info("plain %d%%", 5)  # untouched records keep their arguments
    text = out.getvalue()
    assert password not in text and token not in text, text
    assert "mqtt://hub:***@127.0.0.1:1883" in text and "fh_***" in text
    assert "ConnectionError: cannot reach postgresql://fieldhub:***@db/fieldhub" in text  # the traceback is kept
    assert "Stack (most recent call last)" in text and "plain 5%" in text


def test_install_puts_one_filter_on_each_handler() -> None:
    logger, _ = _logger("test_log_secrets.install")
    logger.addHandler(logging.StreamHandler(io.StringIO()))
    install(logger)
    install(logger)
    assert [sum(isinstance(f, RedactingFilter) for f in h.filters) for h in logger.handlers] == [1, 1]


def test_a_bad_format_string_is_left_to_the_handler() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert RedactingFilter().filter(record) is True
    assert record.args == ("many",)


# ------------------------------------------------------------------------------------------- a whole hub
def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _secret_env(settings: Settings) -> tuple[dict[str, str], list[str]]:
    """The hub's environment with secrets in every place one can be, and the secrets."""
    env = hub_env(settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    bootstrap = "fh_" + secrets.token_urlsafe(24)
    pepper, hotline = secrets.token_hex(16), secrets.token_urlsafe(18)
    mqtt = urlsplit(env["FIELDHUB_MQTT_URL"])
    if mqtt.password:  # the broker checks logins: the hub's own password is the secret
        broker_password = mqtt.password
    else:  # an anonymous test broker accepts any login: a password of our own
        broker_password = "Pw-" + secrets.token_urlsafe(12)
        env["FIELDHUB_MQTT_URL"] = _with_password(env["FIELDHUB_MQTT_URL"], "fieldhub-hub", broker_password)
    env.update(FIELDHUB_BOOTSTRAP_TOKEN=bootstrap, FIELDHUB_TOKEN_PEPPER=pepper, FIELDHUB_HOTLINE_TOKEN=hotline,
               FIELDHUB_HOTLINE_URL=f"http://hotline:{hotline}@127.0.0.1:{free_port()}/handover")
    return env, [broker_password, bootstrap, pepper, hotline]


def _leaks(text: str, secrets_: list[str]) -> list[str]:
    return [s for s in secrets_ if s in text or quote(s, safe="") in text]


async def test_a_running_hub_logs_no_secret(settings: Settings, tmp_path: Path) -> None:
    env, hidden = _secret_env(settings)
    bootstrap = hidden[1]
    port = free_port()
    out_path, err_path = tmp_path / "hub.out", tmp_path / "hub.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fieldhub", "-v", "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, cwd=ROOT, stdout=out, stderr=err,
                                start_new_session=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http:
            async def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the hub exited ({proc.returncode}):\n{err_path.read_text()}")
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(up, timeout=60, interval=0.2)
            good = {"Authorization": f"Bearer {bootstrap}"}
            assert (await http.get("/api/v1/units", headers=good)).status_code == 200
            wrong = "fh_" + secrets.token_urlsafe(24)  # a guess: refused, and not logged either
            hidden.append(wrong)
            for _ in range(3):
                assert (await http.get("/api/v1/units", headers={"Authorization": f"Bearer {wrong}"})).status_code \
                    == 401
            await http.get(f"/api/v1/live?token={bootstrap}")  # not a WebSocket upgrade: refused, whatever it says
            await http.put("/api/v1/units/u1", headers=good, content=b"{not json")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    assert not _leaks(stdout + stderr, hidden), (_leaks(stdout + stderr, hidden), stderr)
    assert "hub up: mqtt mqtt://" in stderr, stderr  # the line naming the broker URL was written ...
    assert f":{MASK}@127.0.0.1" in stderr, stderr  # ... with its password masked


def test_the_start_fault_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    password = secrets.token_urlsafe(12)
    assert cannot_start(f"mqtt: broker mqtts://hub:{password}@10.0.0.1:8883 refused the login") == 1
    err = capsys.readouterr().err
    assert err == "fieldhub: cannot start: mqtt: broker mqtts://hub:***@10.0.0.1:8883 refused the login\n"


def test_a_hub_that_cannot_start_names_no_secret(settings: Settings) -> None:
    # A guard: today's start faults do not quote the URLs; should one ever do, the line is still redacted.
    password, db_password = "Pw-" + secrets.token_urlsafe(12), "Db-" + secrets.token_urlsafe(12)
    env = hub_env(settings)
    env["FIELDHUB_MQTT_URL"] = f"mqtt://fieldhub-hub:{password}@127.0.0.1:{free_port()}"  # nobody listens
    env["FIELDHUB_DATABASE_URL"] = _with_password(settings.database_url or "", "fieldhub", db_password)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fieldhub", "-v", "serve", "--port", str(free_port())], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "fieldhub: cannot start: " in proc.stderr, output
    assert time.monotonic() - started < 30
    assert password not in output and db_password not in output, output
