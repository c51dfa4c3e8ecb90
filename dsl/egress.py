"""The syntax of egress rules: what an ``http`` step may reach (``egress: {allow: [...]}`` and the
``HOPFLOW_EGRESS_ALLOW``/``HOPFLOW_EGRESS_DENY`` variables).

A rule is one of

* an IP address or a CIDR network: ``10.0.0.0/8``, ``192.168.1.20``, ``fd00::/8``;
* a host name or a pattern: ``api.internal.example.com``, ``*.internal.example.com`` (any name
  below that domain, not the domain itself), ``*`` (every name);
* a category of addresses that the default policy refuses: ``loopback``, ``private``,
  ``link-local``, ``metadata``.

Pure (no engine import): the validator checks a workflow's rules with it, the engine builds its
policy from the parsed rules (:mod:`engine.egress`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

CATEGORIES = ("loopback", "private", "link-local", "metadata")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"\*|(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RuleError(ValueError):
    """A rule that is neither an address, a network, a host pattern nor a category."""


@dataclass(frozen=True)
class Rule:
    """One parsed rule: exactly one of ``network``, ``host`` (lower case, no trailing dot) or
    ``category`` is set; ``text`` is the rule as written."""

    text: str
    network: Network | None = None
    host: str | None = None
    category: str | None = None

    def matches_host(self, hostname: str) -> bool:
        """Whether the name (not an address) matches this host pattern."""
        if self.host is None:
            return False
        name = hostname.lower().rstrip(".")
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return name.endswith(self.host[1:]) and len(name) > len(self.host) - 1
        return name == self.host


def parse_rule(text: str) -> Rule:
    """``text`` as a :class:`Rule`; :class:`RuleError` (with a readable reason) when it is none."""
    raw = text.strip() if isinstance(text, str) else ""
    if not raw:
        raise RuleError("an empty egress rule")
    lowered = raw.lower()
    if lowered in CATEGORIES:
        return Rule(raw, category=lowered)
    candidate = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        return Rule(raw, network=ipaddress.ip_network(candidate, strict=False))
    except ValueError:
        pass
    if "/" in raw or ":" in raw:
        raise RuleError(f"{raw!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8)")
    if not _HOST.fullmatch(raw) or len(raw) > 253:
        raise RuleError(
            f"{raw!r} is not a host name or pattern (e.g. api.example.com, *.internal.example.com), "
            f"an address or network (10.0.0.0/8), or one of {', '.join(CATEGORIES)}"
        )
    return Rule(raw, host=lowered.rstrip("."))


def parse_rules(text: str) -> tuple[Rule, ...]:
    """A comma- or whitespace-separated list (the environment variables' form)."""
    return tuple(parse_rule(part) for part in re.split(r"[,\s]+", text) if part.strip())
