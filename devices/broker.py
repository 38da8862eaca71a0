"""Where an MQTT broker is and how to reach it: parsed from a URL.

``mqtt://user:pass@host:1883`` is plaintext (loopback only); ``mqtts://user:pass@host:8883?cafile=/path/ca.pem``
is MQTT over TLS, the broker verified against ``cafile`` (the system's trust store when absent). A device that has
a client certificate adds ``certfile=...&keyfile=...``. The password never appears in ``str()`` or ``safe_url()``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from devices.errors import DevicesError

SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise DevicesError("not an MQTT URL (mqtt[s]://[user:pass@]host[:port][?cafile=...])")
        tls = SCHEMES[parts.scheme]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"cafile", "certfile", "keyfile"}
        if unknown:
            raise DevicesError(f"unknown MQTT URL option(s): {', '.join(sorted(unknown))}")
        if not tls and query:
            raise DevicesError("cafile/certfile/keyfile need an mqtts:// URL")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls, cafile=query.get("cafile"), certfile=query.get("certfile"), keyfile=query.get("keyfile"),
        )

    def with_login(self, username: str | None, password: str | None) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, username, password, self.tls, self.cafile, self.certfile,
                             self.keyfile)

    def url(self) -> str:
        """The full URL, password included (for handing to a device; never log it: see ``safe_url``)."""
        return self._url(self.password)

    def safe_url(self) -> str:
        return self._url("***" if self.password else None)

    def _url(self, password: str | None) -> str:
        auth = ""
        if self.username:
            auth = quote(self.username, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
        options = {k: v for k, v in (("cafile", self.cafile), ("certfile", self.certfile),
                                     ("keyfile", self.keyfile)) if v}
        query = f"?{urlencode(options, safe='/')}" if options else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}{query}"

    def __str__(self) -> str:
        return self.safe_url()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of an mqtts address (verifies the broker's certificate and name); None for plaintext."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.cafile)
            if self.certfile:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise DevicesError(f"TLS set-up for {self.host}:{self.port} failed: {exc}") from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
