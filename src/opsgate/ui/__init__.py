"""The ``/ui`` dashboard: server-rendered pages over the request log and the admin JSON API."""

from opsgate.ui.routes import COOKIE_NAME, ui_routes

__all__ = ["COOKIE_NAME", "ui_routes"]
