"""The egress policy: which addresses an ``http`` step may connect to (the SSRF guard).

By default a step may reach public addresses only. Refused unless allowed: loopback (and the
unspecified address, which reaches this host), link-local (169.254.0.0/16, fe80::/10), private
ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), cloud metadata endpoints (by address
and by name) and every other non-global range (multicast, reserved, documentation). IPv6 forms
that embed an IPv4 address (``::ffff:a.b.c.d``, ``::a.b.c.d``, ``64:ff9b::/96``, ``2002::/16``)
are judged by that address too.

Rules (:mod:`dsl.egress` has their syntax) come from the environment — ``HOPFLOW_EGRESS_ALLOW``,
``HOPFLOW_EGRESS_DENY`` — and from a workflow's ``egress: {allow: [...]}``. A deny rule of the
environment beats every allow; a workflow can only allow, and never a metadata endpoint (only the
environment can). The embedded ``hopflow run`` allows loopback so local examples work.

The check runs where the connection is made: :class:`GuardedBackend` resolves the host, checks
*every* address, then connects to a checked address (the pinned IP: no second lookup a DNS
rebinding could answer differently; TLS still verifies and sends SNI for the host name). Every
redirect hop is a new connection, so it is checked too. Refusals raise :class:`EgressRefused`,
which the http step turns into the catchable error ``http.egress``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dsl.egress import Rule, RuleError, parse_rule, parse_rules
from engine import lazyimport

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean…
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_COMPAT = ipaddress.ip_network("::/96")


class EgressRefused(Exception):
    """A connection the policy refuses; ``reason`` names the host, never a URL's secrets."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


def embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    return None


def category(ip: Address) -> str | None:
    """Why the default policy refuses ``ip`` (``loopback``, ``link-local``, ``private``,
    ``metadata``, ``reserved``), or None for a public address."""
    inner = embedded_v4(ip)
    if inner is not None:
        found = category(inner)
        if found is not None:
            return found
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_loopback or ip.is_unspecified:  # 0.0.0.0 and :: reach this host
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if any(ip.version == n.version and ip in n for n in PRIVATE_NETWORKS):
        return "private"
    if not ip.is_global or ip.is_multicast:
        return "reserved"
    return None


def _addresses(ip: Address) -> tuple[Address, ...]:
    inner = embedded_v4(ip)
    return (ip,) if inner is None else (ip, inner)


def _network_matches(rule: Rule, ip: Address) -> bool:
    net = rule.network
    return net is not None and any(a.version == net.version and a in net for a in _addresses(ip))


