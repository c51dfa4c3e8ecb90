"""``hopflow lsp``: the language server for editors, over stdio (needs the ``lsp`` extra)."""

from __future__ import annotations

import sys

import click


@click.command("lsp", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stdio", is_flag=True, help="Talk over stdin/stdout (the default and only transport).")
def lsp(stdio: bool) -> None:
    """Run the hopflow language server: diagnostics as you type, hovers, completions, definitions.

    Editors start it themselves; see docs/editors.md. Needs pygls: pip install 'hopflow[lsp]'.
    """
    del stdio  # accepted because many editor clients pass it
    try:
        from engine.lsp.server import main
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("pygls", "lsprotocol"):
            click.echo("hopflow lsp: the language server needs pygls: pip install 'hopflow[lsp]'", err=True)
            sys.exit(1)
        raise
    main()
