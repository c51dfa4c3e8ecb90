"""``hopflow keys``: make the secrets a deployment needs, printed as environment lines.

``keys generate`` makes an Ed25519 pair for the local dispatcher's signed deliveries
(``HOPFLOW_SIGNING_KEY`` for the dispatcher only, ``HOPFLOW_VERIFY_KEYS`` for every worker);
``keys api-key`` makes a ``HOPFLOW_API_KEY``. The output is meant for ``>> .env`` or a secret store:
comments start with ``#``, every other line is ``NAME=value``.
"""

from __future__ import annotations

import json
import secrets

import click

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group("keys", context_settings=CONTEXT)
def keys() -> None:
    """Generate signing keys and API keys."""


@keys.command("generate", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print {signing_key, verify_key, key_id} as JSON.")
def generate(as_json: bool) -> None:
    """Print a new Ed25519 key pair as HOPFLOW_SIGNING_KEY / HOPFLOW_VERIFY_KEYS lines."""
    from engine.signing import generate_ed25519_keypair, key_id

    pair = generate_ed25519_keypair()
    kid = key_id(pair.public_key)
    if as_json:
        click.echo(
            json.dumps({"signing_key": pair.private_key, "verify_key": pair.public_key, "key_id": kid})
        )
        return
    click.echo(f"# hopflow Ed25519 key pair, key id {kid}")
    click.echo("# the dispatcher only (it signs deliveries); keep it secret:")
    click.echo(f"HOPFLOW_SIGNING_KEY={pair.private_key}")
    click.echo("# every worker (verifies deliveries); to rotate, list old and new comma-separated:")
    click.echo(f"HOPFLOW_VERIFY_KEYS={pair.public_key}")


@keys.command("api-key", context_settings=CONTEXT)
def api_key() -> None:
    """Print a new random HOPFLOW_API_KEY line (256 bits)."""
    click.echo(f"HOPFLOW_API_KEY={secrets.token_urlsafe(32)}")
