"""The registrar's settings, and the GB/T 28181 form of the time-sync Date it sends devices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["RegistrarConfig", "format_date"]


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    server_id: str
    host: str = "0.0.0.0"
    udp_port: int = 5060
    tcp_port: int = 5060
    realm: str = ""  # default: the first 10 digits of server_id (the SIP domain, GB/T 28181 appendix D)
    announce_host: str = ""  # the address devices reach us at, for Via/From in our requests; default: host
    keepalive_interval_s: float = 60.0
    max_missed: int = 3
    default_expires_s: int = 3600
    max_expires_s: int = 86400
    nonce_lifetime_s: float = 300.0
    request_timeout_s: float = 5.0
    check_interval_s: float = 1.0
    max_in_flight: int = 1024

    @property
    def domain(self) -> str:
        return self.realm or self.server_id[:10]


def format_date(moment: datetime) -> str:
    """The 200's Date in GB/T 28181 form (``2024-01-02T03:04:05.123``), from which devices set their clocks."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