def parse_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class EgressPolicy:
    """What ``http`` steps may reach. ``allow``/``deny`` come from the environment,
    ``workflow_allow`` from the workflow being run; ``allow_loopback`` is the embedded run's default."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    workflow_allow: tuple[Rule, ...] = ()
    allow_loopback: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, allow_loopback: bool = False) -> EgressPolicy:
        """The environment's rules (:class:`dsl.egress.RuleError` for a bad one)."""
        env = os.environ if env is None else env
        return cls(
            allow=parse_rules(env.get("HOPFLOW_EGRESS_ALLOW", "") or ""),
            deny=parse_rules(env.get("HOPFLOW_EGRESS_DENY", "") or ""),
            allow_loopback=allow_loopback,
        )

    @classmethod
    def from_texts(
        cls, allow: Iterable[str] = (), deny: Iterable[str] = (), *, allow_loopback: bool = False
    ) -> EgressPolicy:
        return cls(tuple(map(parse_rule, allow)), tuple(map(parse_rule, deny)), (), allow_loopback)

    def for_workflow(self, rules: Iterable[str]) -> EgressPolicy:
        """This policy plus a workflow's own ``egress.allow`` (already validated)."""
        parsed: list[Rule] = []
        for text in rules:
            try:
                rule = parse_rule(text)
            except RuleError:  # the validator refuses these; a stored graph's bad rule allows nothing
                continue
            if rule.category != "metadata":  # only the environment opens metadata endpoints
                parsed.append(rule)
        found = tuple(parsed)
        return self if found == self.workflow_allow else replace(self, workflow_allow=found)

    # ------------------------------------------------------------------------------ decisions

    def check_name(self, host: str) -> None:
        """What can be judged from the name alone (deny patterns, metadata names)."""
        name = host.lower().rstrip(".")
        if parse_address(name) is not None:
            self.check_address(name, parse_address(name))  # type: ignore[arg-type]
            return
        for rule in self.deny:
            if rule.matches_host(name):
                raise EgressRefused(host, f"denied by HOPFLOW_EGRESS_DENY ({rule.text})")
        if name in METADATA_HOSTS and not self._env_allows_metadata(name, None):
            raise EgressRefused(host, "a cloud metadata endpoint (allow it in HOPFLOW_EGRESS_ALLOW)")

    def check_address(self, host: str, ip: Address) -> None:
        """Refuse ``ip`` (what ``host`` resolved to) unless the policy lets it through."""
        name = host.lower().rstrip(".")
        is_name = parse_address(name) is None
        for rule in self.deny:
            if _network_matches(rule, ip) or (rule.category is not None and rule.category == category(ip)):
                raise EgressRefused(host, f"denied by HOPFLOW_EGRESS_DENY ({rule.text})")
        cat = category(ip)
        if cat is None:
            return
        if cat == "metadata":
            if self._env_allows_metadata(name if is_name else None, ip):
                return
            raise EgressRefused(host, "a cloud metadata address (allow it in HOPFLOW_EGRESS_ALLOW)")
        if cat == "loopback" and self.allow_loopback:
            return
        for rule in (*self.allow, *self.workflow_allow):
            if _network_matches(rule, ip) or rule.category == cat or (is_name and rule.matches_host(name)):
                return
        shown = f"{host} is a {cat} address" if not is_name else f"{host} resolves to a {cat} address"
        raise EgressRefused(host, f"{shown}, which http steps may not reach (see docs/language.md#egress)")

    def _env_allows_metadata(self, name: str | None, ip: Address | None) -> bool:
        for rule in self.allow:
            if rule.category == "metadata":
                return True
            if (
                ip is not None
                and rule.network is not None
                and rule.network.prefixlen > 0
                and _network_matches(rule, ip)
            ):
                return True
            if name is not None and rule.host not in (None, "*") and rule.matches_host(name):
                return True
        return False

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, each checked (one refused address refuses them all), in
        the resolver's order. OSError when the name does not resolve."""
        self.check_name(host)
        literal = parse_address(host)
        if literal is not None:
            return [str(literal)]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            text = str(sockaddr[0]).split("%", 1)[0]
            if text not in found:
                found.append(text)
        if not found:
            raise OSError(f"{host} has no address")
        for text in found:
            ip = parse_address(text)
            if ip is None:  # pragma: no cover - getaddrinfo returns addresses
                raise EgressRefused(host, "resolved to something that is not an address")
            self.check_address(host, ip)
        return found

    # ------------------------------------------------------------------------------ reporting

    def describe(self) -> list[str]:
        """Lines for ``hopflow doctor`` and the embedded run's note."""
        refused = ["link-local", "private", "metadata", "reserved"]
        if not self.allow_loopback:
            refused.insert(0, "loopback")
        lines = [f"http steps may reach public addresses; refused unless allowed: {', '.join(refused)}"]
        if self.allow_loopback:
            lines.append("loopback allowed (the embedded `hopflow run` default)")
        if self.allow:
            lines.append("allowed: " + ", ".join(r.text for r in self.allow))
        if self.deny:
            lines.append("denied (beats every allow): " + ", ".join(r.text for r in self.deny))
        return lines


def check_rules(texts: Iterable[Any]) -> list[str]:
    """The reason each unusable rule is unusable (empty: all fine)."""
    problems: list[str] = []
    for text in texts:
        try:
            parse_rule(text)
        except RuleError as exc:
            problems.append(str(exc))
    return problems


# ------------------------------------------------------------------------------ the connection


class GuardedBackend:
    """An httpcore network backend that connects only to addresses the policy allows (pinned)."""

    def __init__(self, policy: EgressPolicy, inner: Any = None) -> None:
        import httpcore

        self.policy = policy
        self.inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> Any:
        import httpcore

        try:
            addresses = self.policy.resolve(host, port)
        except EgressRefused:
            raise
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host} ({type(exc).__name__})") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise EgressRefused("unix socket", "http steps connect over TCP only")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def guarded_transport(policy: EgressPolicy, **kwargs: Any) -> Any:
    """An ``httpx.HTTPTransport`` whose every connection goes through :class:`GuardedBackend`
    (no proxies from the environment: a proxy would make the connection, unchecked)."""
    httpx = lazyimport.httpx()

    transport = httpx.HTTPTransport(trust_env=False, **kwargs)
    pool = transport._pool
    if not hasattr(pool, "_network_backend"):  # pragma: no cover - guards an httpcore upgrade
        raise RuntimeError(
            "httpcore's ConnectionPool has no _network_backend: the egress guard cannot attach"
        )
    pool._network_backend = GuardedBackend(policy, pool._network_backend)
    return transport
