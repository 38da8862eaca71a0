"""Cursor-on-Target (TAK): the hub's units, incidents and SOS out to TAK clients (ATAK, WinTAK, iTAK) through a
TAK server or LAN multicast, and TAK users' positions in as fixes of ``tak-...`` devices.

:mod:`.cot` builds and parses the events (pure); :mod:`.gateway` owns the connection (pytak) and the feed.
"""
