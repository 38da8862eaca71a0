"""JT/T 808 vehicle terminals (TCP) as hub devices: :class:`Jt808Gateway` over :class:`Jt808Server`."""

from .gateway import Jt808Gateway
from .server import Connection, Jt808Server

__all__ = ["Connection", "Jt808Gateway", "Jt808Server"]
