"""Multi-part Catalog responses joined into one catalog per (DeviceID, SN).

A device answers one Catalog query with several ``<Response>`` pages, each saying the total (``SumNum``). The
assembler keeps the pages of each open answer until ``SumNum`` distinct items are in, within caps a hostile
device cannot push past (items per catalog, open answers at once), and forgets an answer that has not
completed within ``ttl_ms``. Pure: the time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gb28181.manscdp import CatalogItem, CatalogResponse
from gb28181.manscdp_fields import ManscdpError

__all__ = ["Catalog", "CatalogAssembler"]

DEFAULT_MAX_ITEMS: Final = 10_000
DEFAULT_MAX_OPEN: Final = 64
DEFAULT_TTL_MS: Final = 30_000


@dataclass(frozen=True, slots=True)
class Catalog:
    """A complete catalog, items in the order they first arrived."""

    device_id: str
    sn: int
    items: tuple[CatalogItem, ...]


@dataclass(slots=True)
class _Open:
    sum_num: int
    started_ms: int
    items: dict[str, CatalogItem] = field(default_factory=dict)


class CatalogAssembler:
    def __init__(self, *, max_items: int = DEFAULT_MAX_ITEMS, max_open: int = DEFAULT_MAX_OPEN,
                 ttl_ms: int = DEFAULT_TTL_MS) -> None:
        self.max_items = max_items
        self.max_open = max_open
        self.ttl_ms = ttl_ms
        self._open: dict[tuple[str, int], _Open] = {}
        self.expired = 0  # answers forgotten incomplete
        self.refused_pages = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def add(self, page: CatalogResponse, now_ms: int) -> Catalog | None:
        """Take one page; the catalog once it is complete, else None. A refused page raises ManscdpError.

        A page that contradicts its answer (another SumNum, more items than announced) ends the answer: the
        pages already in cannot be trusted either.
        """
        self.expire(now_ms)
        key = (page.device_id, page.sn)
        current = self._open.get(key)
        if current is None:
            if page.sum_num > self.max_items:
                self.refused_pages += 1
                raise ManscdpError("too_many_items", f"a catalog of {page.sum_num} items, more than {self.max_items}")
            if len(self._open) >= self.max_open:
                self.refused_pages += 1
                raise ManscdpError("too_many_assemblies", f"{len(self._open)} catalogs are being assembled")
            current = _Open(page.sum_num, now_ms)
            self._open[key] = current
        elif current.sum_num != page.sum_num:
            del self._open[key]
            self.refused_pages += 1
            raise ManscdpError("bad_value", f"SumNum {page.sum_num} after {current.sum_num} in one catalog")
        for item in page.items:
            current.items.setdefault(item.device_id, item)  # a page sent twice adds nothing
        if len(current.items) > current.sum_num:
            del self._open[key]
            self.refused_pages += 1
            raise ManscdpError("bad_value", f"{len(current.items)} distinct items in a catalog of {current.sum_num}")
        if len(current.items) < current.sum_num:
            return None
        del self._open[key]
        return Catalog(page.device_id, page.sn, tuple(current.items.values()))

    def expire(self, now_ms: int) -> list[tuple[str, int]]:
        """Forget the answers started ``ttl_ms`` or more before ``now_ms``; their (DeviceID, SN) keys."""
        stale = [key for key, answer in self._open.items() if now_ms - answer.started_ms >= self.ttl_ms]
        for key in stale:
            del self._open[key]
        self.expired += len(stale)
        return stale
