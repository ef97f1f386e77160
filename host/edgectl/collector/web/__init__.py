"""The fleet pages: server-rendered HTML (Jinja2) on the collector, no frontend build.

``create_web_app(store, settings)`` is a sub-application mounted at ``/`` after the API
routes, so the session cookie, CSRF checks and page headers never touch the boards' API
path. Pages: fleet, device, review (label kept samples, export them as an image folder),
models. Charts are uPlot, vendored under ``static/vendor`` (no CDN: factory hosts are
offline). See docs/collector.md.
"""

from __future__ import annotations

from edgectl.collector.web.app import create_web_app

__all__ = ["create_web_app"]
