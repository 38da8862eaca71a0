"""The one-map page: its static files (``static/``: HTML, ES modules, CSS; vendored libraries copied in by
``scripts/setup.sh``) and the map overlays it draws (:mod:`~hub.web.overlays`). May import geo and the hub's
base modules only.
"""
