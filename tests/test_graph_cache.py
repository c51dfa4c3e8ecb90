"""The graph cache (dsl/cache.py): compiled graphs on disk by content hash.

A hit must give exactly the graph the pipeline gives; anything about an entry that is off (another
file, another hopflow, another time budget, a torn or edited entry, a folder others can write) must
end in a compile, never in a trusted entry.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dsl import cache as cache_module
from dsl.cache import GraphCache
from dsl.files import workflow_files
from dsl.validate import validate_path
from engine.catalog import Catalog, CatalogError, compile_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "workflows"

FLOW = """\
name: cached
input: {type: object, properties: {name: {type: string}}}
steps:
  - id: greet
    set: {greeting: "hello {{ input.name }}"}
  - id: done
    set: {ok: true}
"""


def _refuse_compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any compile fail loudly; returns the files it was asked to compile."""
    import dsl.validate

    asked: list[str] = []

    def refuse(data: bytes, name: str, **kwargs: Any) -> Any:
        asked.append(name)
        raise AssertionError(f"{name} was compiled although its graph is cached")

    monkeypatch.setattr(dsl.validate, "validate_bytes", refuse)
    return asked


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    path = folder / "cached.yaml"
    path.write_text(FLOW)
    return path


def test_every_example_comes_back_from_the_cache_exactly_as_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = GraphCache(tmp_path / "cache")
    files = workflow_files(EXAMPLES)
    assert len(files) >= 5
    compiled = {}
    for file in files:
        graph, errors = compile_file(file, cache=cache)
        assert graph is not None, errors
        expected = validate_path(file).graph
        assert expected is not None
        assert graph.hash == expected.with_hash().hash
        compiled[file] = graph
    assert len(_entries(tmp_path / "cache")) == len(files)

    _refuse_compiles(monkeypatch)
    for file in files:
        graph, errors = compile_file(file, cache=cache)
        assert errors == []
        assert graph == compiled[file] and graph is not None and graph.hash == compiled[file].hash
        assert graph.canonical() == compiled[file].canonical()


