"""Which registered devices are online: registrations with their expiry, and the last time each was heard.

Pure: time is passed in. A device comes online at its first REGISTER or message, goes offline after
``max_missed`` keepalive intervals of silence (GB/T 28181 section 9.6: 60 s, 3 missed) or when its
registration expires or is withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sip import Peer

__all__ = ["Presence", "Registration"]


@dataclass(slots=True)
class Registration:
    """A device's binding: where it is reached, until when, and when it was last heard."""

    device_id: str
    peer: Peer
    contact: str
    expires_at: float
    last_seen: float
    online: bool = False
    call_id: str = ""  # of the REGISTERs: a device keeps it across refreshes, a restarted one comes with a new one


class Presence:
    """The registrations table; the only writer of it is the registrar that owns this object."""

    def __init__(self, *, keepalive_interval_s: float = 60.0, max_missed: int = 3) -> None:
        self.keepalive_interval_s = keepalive_interval_s
        self.max_missed = max_missed
        self._bindings: dict[str, Registration] = {}

    def get(self, device_id: str) -> Registration | None:
        return self._bindings.get(device_id)

    def registered(self) -> list[Registration]:
        return list(self._bindings.values())

    def register(self, device_id: str, peer: Peer, contact: str, expires_s: float, now: float,
                 call_id: str = "") -> bool:
        """Bind or refresh; True when the device thereby came online."""
        binding = self._bindings.get(device_id)
        if binding is None:
            binding = self._bindings[device_id] = Registration(device_id, peer, contact, now + expires_s, now)
        binding.peer, binding.contact, binding.call_id = peer, contact, call_id
        binding.expires_at, binding.last_seen = now + expires_s, now
        return self._mark_online(binding)

    def restarted(self, device_id: str, call_id: str) -> bool:
        """A REGISTER of a new registration session (another Call-ID) from a device that is online: it restarted
        without unregistering, and what it had agreed to (calls, subscriptions) is gone with its old session."""
        binding = self._bindings.get(device_id)
        return binding is not None and binding.online and bool(binding.call_id) and binding.call_id != call_id

    def unregister(self, device_id: str) -> bool:
        """Remove the binding; True when the device was online (it is now offline)."""
        binding = self._bindings.pop(device_id, None)
        return binding is not None and binding.online

    def heard(self, device_id: str, peer: Peer, now: float) -> bool | None:
        """A message from a device: None if not registered, else True when it thereby came (back) online."""
        binding = self._bindings.get(device_id)
        if binding is None or now >= binding.expires_at:
            return None
        binding.last_seen = now
        binding.peer = peer
        return self._mark_online(binding)

    def sweep(self, now: float) -> list[tuple[str, str]]:
        """Devices that went offline since the last sweep, each with why; expired bindings are removed."""
        gone: list[tuple[str, str]] = []
        silence = self.keepalive_interval_s * self.max_missed
        for device_id, binding in list(self._bindings.items()):
            if now >= binding.expires_at:
                del self._bindings[device_id]
                if binding.online:
                    gone.append((device_id, "registration expired"))
            elif binding.online and now - binding.last_seen > silence:
                binding.online = False
                gone.append((device_id, f"{self.max_missed} keepalives missed"))
        return gone

    @staticmethod
    def _mark_online(binding: Registration) -> bool:
        came_online = not binding.online
        binding.online = True
        return came_online
