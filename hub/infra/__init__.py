"""Infrastructure: the processes and certificates the hub runs on.

Owns the embedded PostgreSQL and Mosquitto used when no URL is configured (:mod:`~hub.infra.embedded`), the
choice of broker and its logins (:mod:`~hub.infra.broker`) and the hub's own certificate authority
(:mod:`~hub.infra.tls`). May import hub.storage, hub.domain and the base modules.
"""
