"""Redis state, the engine's bottom layer: the key layout, the Lua scripts, the listing index,
namespaces, the client built from a URL and the stored form of reduced vars.

It imports nothing above it (no runtime, interpreter, dispatch, web or commands: tests/test_layering.py),
so every other part of the engine can use it. Importing the package loads nothing: the webhook's cold
start pulls in only the modules it uses.
"""
