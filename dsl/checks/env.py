"""``env.X`` must be declared under ``env:``: templates may read only the variables the author listed,
so a workflow cannot leak the process environment by accident."""

from __future__ import annotations

from collections.abc import Iterator

from dsl.checks import CheckContext, rule
from dsl.checks.template_syntax import did_you_mean, part_offset, rendered_sites, root_offset
from dsl.diagnostics import Diagnostic


def declared_env(ctx: CheckContext) -> list[str]:
    env = ctx.root.get("env")
    if isinstance(env, str):
        return [env]  # `env: API_URL`: the schema says to write a list; the name is still declared
    if isinstance(env, dict):
        return [name for name in env if isinstance(name, str)]  # `env: {API_URL: …}`: likewise
    if not isinstance(env, list):
        return []
    return [name for name in env if isinstance(name, str)]


@rule("undeclared-env", "a template reads `env.X` but X is not listed under `env:`")
def check_env(ctx: CheckContext) -> Iterator[Diagnostic]:
    declared = declared_env(ctx)
    for site in rendered_sites(ctx):
        if site.parsed is None:
            continue
        for ref in site.parsed.references:
            if ref.root != "env":
                continue
            if not ref.parts:
                yield ctx.diag(
                    "undeclared-env",
                    "error",
                    "read environment variables by name (`env.NAME`, NAME listed under `env:`), "
                    "not through `env` as a whole or a computed key",
                    site.path,
                    offset=root_offset(site.source, ref),
                )
                continue
            name = ref.parts[0]
            if name in declared:
                continue
            hint = did_you_mean(name, declared)
            listed = f"; declared: {', '.join(declared)}" if declared and not hint else ""
            yield ctx.diag(
                "undeclared-env",
                "error",
                f"env.{name} is not declared: add {name} to the top-level `env:` list{hint}{listed}",
                site.path,
                offset=part_offset(site.source, ref, 0),
            )
