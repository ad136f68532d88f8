"""The node in a browser: the web app ``mu node`` serves beside its control API (specs/network.md §Web app).

``WebApp`` registers the pages' JSON routes under ``/v1/web/`` and mounts
the pages, their static files, uploads and downloads on the control
server; ``mu ui`` prints the one-time login URL.
"""

from node.web._app import WebApp

__all__ = ["WebApp"]
