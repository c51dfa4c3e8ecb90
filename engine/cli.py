"""The ``hopflow`` command: a thin click group whose commands live in ``engine/commands/*``.

Commands are imported only when invoked, so ``hopflow validate`` never pays for Redis or Starlette.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# command name → "module:attribute" (one module per command family)
COMMANDS: dict[str, str] = {
    "validate": "engine.commands.validate:validate",
    "compile": "engine.commands.validate:compile_",
    "graph": "engine.commands.validate:graph",
    "run": "engine.commands.run:run",
    "resume": "engine.commands.run:resume",
    "recover": "engine.commands.run:recover",
    "status": "engine.commands.operate:status",
    "list": "engine.commands.operate:list_",
    "history": "engine.commands.operate:history",
    "cancel": "engine.commands.operate:cancel",
    "notify": "engine.commands.operate:notify",
    "start": "engine.commands.operate:start",
    "serve": "engine.commands.serve:serve",
    "qstash-dev": "engine.commands.serve:qstash_dev",
    "doctor": "engine.commands.doctor:doctor",
    "keys": "engine.commands.keys:keys",
    "test": "engine.commands.testing:test",
    "init": "engine.commands.init:init",
    "lsp": "engine.commands.lsp:lsp",
    "schema": "engine.commands.schema:schema",
    "schedules": "engine.commands.schedules:schedules",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # not built yet in this checkout
            raise
        command: click.Command = getattr(module, attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """An interrupt no command handled itself ends with one line and 130 (Ctrl-C) or 143
        (SIGTERM), not click's "Aborted!" and 1; ``finally`` blocks and ``atexit`` still run."""
        from engine.lifecycle import exit_code

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            name = ctx.invoked_subcommand
            click.echo(f"hopflow {name}: stopped" if name else "hopflow: stopped", err=True)
            sys.exit(exit_code(exc))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hopflow")
def cli() -> None:
    """hopflow: declarative YAML sagas on Redis and QStash."""


def main(argv: list[str] | None = None) -> Any:
    from engine import lifecycle

    lifecycle.install()  # SIGTERM stops every command like Ctrl-C (graceful, then exit 143)
    return cli.main(args=argv, prog_name="hopflow")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
