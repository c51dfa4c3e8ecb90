"""An offloaded request is made by QStash, which makes only the methods its ``Upstash-Method`` takes.

QStash's publish API (upstash/docs ``qstash/openapi.yaml``) lists ``GET, POST, PUT, PATCH, DELETE``
for ``Upstash-Method``; a ``HEAD`` or ``OPTIONS`` step with ``offload: true`` would be refused when
the call is handed over, in production only (the local dispatcher makes any method). Catch it here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic
from dsl.source import JsonPath
from dsl.templates import is_template

OFFLOAD_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@rule(
    "offload-method",
    "an `offload: true` http request uses a method QStash cannot make (only GET, POST, PUT, PATCH, DELETE)",
)
def check_offload_method(ctx: CheckContext) -> Iterator[Diagnostic]:
    for step in ctx.steps:
        places: list[tuple[Any, JsonPath, str]] = [
            (step.body.get("http"), (*step.path, "http"), f"step {step.id!r}")
        ]
        comp = step.body.get("compensate")
        if isinstance(comp, Mapping):
            places.append(
                (comp.get("http"), (*step.path, "compensate", "http"), f"compensation of {step.id!r}")
            )
        for http, path, label in places:
            if not isinstance(http, Mapping) or http.get("offload") is not True:
                continue
            method = http.get("method", "GET")
            if not isinstance(method, str) or is_template(method):
                continue  # a template is checked when the call is handed over (http.request)
            if method.upper() not in OFFLOAD_METHODS:
                yield ctx.diag(
                    "offload-method",
                    "error",
                    f"{label} offloads a {method} request, but QStash only makes "
                    f"{', '.join(OFFLOAD_METHODS)} calls: use one of those, or drop `offload: true`",
                    (*path, "method"),
                )
