"""The egress policy (SSRF guard) against real sockets on 127.0.0.1: what an http step may reach."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dsl.egress import RuleError, parse_rule
from engine.egress import EgressPolicy, EgressRefused, category
from engine.model import Message, OffloadRequest, StepContext, StepFailure
from engine.steps import http, offload

HITS: list[str] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        HITS.append(self.path)
        if self.path.startswith("/to-loopback"):
            target = self.path.split("=", 1)[1]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"secret": "internal"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    http.close_client()


def ctx() -> StepContext:
    return StepContext("e", "call", 1, "e:call", time.time() + 30)


def call(url: str, policy: EgressPolicy, **config: Any) -> dict[str, Any]:
    return http.execute({"url": url, **config}, ctx(), timeout_s=5, egress=policy)


def refused(url: str, policy: EgressPolicy, **config: Any) -> str:
    before = len(HITS)
    with pytest.raises(StepFailure) as info:
        call(url, policy, **config)
    assert info.value.error.name == "http.egress", info.value.error
    assert len(HITS) == before  # nothing reached the server
    return info.value.error.message


STRICT = EgressPolicy()


def test_loopback_is_refused_by_default_and_allowed_when_asked(port: int) -> None:
    message = refused(f"http://127.0.0.1:{port}/x?token=s3cret", STRICT)
    assert "127.0.0.1" in message and "loopback" in message and "s3cret" not in message
    assert call(f"http://127.0.0.1:{port}/x", EgressPolicy(allow_loopback=True))["json"] == {
        "secret": "internal"
    }
    assert call(f"http://127.0.0.1:{port}/x", EgressPolicy.from_texts(["127.0.0.0/8"]))["status"] == 200
    assert call(f"http://127.0.0.1:{port}/x", EgressPolicy.from_texts(["loopback"]))["status"] == 200


def test_a_hostname_resolving_to_loopback_is_refused_after_resolution(port: int) -> None:
    message = refused(f"http://localhost:{port}/x", STRICT)
    assert "localhost resolves to a loopback address" in message
    # a name pattern allows what the name resolves to
    assert call(f"http://localhost:{port}/x", EgressPolicy.from_texts(["localhost"]))["status"] == 200


@pytest.mark.parametrize(
    "host",
    [
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "0.0.0.0",
        "127.1",
        "2130706433",
        "[::]",
        "[64:ff9b::7f00:1]",
    ],
)
def test_other_spellings_of_loopback_are_refused(port: int, host: str) -> None:
    refused(f"http://{host}:{port}/x", STRICT)


def test_a_redirect_to_a_refused_address_is_refused(port: int) -> None:
    allowed_here = EgressPolicy.from_texts(["localhost"])  # the first hop's name is allowed, 127.0.0.1 is not
    before = len(HITS)
    with pytest.raises(StepFailure) as info:
        call(f"http://localhost:{port}/to-loopback?to=http://127.0.0.1:{port}/x", allowed_here)
    assert info.value.error.name == "http.egress"
    assert HITS[before:] == [f"/to-loopback?to=http://127.0.0.1:{port}/x"]  # the redirect hop never ran
    # the same redirect within the policy is followed
    both = EgressPolicy.from_texts(["localhost", "127.0.0.1"])
    assert call(f"http://localhost:{port}/to-loopback?to=http://127.0.0.1:{port}/x", both)["status"] == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://169.254.1.1/",
        "http://[::ffff:10.0.0.1]/",
        "http://224.0.0.1/",
    ],
)
def test_metadata_private_and_link_local_addresses_are_refused(url: str) -> None:
    refused(url, STRICT)


def test_a_workflow_cannot_open_metadata_but_the_environment_can() -> None:
    wide = STRICT.for_workflow(["169.254.0.0/16", "metadata", "*"])
    for host in ("169.254.169.254", "metadata.google.internal"):
        with pytest.raises(EgressRefused):
            wide.resolve(host, 80) if host[0].isdigit() else wide.check_name(host)
    wide.check_address("x", ipaddress.ip_address("169.254.1.1"))  # link-local: the workflow may
    env = EgressPolicy.from_texts(["metadata"])
    env.check_address("169.254.169.254", ipaddress.ip_address("169.254.169.254"))
    env.check_name("metadata.google.internal")


def test_deny_beats_every_allow() -> None:
    policy = EgressPolicy.from_texts(["10.0.0.0/8", "*.corp.example"], ["10.9.0.0/16", "secret.corp.example"])
    policy = policy.for_workflow(["10.9.1.1"])
    policy.check_address("10.1.2.3", ipaddress.ip_address("10.1.2.3"))
    for ip in ("10.9.1.1", "::ffff:10.9.1.1"):
        with pytest.raises(EgressRefused, match="HOPFLOW_EGRESS_DENY"):
            policy.check_address(ip, ipaddress.ip_address(ip))
    with pytest.raises(EgressRefused, match="HOPFLOW_EGRESS_DENY"):
        policy.check_name("secret.corp.example")
    policy.check_address("api.corp.example", ipaddress.ip_address("10.200.0.1"))  # name pattern allows
    with pytest.raises(EgressRefused):
        policy.check_address("corp.example", ipaddress.ip_address("10.200.0.1").__class__("192.168.0.1"))


def test_public_addresses_pass_and_categories_are_right() -> None:
    assert category(ipaddress.ip_address("93.184.216.34")) is None
    assert category(ipaddress.ip_address("2606:4700::1111")) is None
    assert category(ipaddress.ip_address("::ffff:169.254.169.254")) == "metadata"
    assert category(ipaddress.ip_address("2002:7f00:1::")) == "loopback"  # 6to4 of 127.0.0.1
    STRICT.check_address("example.com", ipaddress.ip_address("93.184.216.34"))


def test_rule_syntax() -> None:
    assert parse_rule("10.0.0.0/8").network == ipaddress.ip_network("10.0.0.0/8")
    assert parse_rule("*.Internal.Example.com").matches_host("api.internal.example.com")
    assert not parse_rule("*.internal.example.com").matches_host("internal.example.com")
    assert parse_rule("LOOPBACK").category == "loopback"
    for bad in ("10.0.0.0/33", "http://x", "a b", "", "*.", "x/y"):
        with pytest.raises(RuleError):
            parse_rule(bad)


def test_a_refused_step_is_catchable_in_a_workflow(harness: Any, port: int) -> None:
    h = harness(
        f"""
        name: probe
        steps:
          - id: fetch
            http: {{url: "http://127.0.0.1:{port}/x"}}
            catch:
              - errors: [http.egress]
                goto: refused
          - id: leaked
            succeed: {{}}
          - id: refused
            succeed: {{}}
        """,
        egress=EgressPolicy(),
    )
    before = len(HITS)
    eid = h.start("probe", {})
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded", record
    assert [t["step"] for t in record["trace"]][-1] == "refused"
    assert len(HITS) == before


def test_a_workflows_egress_allow_opens_what_it_names(harness: Any, port: int) -> None:
    h = harness(
        f"""
        name: internal
        egress:
          allow: ["127.0.0.1"]
        steps:
          - id: fetch
            http: {{url: "http://127.0.0.1:{port}/x"}}
        """,
        egress=EgressPolicy(),
    )
    eid = h.start("internal", {})
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"


def test_offloaded_calls_are_checked_at_publish_time_and_when_made(port: int) -> None:
    where = Message("e", "call", 1)
    with pytest.raises(StepFailure) as info:
        offload.build({"url": "http://169.254.169.254/x"}, ctx(), timeout_s=5, message=where, egress=STRICT)
    assert info.value.error.name == "http.egress"
    with pytest.raises(StepFailure):
        offload.build({"url": f"http://localhost:{port}/x"}, ctx(), timeout_s=5, message=where, egress=STRICT)
    request = offload.build(
        {"url": f"http://127.0.0.1:{port}/x"},
        ctx(),
        timeout_s=5,
        message=where,
        egress=STRICT,
        workflow_allow=("127.0.0.1",),
    )
    assert request.egress == ("127.0.0.1",)
    assert OffloadRequest.from_dict(request.to_dict()).egress == ("127.0.0.1",)
    assert offload.perform(request, STRICT).status == 200  # the workflow's rule travels with the call
    bare = OffloadRequest(where, 1, "GET", f"http://127.0.0.1:{port}/x", {}, None, 5)
    result = offload.perform(bare, STRICT)
    assert result.status == 0 and result.error == "http.egress"
