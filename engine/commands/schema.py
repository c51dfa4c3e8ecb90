"""``hopflow schema``: the workflow JSON Schema this installation validates against, for editors."""

from __future__ import annotations

import click

# where each release's schema can be fetched (docs/editors.md): the file in the repository at the
# release's tag; "main" is the development version
REPOSITORY_RAW = "https://raw.githubusercontent.com/hopflow/hopflow"
SCHEMA_PATH = "schemas/workflow.schema.json"


def schema_url(version: str | None = None) -> str:
    """The stable URL of the schema of ``version`` (this installation's by default)."""
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        try:
            version = installed("hopflow")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            version = None
    ref = f"v{version}" if version else "main"
    return f"{REPOSITORY_RAW}/{ref}/{SCHEMA_PATH}"


@click.command("schema", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--path", "show_path", is_flag=True, help="Print the installed file's path instead.")
@click.option("--url", "show_url", is_flag=True, help="Print the schema's stable URL for this version.")
def schema(show_path: bool, show_url: bool) -> None:
    """Print the workflow JSON Schema (as shipped in this installation)."""
    from schemas import WORKFLOW_SCHEMA

    if show_path and show_url:
        click.echo("hopflow schema: give --path or --url, not both", err=True)
        raise SystemExit(2)
    if show_path:
        click.echo(str(WORKFLOW_SCHEMA.resolve()))
    elif show_url:
        click.echo(schema_url())
    else:
        click.echo(WORKFLOW_SCHEMA.read_text(encoding="utf-8"), nl=False)
