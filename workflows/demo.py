"""Simulated services for the example workflows: ``hopflow run … --actions workflows/demo.py``.

Loading this module does two things:

1. registers every action the examples call (``demo.*``, plus ``restaurant.*``, ``payments.*`` and
   ``notify.sms`` used by ``dinner-reservation``);
2. starts one small HTTP server on ``127.0.0.1`` (a free port, in a daemon thread) that plays the
   examples' HTTP APIs, and points each ``*_API`` environment variable the examples declare at it —
   unless that variable is already set, so you can aim a workflow at a real service instead.

Everything is in memory and deterministic: ids derive from ``ctx.idempotency_key`` (or the
``Idempotency-Key`` header), so a retried call returns the same id, exactly as a well-behaved
service deduplicates. Notifications (e-mail, SMS, push) print one line to stderr.

Injecting failures (to see compensations run):

* ``DEMO_FAIL=<step id>[,<step id>…]`` makes every action *and* HTTP call made by those steps fail:
  actions raise ``DemoFailure`` (error ``action.DemoFailure``, not retried by default); HTTP calls get
  ``422`` (error ``http.422``). The step is recognised from ``ctx.step`` or from the
  ``Idempotency-Key`` header (``<execution id>:<step path>``). Compensations are never failed by it.
* by input, where the data flows to a service:
  ``payment_token: "tok_declined"`` (order-fulfilment) → ``action.PaymentDeclined``;
  ``payment_token: "tok_flaky"`` → ``action.TemporaryError`` on the first attempt only (retried);
  ``user_id`` starting with ``"u-broke"`` (dinner-reservation) → the deposit fails with
  ``action.PaymentDeclined``; ``party_size`` over 8 → no table is found (``NoTable``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import engine
from engine.model import StepContext

# ---------------------------------------------------------------------------------------- helpers


class DemoFailure(Exception):
    """A failure injected with DEMO_FAIL."""


class PaymentDeclined(Exception):
    """The card was declined (a business error: retrying does not help)."""


class TemporaryError(Exception):
    """A transient failure (the examples retry ``action.TemporaryError``)."""


def _id(prefix: str, *parts: Any) -> str:
    digest = hashlib.sha1("\x00".join(str(p) for p in parts).encode()).hexdigest()[:10]
    return f"{prefix}_{digest}"


def _fail_steps() -> set[str]:
    return {s.strip() for s in os.environ.get("DEMO_FAIL", "").split(",") if s.strip()}


def _is_compensation(key: str) -> bool:
    return "compensat" in key


def _maybe_fail(ctx: StepContext) -> None:
    if ctx.step in _fail_steps() and not _is_compensation(ctx.idempotency_key):
        raise DemoFailure(f"injected failure in step {ctx.step!r} (DEMO_FAIL)")


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


_lock = threading.Lock()
STATE: dict[str, dict[str, Any]] = {
    "bookings": {},
    "charges": {},
    "accounts": {},
    "trials": {},
    "expenses": {},
    "packages": {},
    "labels": {},
    "contacts": {},
    "reservations": {},
    "invoices": {},
    "exports": {},
    "payouts": {},
    "sent": {},
}


def _put(table: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
    with _lock:
        return STATE[table].setdefault(key, value)


def _pop(table: str, key: str) -> dict[str, Any] | None:
    with _lock:
        return STATE[table].pop(key, None)


# ------------------------------------------------------------------------ dinner-reservation actions


@engine.action("restaurant.book")
def restaurant_book(ctx: StepContext, table: str, user: str) -> dict[str, Any]:
    _maybe_fail(ctx)
    booking = _put("bookings", ctx.idempotency_key, {"id": _id("bk", ctx.idempotency_key), "table": table})
    return {"id": booking["id"], "table": table, "user": user}


@engine.action("restaurant.cancel")
def restaurant_cancel(ctx: StepContext, booking_id: str) -> dict[str, Any]:
    with _lock:
        found = [k for k, v in STATE["bookings"].items() if v["id"] == booking_id]
        for k in found:
            del STATE["bookings"][k]
    return {"cancelled": booking_id}


@engine.action("payments.charge")
def payments_charge(ctx: StepContext, user: str, cents: int) -> dict[str, Any]:
    _maybe_fail(ctx)
    if str(user).startswith("u-broke"):
        raise PaymentDeclined(f"card of {user} declined for {cents} cents")
    charge = _put(
        "charges", ctx.idempotency_key, {"charge_id": _id("ch", ctx.idempotency_key), "cents": cents}
    )
    return {"charge_id": charge["charge_id"], "cents": cents}


@engine.action("payments.refund")
def payments_refund(ctx: StepContext, charge_id: str) -> dict[str, Any]:
    return {"refunded": charge_id}


@engine.action("notify.sms")
def notify_sms(ctx: StepContext, user: str, text: str) -> dict[str, Any]:
    _maybe_fail(ctx)
    _say(f"sms to {user}: {text}")
    return {"message_id": _id("sms", ctx.idempotency_key)}


# ------------------------------------------------------------------------------------ demo.* actions


@engine.action("demo.notify.email")
def notify_email(ctx: StepContext, to: str, subject: str, text: str) -> dict[str, Any]:
    _maybe_fail(ctx)
    message_id = _id("msg", ctx.idempotency_key)
    if _put("sent", ctx.idempotency_key, {"to": to})["to"] == to:
        _say(f"e-mail to {to}: {subject} — {text}")
    return {"message_id": message_id}


@engine.action("demo.notify.push")
def notify_push(ctx: StepContext, user: str, text: str) -> dict[str, Any]:
    _maybe_fail(ctx)
    _say(f"push to {user}: {text}")
    return {"notification_id": _id("push", ctx.idempotency_key)}


@engine.action("demo.expenses.submit")
def expenses_submit(ctx: StepContext, employee: str, amount_cents: int, purpose: str) -> dict[str, Any]:
    """The expense id derives from the execution id, so ``hopflow run --id X`` knows its event key."""
    _maybe_fail(ctx)
    expense_id = _id("exp", ctx.execution_id)
    _put("expenses", expense_id, {"employee": employee, "amount_cents": amount_cents, "purpose": purpose})
    return {"expense_id": expense_id, "status": "submitted"}


@engine.action("demo.expenses.withdraw")
def expenses_withdraw(ctx: StepContext, expense_id: str) -> dict[str, Any]:
    _pop("expenses", expense_id)
    return {"expense_id": expense_id, "status": "withdrawn"}


@engine.action("demo.accounts.create")
def accounts_create(ctx: StepContext, email: str, name: str, plan: str) -> dict[str, Any]:
    _maybe_fail(ctx)
    account_id = _id("acc", ctx.idempotency_key)
    _put("accounts", account_id, {"email": email, "name": name, "plan": plan, "status": "open"})
    return {"account_id": account_id, "plan": plan}


@engine.action("demo.accounts.close")
def accounts_close(ctx: StepContext, account_id: str, reason: str) -> dict[str, Any]:
    _maybe_fail(ctx)
    with _lock:
        account = STATE["accounts"].setdefault(account_id, {})
        account["status"] = "closed"
    return {"account_id": account_id, "status": "closed", "reason": reason}


@engine.action("demo.billing.start_trial")
def billing_start_trial(ctx: StepContext, account_id: str, days: int) -> dict[str, Any]:
    _maybe_fail(ctx)
    _put("trials", account_id, {"days": days})
    return {"account_id": account_id, "trial_days": days}


@engine.action("demo.billing.cancel_trial")
def billing_cancel_trial(ctx: StepContext, account_id: str) -> dict[str, Any]:
    _pop("trials", account_id)
    return {"account_id": account_id, "trial": "cancelled"}


@engine.action("demo.templates.render")
def templates_render(ctx: StepContext, template: str, values: dict[str, Any]) -> dict[str, Any]:
    _maybe_fail(ctx)
    name = values.get("name", "there")
    plan = template.removeprefix("welcome-")
    return {
        "subject": f"Welcome to hopflow, {name}!",
        "body": f"Hi {name}, your {plan} account {values.get('account_id', '')} is ready.",
    }


@engine.action("demo.payments.charge")
def demo_payments_charge(
    ctx: StepContext, customer: str, token: str, cents: int, reference: str
) -> dict[str, Any]:
    _maybe_fail(ctx)
    if token == "tok_declined":
        raise PaymentDeclined(f"card of {customer} was declined")
    if token == "tok_flaky" and ctx.attempt == 1:
        raise TemporaryError("payment provider timed out, try again")
    charge_id = _id("ch", ctx.idempotency_key)
    _put("charges", ctx.idempotency_key, {"charge_id": charge_id, "cents": cents, "reference": reference})
    return {"charge_id": charge_id, "cents": cents}


@engine.action("demo.payments.refund")
def demo_payments_refund(ctx: StepContext, charge_id: str) -> dict[str, Any]:
    return {"refunded": charge_id}


@engine.action("demo.warehouse.pack")
def warehouse_pack(ctx: StepContext, order_id: str, reservations: list[Any]) -> dict[str, Any]:
    _maybe_fail(ctx)
    package_id = _id("pkg", ctx.idempotency_key)
    _put("packages", package_id, {"order_id": order_id, "reservations": reservations})
    return {"package_id": package_id, "items": len(reservations)}


@engine.action("demo.warehouse.unpack")
def warehouse_unpack(ctx: StepContext, package_id: str) -> dict[str, Any]:
    _pop("packages", package_id)
    return {"package_id": package_id, "status": "unpacked"}


@engine.action("demo.shipping.create_label")
def shipping_create_label(ctx: StepContext, package_id: str, express: bool = False) -> dict[str, Any]:
    _maybe_fail(ctx)
    tracking = _id("TRK", ctx.idempotency_key).upper()
    _put("labels", tracking, {"package_id": package_id, "express": bool(express)})
    return {"tracking_number": tracking, "service": "express" if express else "standard"}


@engine.action("demo.shipping.void_label")
def shipping_void_label(ctx: StepContext, tracking_number: str) -> dict[str, Any]:
    _pop("labels", tracking_number)
    return {"tracking_number": tracking_number, "status": "void"}


# ----------------------------------------------------------------------------------- the HTTP APIs

ENV_PATHS = {
    "RESTAURANT_API": "/restaurant",
    "PAYOUTS_API": "/payouts",
    "CRM_API": "/crm",
    "WAREHOUSE_API": "/warehouse",
    "BILLING_API": "/billing",
    "EXPORTS_API": "/exports",
    "SMS_API": "/sms",
}
EXPORT_READY_AFTER_POLLS = 2


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hopflow-demo/1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        key = self.headers.get("Idempotency-Key", "")
        step = key.rsplit(":", 1)[-1].rsplit("/", 1)[-1] if key else ""
        if step and step in _fail_steps() and not _is_compensation(key):
            self._send(422, {"error": f"injected failure in step {step!r} (DEMO_FAIL)"})
            return
        try:
            data = json.loads(raw) if raw and "json" in self.headers.get("Content-Type", "") else None
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        route = (self.command, *parts[:2])
        status, payload = self._route(route, parts, data, raw, key, parse_qs(url.query))
        self._send(status, payload)

    def _route(
        self, route: tuple[str, ...], parts: list[str], data: Any, raw: bytes, key: str, query: dict[str, Any]
    ) -> tuple[int, Any]:
        data = data if isinstance(data, dict) else {}
        match route:
            case ("POST", "restaurant", "search"):
                party = int(data.get("party") or 0)
                tables = [] if party > 8 else [{"id": f"t-{party + 10}", "seats": max(party, 2)}]
                return 200, {"tables": tables, "at": data.get("at")}
            case ("POST", "payouts", "payouts"):
                payout = _put("payouts", key or _id("k", raw), {"payout_id": _id("po", key, raw)})
                return 201, {"payout_id": payout["payout_id"], "amount_cents": data.get("amount_cents")}
            case ("PUT", "crm", "contacts") if len(parts) == 3:
                with _lock:
                    created = parts[2] not in STATE["contacts"]
                    STATE["contacts"][parts[2]] = data
                return (201 if created else 200), {"contact_id": parts[2], **data}
            case ("DELETE", "crm", "contacts") if len(parts) == 3:
                return (204 if _pop("contacts", parts[2]) is not None else 404), None
            case ("POST", "warehouse", "reservations"):
                if not data.get("sku"):
                    return 400, {"error": "sku is required"}
                reservation_id = _id("res", key, data.get("line"), data.get("sku"))
                _put("reservations", reservation_id, data)
                return 201, {"reservation_id": reservation_id, "sku": data["sku"], "qty": data.get("qty")}
            case ("DELETE", "warehouse", "reservations") if len(parts) == 3:
                return (204 if _pop("reservations", parts[2]) is not None else 404), None
            case ("POST", "billing", "invoices") if len(parts) == 2:
                invoice_id = _id("inv", key)
                with _lock:
                    invoice = STATE["invoices"].setdefault(
                        invoice_id,
                        {"invoice_id": invoice_id, "number": f"INV-{len(STATE['invoices']) + 1000}"},
                    )
                return 201, {**invoice, "order_id": data.get("order_id")}
            case ("POST", "billing", "invoices") if len(parts) == 4 and parts[3] == "void":
                _pop("invoices", parts[2])
                return 200, {"invoice_id": parts[2], "status": "void"}
            case ("POST", "exports", "exports"):
                export_id = _id("exp", key)
                fmt = (query.get("format") or ["csv"])[0]
                _put("exports", export_id, {"polls": 0, "format": fmt, "report": data.get("report")})
                return 202, {"export_id": export_id, "status": "queued"}
            case ("GET", "exports", "exports") if len(parts) == 3:
                with _lock:
                    export = STATE["exports"].setdefault(parts[2], {"polls": 0, "format": "csv"})
                    export["polls"] += 1
                    done = export["polls"] >= EXPORT_READY_AFTER_POLLS
                if not done:
                    return 200, {"export_id": parts[2], "status": "running"}
                url = f"https://downloads.example.com/{parts[2]}.{export['format']}"
                return 200, {"export_id": parts[2], "status": "done", "url": url}
            case ("POST", "sms", "messages"):
                recipient = self.headers.get("X-Recipient", "?")
                _say(f"sms to {recipient}: {raw.decode(errors='replace')}")
                return 202, {"message_id": _id("sms", key, raw)}
        return 404, {"error": f"no route {self.command} {'/'.join(parts)}"}

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_services() -> str:
    """Start the simulated APIs on 127.0.0.1 (a free port); set unset ``*_API`` variables to them."""
    server = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, name="hopflow-demo-services", daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for name, path in ENV_PATHS.items():
        os.environ.setdefault(name, base + path)
    return base


BASE_URL = start_services()
