"""Access: who may talk to the hub, and as what.

Owns the API's bearer tokens (:mod:`~hub.access.auth`, :mod:`~hub.access.tokens`), device logins and their
provisioning (:mod:`~hub.access.provisioning`, ``fieldhub device``: :mod:`~hub.access.device_cli`), Mosquitto's
dynamic-security control (:mod:`~hub.access.dynsec`) and the follow-up of devices added elsewhere
(:mod:`~hub.access.device_sync`). May import hub.infra, hub.storage, hub.domain and the base modules.
"""
