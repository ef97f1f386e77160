"""The collector's HTTP API: one FastAPI router per resource.

``health`` (liveness), ``heartbeats``, ``decisions``, ``samples``, ``updates`` (what boards
write), ``desired`` (the model a board should run, and the admin's setting of it),
``bundles`` (upload, list, download), ``devices`` (registration, tokens, lists) and
``fleet`` (status rows). ``deps`` says who is calling; ``schemas`` holds the request
bodies (strict, from the bounded types of ``fields``); ``errors`` the 422 answers that
name the field; ``limits`` the body-size guard. ``edgectl.collector.app.create_app`` mounts them.
"""

from __future__ import annotations

API = "/api/v1"
