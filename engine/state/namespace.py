"""Namespaces: several hopflow deployments on one Redis database, each with its own keys.

``HOPFLOW_NAMESPACE=shop`` puts ``shop:`` in front of every key hopflow writes — executions
(``shop:hf:{<id>}:…``), graphs, events, the active index and the local dispatcher's queue
(``shop:hf:{q}:…``) — so two deployments sharing a database never see each other's executions or
deliver each other's messages. Unset (or empty), keys are exactly as before namespaces existed, so
existing data stays readable. A namespace never contains braces: the hash tag of every key (the
execution id, ``q``, an event digest) stays the same, so a namespace changes no cluster slot rule.
"""

from __future__ import annotations

import os
import re

NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RULE = "1-64 letters, digits and _.- (starting with a letter or digit)"


def check_namespace(namespace: str | None) -> str:
    """``namespace`` stripped ("" for none); ValueError when it could break the key layout."""
    namespace = (namespace or "").strip()
    if namespace and not NAMESPACE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} is not usable: use {RULE}")
    return namespace


def env_namespace() -> str:
    """``$HOPFLOW_NAMESPACE``, validated ("" when unset)."""
    return check_namespace(os.environ.get("HOPFLOW_NAMESPACE"))


def key_prefix(namespace: str = "") -> str:
    """What comes before ``hf:`` in every key of ``namespace``: "" for none, else ``<namespace>:``."""
    return f"{namespace}:" if namespace else ""


def queue_prefix(namespace: str = "") -> str:
    """The local dispatcher's key prefix in ``namespace`` (its keys share the hash tag ``{q}``)."""
    return f"{key_prefix(namespace)}hf:{{q}}"
