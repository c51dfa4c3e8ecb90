"""Tools for development and tests, never part of a running deployment.

No runtime module imports them (tests/test_layering.py): only the CLI command that starts one
(``hopflow qstash-dev``, engine/commands/serve.py), lazily, and the tests and benches.
"""
