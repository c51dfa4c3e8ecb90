"""Simulated services for the pattern workflows: ``hopflow run … --actions workflows/patterns/services.py``.

Their actions are named ``patterns.*`` so they never clash with workflows/demo.py's in one process.

In memory and deterministic: every id derives from ``ctx.idempotency_key``, so a retried or
redelivered call returns what the first one did, as a well-behaved service deduplicates. Failures are
chosen by the input (a card ``tok_declined``, an account ``acc-frozen``, a vendor ``slow``), so each
path of each pattern can be run on purpose. Every call prints one line to stderr.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from typing import Any

import engine
from engine.model import StepContext

_lock = threading.Lock()
LEDGER: dict[str, Any] = {}  # idempotency key → result (what a real service would persist)


def _once(ctx: StepContext, make: Any) -> Any:
    with _lock:
        if ctx.idempotency_key not in LEDGER:
            LEDGER[ctx.idempotency_key] = make()
        return LEDGER[ctx.idempotency_key]


def _id(prefix: str, ctx: StepContext) -> str:
    return prefix + "_" + hashlib.sha1(ctx.idempotency_key.encode()).hexdigest()[:8]


class SoldOut(Exception):
    """Nothing left to reserve (error `action.SoldOut`)."""


class PaymentDeclined(Exception):
    """The charge was refused after the hold was taken (error `action.PaymentDeclined`)."""


class InsufficientFunds(Exception):
    """The account cannot cover the amount (error `action.InsufficientFunds`)."""


class AccountFrozen(Exception):
    """The account accepts no deposits (error `action.AccountFrozen`)."""


class VendorUnavailable(Exception):
    """The vendor did not answer (error `action.VendorUnavailable`)."""


def _say(text: str) -> None:
    print(f"services: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ travel (saga)


@engine.action("patterns.travel.reserve")
def reserve(ctx: StepContext, kind: str, trip: str, **detail: Any) -> dict[str, Any]:
    if detail.get("sold_out"):
        raise SoldOut(f"no {kind} left for trip {trip}")
    _say(f"reserve {kind} for {trip}")
    return _once(ctx, lambda: {"kind": kind, "reservation": _id(kind[:3], ctx), "trip": trip})


@engine.action("patterns.travel.cancel")
def cancel(ctx: StepContext, kind: str, reservation: str, why: str = "") -> dict[str, Any]:
    _say(f"cancel {kind} {reservation} ({why})")
    return {"cancelled": reservation}


@engine.action("patterns.payments.charge")
def charge(ctx: StepContext, card: str, cents: int, order: str) -> dict[str, Any]:
    if card == "tok_declined":  # the hold was taken, then the charge refused: it must be released
        _say(f"charge {cents} on {order}: declined after the hold")
        raise PaymentDeclined(f"card declined for order {order}")
    _say(f"charge {cents} on {order}")
    return _once(ctx, lambda: {"charge": _id("ch", ctx), "cents": cents})


@engine.action("patterns.payments.refund")
def refund(ctx: StepContext, order: str, cents: int) -> dict[str, Any]:
    _say(f"refund {cents} on {order}")
    return {"refunded": cents, "order": order}


# ---------------------------------------------------------------------------- money transfer


@engine.action("patterns.bank.withdraw")
def withdraw(ctx: StepContext, account: str, cents: int, reference: str) -> dict[str, Any]:
    if account == "acc-empty":
        raise InsufficientFunds(f"{account} cannot cover {cents}")
    _say(f"withdraw {cents} from {account}")
    return _once(ctx, lambda: {"account": account, "cents": cents, "entry": _id("wd", ctx)})


@engine.action("patterns.bank.deposit")
def deposit(ctx: StepContext, account: str, cents: int, reference: str) -> dict[str, Any]:
    if account == "acc-frozen":
        raise AccountFrozen(f"{account} does not accept deposits")
    _say(f"deposit {cents} to {account}")
    return _once(ctx, lambda: {"account": account, "cents": cents, "entry": _id("dp", ctx)})


# ------------------------------------------------------------------- orders, quotes, readings


@engine.action("patterns.orders.create")
def create_order(ctx: StepContext, customer: str, items: list[Any]) -> dict[str, Any]:
    _say(f"order for {customer}: {len(items)} items")
    return _once(ctx, lambda: {"order": _id("po", ctx), "items": len(items)})


@engine.action("patterns.orders.cancel")
def cancel_order(ctx: StepContext, order: str, why: str) -> dict[str, Any]:
    _say(f"cancel order {order}: {why}")
    return {"cancelled": order}


@engine.action("patterns.orders.fulfil")
def fulfil(ctx: StepContext, order: str) -> dict[str, Any]:
    _say(f"fulfil {order}")
    return {"shipped": order}


@engine.action("patterns.vendors.quote")
def quote(ctx: StepContext, vendor: str, sku: str, qty: int) -> dict[str, Any]:
    if vendor.startswith("down"):
        raise VendorUnavailable(f"{vendor} did not answer")
    price = 100 + int(hashlib.sha1(f"{vendor}:{sku}".encode()).hexdigest()[:4], 16) % 900
    return {"vendor": vendor, "unit_cents": price, "total_cents": price * qty}


# ------------------------------------------------------------------------ suppliers (a race)


@engine.action("patterns.suppliers.hold")
def hold(ctx: StepContext, supplier: str, part: str, qty: int) -> dict[str, Any]:
    _say(f"hold {qty} x {part} at {supplier}")
    return _once(ctx, lambda: {"supplier": supplier, "hold": f"{supplier}-{_id('h', ctx)}"})


@engine.action("patterns.suppliers.release")
def release(ctx: StepContext, hold: str, why: str = "") -> dict[str, Any]:
    _say(f"release hold {hold}: {why}")
    return {"released": hold}


@engine.action("patterns.suppliers.order")
def order(ctx: StepContext, hold: str) -> dict[str, Any]:
    _say(f"order against hold {hold}")
    return _once(ctx, lambda: {"order": _id("po", ctx), "hold": hold})


@engine.action("patterns.notify.email")
def email(ctx: StepContext, to: str, subject: str, text: str = "") -> dict[str, Any]:
    _say(f"email {to}: {subject}")
    return {"sent": _id("msg", ctx)}