def test_a_warm_catalog_compiles_nothing(flow: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = GraphCache(tmp_path / "cache")
    first = Catalog.from_directory(flow.parent, cache=cache)
    asked = _refuse_compiles(monkeypatch)
    second = Catalog.from_directory(flow.parent, cache=GraphCache(tmp_path / "cache"))
    assert asked == []
    assert second.get("cached").hash == first.get("cached").hash
    assert second.source("cached") == str(flow)


def test_a_changed_file_budget_or_hopflow_misses(
    flow: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = GraphCache(tmp_path / "cache")
    graph, _ = compile_file(flow, cache=cache)
    assert graph is not None
    # the file: its new text is compiled, not the old graph served
    flow.write_text(FLOW.replace("hello", "hi"))
    changed, _ = compile_file(flow, cache=cache)
    assert changed is not None and changed.hash != graph.hash
    assert "hi {{ input.name }}" in changed.canonical()
    # the time budget the checks used, and hopflow itself: other keys
    data = flow.read_bytes()
    assert cache.key(data, 7500) != cache.key(data, 5000)
    before = cache.key(data, 7500)
    monkeypatch.setattr(cache_module, "_fingerprint", ["another hopflow"])
    assert cache.key(data, 7500) != before


def test_the_fingerprint_covers_the_dsl_sources_and_the_schemas() -> None:
    cache_module._fingerprint.clear()  # computed again from the files
    first = cache_module.fingerprint()
    assert len(first) == 64 and first == cache_module.fingerprint()
    # computed from files on disk: the same in another process
    proc = subprocess.run(
        [sys.executable, "-c", "from dsl.cache import fingerprint; print(fingerprint())"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert proc.stdout.strip() == first


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not json", "graph edited", "hash edited", "another key", "another format", "empty"],
)
def test_a_damaged_entry_is_ignored_and_rebuilt(
    damage: str, flow: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = GraphCache(tmp_path / "cache")
    graph, _ = compile_file(flow, cache=cache)
    assert graph is not None
    (entry,) = _entries(tmp_path / "cache")
    raw = entry.read_text()
    data = json.loads(raw)
    if damage == "truncated":
        entry.write_text(raw[: len(raw) // 2])
    elif damage == "not json":
        entry.write_bytes(b"\x00\xff garbage")
    elif damage == "graph edited":  # e.g. someone swapped a step: the hash no longer matches
        data["graph"]["nodes"]["greet"]["config"]["vars"]["greeting"] = "pwned"
        entry.write_text(json.dumps(data))
    elif damage == "hash edited":
        data["hash"] = "0" * 64
        entry.write_text(json.dumps(data))
    elif damage == "another key":
        data["key"] = "f" * 64
        entry.write_text(json.dumps(data))
    elif damage == "another format":
        data["format"] = 999
        entry.write_text(json.dumps(data))
    else:
        entry.write_text("")
    key = cache.key(flow.read_bytes(), 7500)
    with caplog.at_level(logging.WARNING, logger="hopflow.cache"):
        assert cache.get(key) is None
    assert "ignoring" in caplog.text and "rebuilt" in caplog.text
    again, errors = compile_file(flow, cache=cache)
    assert errors == [] and again is not None and again.hash == graph.hash
    assert "pwned" not in again.canonical()
    assert cache.get(key) == graph  # rewritten whole


def test_concurrent_writers_leave_one_whole_entry_and_no_temporary_files(flow: Path, tmp_path: Path) -> None:
    cache = GraphCache(tmp_path / "cache")
    graph, _ = compile_file(flow)
    assert graph is not None
    key = cache.key(flow.read_bytes(), 7500)
    results: list[bool] = []
    seen: list[Any] = []

    def writer() -> None:
        for _ in range(25):
            results.append(GraphCache(tmp_path / "cache").put(key, graph))
            seen.append(GraphCache(tmp_path / "cache").get(key))  # a reader never sees half an entry

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results) and len(results) == 150
    assert all(g == graph for g in seen)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.json"]


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership")
def test_a_folder_or_entry_others_can_write_is_not_trusted(
    flow: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    graph, _ = compile_file(flow, cache=GraphCache(folder))
    assert graph is not None
    key = GraphCache(folder).key(flow.read_bytes(), 7500)
    (entry,) = _entries(folder)

    entry.chmod(0o666)  # anyone may rewrite this entry: skipped
    with caplog.at_level(logging.WARNING, logger="hopflow.cache"):
        assert GraphCache(folder).get(key) is None
    assert "writable by others" in caplog.text
    entry.chmod(0o600)
    assert GraphCache(folder).get(key) == graph

    folder.chmod(0o777)  # anyone may replace entries: the folder is not used at all
    caplog.clear()
    try:
        unsafe = GraphCache(folder)
        with caplog.at_level(logging.WARNING, logger="hopflow.cache"):
            assert unsafe.get(key) is None
            assert unsafe.put(key, graph) is False
        assert "writable by nobody else" in caplog.text
        asked = _refuse_compiles(monkeypatch)
        with pytest.raises(AssertionError):
            compile_file(flow, cache=unsafe)  # so the file is compiled, not read from the cache
        assert asked == [str(flow)]
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_cache_is_read_and_never_breaks_a_compile(flow: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    other = flow.parent / "other.yaml"
    other.write_text(FLOW.replace("name: cached", "name: other"))
    compile_file(flow, cache=GraphCache(folder))
    folder.chmod(0o500)  # a serverless bundle: shipped warm, read-only
    try:
        catalog = Catalog.from_directory(flow.parent, cache=GraphCache(folder))
        assert catalog.names() == ["cached", "other"]
        assert len(_entries(folder)) == 1
    finally:
        folder.chmod(0o700)


def test_invalid_files_are_never_cached(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "bad.yaml").write_text("name: bad\nsteps:\n  - id: a\n    set: {x: '{{ nope(}}'}\n")
    with pytest.raises(CatalogError):
        Catalog.from_directory(folder, cache=GraphCache(tmp_path / "cache"))
    assert _entries(tmp_path / "cache") == []


def test_settings_choose_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert GraphCache.from_setting("off") is None and GraphCache.from_setting(" OFF ") is None
    chosen = GraphCache.from_setting(str(tmp_path / "mine"))
    assert chosen is not None and chosen.directory == tmp_path / "mine"
    default = GraphCache.from_setting(None)
    assert default is not None and default.directory == tmp_path / ".hopflow" / "cache"
    assert not (tmp_path / ".hopflow").exists()  # created by the first entry written, not before
    assert GraphCache.from_env({"HOPFLOW_CACHE_DIR": "off"}) is None


def test_a_read_only_cache_reads_and_writes_nothing(flow: Path, tmp_path: Path) -> None:
    compile_file(flow, cache=GraphCache(tmp_path / "warm"))
    warm = GraphCache(tmp_path / "warm", read_only=True)
    assert warm.get(warm.key(flow.read_bytes(), 7500)) is not None
    cold = GraphCache(tmp_path / "cold", read_only=True)
    graph, errors = compile_file(flow, cache=cold)
    assert graph is not None and errors == []
    assert not (tmp_path / "cold").exists()


def test_a_warm_catalog_in_a_fresh_process_imports_no_yaml_or_json_schema(flow: Path, tmp_path: Path) -> None:
    """The point of the cache: a cold start reads compiled graphs (module sets, never time)."""
    folder = tmp_path / "cache"
    Catalog.from_directory(flow.parent, cache=GraphCache(folder))
    code = (
        "import json, sys\n"
        "from dsl.cache import GraphCache\n"
        "from engine.catalog import Catalog\n"
        f"c = Catalog.from_directory({str(flow.parent)!r}, cache=GraphCache({str(folder)!r}))\n"
        "assert c.names() == ['cached']\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = set(json.loads(proc.stdout))
    heavy = ("yaml", "jsonschema", "dsl.validate", "dsl.schema", "dsl.source", "dsl.compiler", "dsl.checks")
    assert sorted(m for m in loaded if m in heavy or m.startswith(tuple(h + "." for h in heavy))) == []


def test_hopflow_compile_cache_fills_the_cache_for_a_build(tmp_path: Path, flow: Path) -> None:
    hopflow = Path(sys.executable).parent / "hopflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPFLOW_")}
    folder = tmp_path / "built-cache"

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(hopflow), "compile", *args],
            capture_output=True,
            text=True,
            env={**env, **extra},
            cwd=tmp_path,
        )

    first = run("--cache", "--cache-dir", str(folder), str(flow.parent))
    assert first.returncode == 0, first.stderr
    assert "1 written, 0 already there" in first.stderr
    second = run("--cache", str(flow.parent), HOPFLOW_CACHE_DIR=str(folder))
    assert second.returncode == 0 and "0 written, 1 already there" in second.stderr
    # the server's catalog (same default time budget) finds it
    key = GraphCache(folder).key(flow.read_bytes(), 7500)
    assert GraphCache(folder).get(key) is not None
    # HOPFLOW_WORKFLOWS is the default folder
    third = run("--cache", "--cache-dir", str(tmp_path / "c3"), HOPFLOW_WORKFLOWS=str(flow.parent))
    assert third.returncode == 0 and "1 written" in third.stderr

    (flow.parent / "broken.yaml").write_text("name: broken\nsteps: 3\n")
    bad = run("--cache", "--cache-dir", str(folder), str(flow.parent))
    assert bad.returncode == 1
    assert "broken.yaml" in bad.stderr and "1 file(s) with errors (not cached)" in bad.stderr
    assert "Traceback" not in bad.stderr

    off = run("--cache", str(flow.parent), HOPFLOW_CACHE_DIR="off")
    assert off.returncode == 2 and off.stderr.count("\n") == 1 and "off" in off.stderr
    usage = run(str(flow), str(flow))
    assert usage.returncode == 2 and "give one workflow file" in usage.stderr
    printed = run(str(flow))
    assert printed.returncode == 0 and json.loads(printed.stdout)["graph"]["name"] == "cached"


# --------------------------------------------------------------------- compiled template code


@pytest.fixture
def code_cache(tmp_path: Path) -> Any:
    """dsl.templates with a code cache in ``tmp_path`` (and an empty in-process cache around it)."""
    from dsl import templates

    cache = GraphCache(tmp_path / "code")
    templates._compiled.cache_clear()
    templates.set_code_cache(cache)
    try:
        yield cache
    finally:
        templates.set_code_cache(None)
        templates._compiled.cache_clear()


def _from_disk_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Jinja2 parse or compile from now on fails the test: templates must come from the cache."""
    from dsl import templates

    templates._compiled.cache_clear()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a template was parsed or compiled although its code is cached")

    monkeypatch.setattr(templates, "parse", refuse)
    monkeypatch.setattr(type(templates.environment()), "compile", refuse)


SAMPLES = {
    "hello {{ input.name }}": {"input": {"name": "ada"}},
    "{{ input.items | length }}": {"input": {"items": [1, 2, 3]}},
    "{% for x in input.items %}{{ x * 2 }},{% endfor %}": {"input": {"items": [1, 2, 3]}},
    "{{ {'a': input.items[0]} | tojson }}": {"input": {"items": [7]}},
    "{{ duration('2h') }}": {},
}


def test_templates_render_the_same_from_cached_code(code_cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsl.templates import render_string

    expected = {source: render_string(source, scope) for source, scope in SAMPLES.items()}
    assert len(list(code_cache.directory.glob("*.jinja"))) == len(SAMPLES)
    _from_disk_only(monkeypatch)
    assert {source: render_string(source, scope) for source, scope in SAMPLES.items()} == expected


def test_cached_code_keeps_every_sandbox_bound(code_cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The template-limits cases, loaded from the code cache: the same template.limit / refusals."""
    from test_template_limits import CPU, GROWTH, SCOPE

    from dsl import template_limits as limits
    from dsl.templates import TemplateError, TemplateLimit, render_string

    hostile = [*GROWTH.values(), *CPU.values()]
    refused = [
        "{{ input.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ input.items.pop() }}",
    ]

    def outcomes() -> list[str]:
        seen = []
        for source in hostile:
            with limits.budget(seconds=3600):
                with pytest.raises(TemplateLimit) as caught:
                    render_string(source, SCOPE)
            seen.append(caught.value.message.split(":")[0])
        for source in refused:
            with pytest.raises(TemplateError) as error:
                render_string(source, SCOPE)
            seen.append(type(error.value).__name__)
        return seen

    first = outcomes()
    assert set(first[: len(hostile)]) == {"template limit"}
    _from_disk_only(monkeypatch)
    assert outcomes() == first


@pytest.mark.parametrize("damage", ["checksum", "payload", "not code"])
def test_damaged_template_code_is_compiled_again(
    damage: str, code_cache: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import marshal

    from dsl import templates

    source = "hello {{ input.name }}"
    assert templates.render_string(source, {"input": {"name": "a"}}) == "hello a"
    (entry,) = code_cache.directory.glob("*.jinja")
    key = entry.name.removesuffix(".jinja")
    if damage == "checksum":
        entry.write_bytes(entry.read_bytes()[:-5] + b"xxxxx")
    elif damage == "payload":  # a valid checksum over bytes that are not marshal data
        assert code_cache.put_code(key, b"\x00garbage")
    else:  # valid marshal data, but not a template's code
        assert code_cache.put_code(key, marshal.dumps((True, "print('hi')")))
    templates._compiled.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hopflow.cache"):
        assert templates.render_string(source, {"input": {"name": "b"}}) == "hello b"
    assert "ignoring" in caplog.text
    templates._compiled.cache_clear()
    assert marshal.loads(code_cache.get_code(key))[0] is False  # rewritten whole
