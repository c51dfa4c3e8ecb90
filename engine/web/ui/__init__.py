"""The dashboard: static files at ``/ui/`` and the JSON routes only it needs.

* :mod:`.assets`     the page, its script and style, the vendored Mermaid (``static/``)
* :mod:`.catalogue`  ``GET /v1/workflows`` and ``GET /v1/workflows/{name}``
* :mod:`.view`       ``GET /v1/executions/{id}/view`` and ``GET /v1/whoami``
* :mod:`.states`     node states from a record and its history (pure)
* :mod:`.timeline`   the history in words (pure)

The page itself is plain HTML, CSS and JavaScript without a build step; it keeps the API key in the
browser tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` (docs/dashboard.md).
"""
