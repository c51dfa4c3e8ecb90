"""The HTTP layer: the webhook the dispatchers call, the operations API, and what they share.

Imports point one way: leaves (``problems``, ``paths``, ``bodies``, ``auth``) ← the app core
(``core.HopflowApp``: config, the lazily built runtime, body reading, blocking calls) ← the routes
(``webhook``, ``api``, ``openapi``) ← the composition (``app.create_app``: the route table and the
Starlette app). ``wiring`` builds a runtime from a config. The platform's entry point stays
``engine.asgi:app``, which loads this package on its first request.
"""
