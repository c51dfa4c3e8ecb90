"""``env.X`` must be declared under ``env:``: templates may read only the variables the author listed,
so a workflow cannot leak the process environment by accident."""

from __future__ import annotations

from collections.abc import Iterator

from dsl.checks import CheckContext, rule
from dsl.checks.template_syntax import did_you_mean, part_offset, rendered_sites, root_offset
from dsl.diagnostics import Diagnostic
from dsl.graph import env_names


def declared_env(ctx: CheckContext) -> list[str]:
    # `env: API_URL` or `env: {API_URL: …}`: the schema says to write a list; the names still count
    return env_names(ctx.root.get("env"))


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


# hopflow's own configuration (docs/running.md): a workflow that reads these could leak a signing key
# or Redis password into an output, and declaring one suggests it configures hopflow, which it does not
RESERVED_PREFIXES = ("HOPFLOW_", "QSTASH_", "UPSTASH_")
RESERVED_NAMES = frozenset({"REDIS_URL"})


@rule(
    "env-reserved",
    "`env` declares one of hopflow's own configuration variables (HOPFLOW_*, QSTASH_*, UPSTASH_*, "
    "REDIS_URL): templates could then put a signing key or a Redis password into an output",
)
def check_reserved_env(ctx: CheckContext) -> Iterator[Diagnostic]:
    env = ctx.root.get("env")
    if not isinstance(env, list):
        return
    for i, entry in enumerate(env):
        name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            yield ctx.diag(
                "env-reserved",
                "warning",
                f"{name} is hopflow's own configuration, not the workflow's: a template reading it could "
                "leak it into an output or a request; give the workflow a variable of its own",
                ("env", i) if isinstance(entry, str) else ("env", i, "name"),
            )
