"""The host collector behind ``edgectl serve``: boards sync decisions, samples and
heartbeats to it, and pull the model bundle they should run.

``store`` is pure SQLite storage, ``auth`` the tokens, ``app`` the FastAPI app
(``create_app(store, settings)``), ``server`` runs it on uvicorn, ``client`` is the admin
HTTP client the ``edgectl fleet`` commands use, ``status`` turns heartbeats into fleet rows.
"""
