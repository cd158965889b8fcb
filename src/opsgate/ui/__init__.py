"""The ``/ui`` dashboard: server-rendered pages over the request log and the admin JSON API."""

from opsgate.auth.ui_sessions import COOKIE_NAME
from opsgate.ui.routes import ui_routes

__all__ = ["COOKIE_NAME", "ui_routes"]
