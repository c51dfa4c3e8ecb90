"""``hopflow init NAME``: scaffold a workflow, its start payload, an actions module and a test file.

The scaffold is a small saga that already shows each piece (an action with a compensation, an http
call, retries) and passes ``hopflow validate`` and ``hopflow test`` at 100 % path coverage, so the
first edit starts from green.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from engine.commands.validate import _guard, _usage_exit

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

WORKFLOW = """\
name: {name}
description: TODO say what {name} does. Reserve something, then tell a service about it; if telling
  fails, the reservation is released (its compensation).
input:
  type: object
  required: [customer_id, amount_cents]
  properties:
    customer_id: {{type: string}}
    amount_cents: {{type: integer, minimum: 1}}
env: [{env}]
steps:
  - id: reserve
    action: {ident}.reserve
    with:
      customer: "{{{{ input.customer_id }}}}"
      cents: "{{{{ input.amount_cents }}}}"
    retry: {{max_attempts: 3, interval: 1s}}
    compensate:
      action: {ident}.release
      with: {{reservation_id: "{{{{ steps.reserve.output.reservation_id }}}}"}}

  - id: notify
    http:
      method: POST
      url: "{{{{ env.{env} }}}}/notifications"
      json:
        customer: "{{{{ input.customer_id }}}}"
        reservation: "{{{{ steps.reserve.output.reservation_id }}}}"
      expect: [200, 201, 202]
    retry: {{max_attempts: 3, interval: 2s}}

  - id: done
    succeed:
      output: {{reservation_id: "{{{{ steps.reserve.output.reservation_id }}}}"}}
"""

INPUT = """\
{{
  "customer_id": "cus-1",
  "amount_cents": 1200
}}
"""

ACTIONS = '''\
"""Actions of the {name} workflow: ``hopflow run {name}.yaml --actions {module}``.

Each action gets the step context first (``ctx.idempotency_key`` is the same across retries: use it
so that a retried call does not reserve twice), then the step's rendered ``with`` as keywords.
"""

from __future__ import annotations

from typing import Any

import engine
from engine.model import StepContext


@engine.action("{ident}.reserve")
def reserve(ctx: StepContext, customer: str, cents: int) -> dict[str, Any]:
    return {{"reservation_id": f"res-{{ctx.idempotency_key}}", "customer": customer, "cents": cents}}


@engine.action("{ident}.release")
def release(ctx: StepContext, reservation_id: str) -> dict[str, Any]:
    return {{"released": reservation_id}}
'''

TESTS = """\
# hopflow test {name}.test.yaml  (docs/testing.md)
env:
  {env}: https://notifications.test
cases:
  - name: reserves and notifies
    input: {{customer_id: cus-1, amount_cents: 1200}}
    mocks:
      reserve: {{result: {{reservation_id: res-1}}}}
      notify: {{status: 202, body: {{accepted: true}}}}
    expect:
      status: succeeded
      output: {{reservation_id: res-1}}
      path: [reserve, notify, done]
      calls:
        reserve: {{count: 1, with: {{customer: cus-1, cents: 1200}}}}
        notify: {{request: {{method: POST, url: https://notifications.test/notifications}}}}

  - name: the reservation keeps timing out, nothing to undo
    input: {{customer_id: cus-1, amount_cents: 1200}}
    mocks:
      reserve: {{error: timeout}}
    expect:
      status: failed
      error: {{name: timeout, step: reserve}}
      calls: {{reserve: 3}}

  - name: the notification service stays down, so the reservation is released
    input: {{customer_id: cus-1, amount_cents: 1200}}
    mocks:
      reserve: {{result: {{reservation_id: res-1}}, compensate: {{result: {{released: res-1}}}}}}
      notify: {{status: 503}}
    expect:
      status: compensated
      error: {{name: http.503, step: notify}}
      compensated: [reserve]
      calls:
        notify: 3
        reserve: {{compensate: {{with: {{reservation_id: res-1}}}}}}
"""


def files_for(name: str) -> dict[str, str]:
    """File name → content of the scaffold for workflow ``name``."""
    ident = re.sub(r"[^a-z0-9_]", "_", name)
    env = re.sub(r"[^A-Z0-9_]", "_", name.upper()) + "_API"
    module = f"{ident}_actions.py"
    values = {"name": name, "ident": ident, "env": env, "module": module}
    return {
        f"{name}.yaml": WORKFLOW.format(**values),
        f"{name}.input.json": INPUT.format(**values),
        module: ACTIONS.format(**values),
        f"{name}.test.yaml": TESTS.format(**values),
    }


@click.command("init", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default=None,
    metavar="DIR",
    help="Where to write the files (default: ./workflows if it exists, else the current folder).",
)
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@_guard
def init(name: str, directory: str | None, force: bool) -> None:
    """Scaffold workflow NAME: NAME.yaml, NAME.input.json, an actions module and NAME.test.yaml.

    The scaffold passes `hopflow validate` and `hopflow test` as it is.
    """
    if not NAME.match(name):
        _usage_exit(
            "init",
            f"{name!r} is not a workflow name: start with a lowercase letter, then lowercase letters, "
            "digits, '_', '.' or '-' (at most 64 characters)",
        )
    folder = (
        Path(directory) if directory else (Path("workflows") if Path("workflows").is_dir() else Path("."))
    )
    if folder.exists() and not folder.is_dir():
        _usage_exit("init", f"{folder} is not a folder")
    files = files_for(name)
    existing = [folder / f for f in files if (folder / f).exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing)
        _usage_exit(
            "init", f"{shown} already exist{'s' if len(existing) == 1 else ''} (use --force to overwrite)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for file, text in files.items():
            (folder / file).write_text(text, encoding="utf-8")
    except OSError as exc:
        _usage_exit("init", f"cannot write to {folder}: {exc.strerror or exc}")
    for file in files:
        click.echo(f"created {folder / file}")
    workflow = folder / f"{name}.yaml"
    click.echo(
        f"next: hopflow validate {workflow} && hopflow test {folder / (name + '.test.yaml')}",
        err=True,
    )
    sys.exit(0)
