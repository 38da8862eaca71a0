"""The fieldhub service.

:mod:`hub.server` composes the parts and connects their signals; :mod:`hub.cli` adds ``serve``, ``device`` and
``token`` to the ``fieldhub`` command. Capabilities: ``ingest`` (device messages -> live picture, database,
feed), ``incidents`` (dispatch, acknowledgment, milestones, alerts), ``drones`` (MAVLink fleet), ``video`` (the
video desk); shared parts: ``access``, ``infra``, ``storage``, ``web``, ``api``; ``domain`` holds the pure rules.
The import layers are checked by ``lint-imports`` (pyproject.toml); docs/architecture.md draws them.
"""
