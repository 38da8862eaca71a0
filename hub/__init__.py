"""The fieldhub service: ingest, live picture, storage, API."""
