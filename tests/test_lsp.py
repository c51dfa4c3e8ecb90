"""``hopflow lsp`` driven as a real subprocess over stdio: JSON-RPC with Content-Length framing."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lsp.analysis import SCOPES, Analysis
from engine.lsp.positions import UTF8, UTF16, UTF32, from_client, to_client

pytest.importorskip("pygls")

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0  # generous: a bound on a hang, not a timing assertion


class Client:
    """A minimal LSP client: frames messages, matches responses to requests, queues notifications."""

    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "lsp"],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        self.pending: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            headers: dict[str, str] = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.decode("ascii").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = stream.read(int(headers["content-length"]))
            self.messages.put(json.loads(body.decode("utf-8")))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        assert self.process.stdin is not None
        self.process.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body)
        self.process.stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        ident = self.next_id
        self.send({"id": ident, "method": method, "params": params})
        message = self._wait(lambda m: m.get("id") == ident and "method" not in m)
        assert "error" not in message, message
        return message.get("result")

    def notification(self, method: str, where: Callable[[dict[str, Any]], bool] = lambda p: True) -> Any:
        message = self._wait(lambda m: m.get("method") == method and where(m.get("params", {})))
        return message["params"]

    def _wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for i, message in enumerate(self.pending):
            if match(message):
                return self.pending.pop(i)
        while True:
            try:
                message = self.messages.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError("the language server did not answer") from None
            if match(message):
                return message
            self.pending.append(message)

    def close(self) -> int:
        self.request("shutdown", {})
        self.notify("exit", {})
        try:
            return self.process.wait(timeout=WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[Client]:
    c = Client(tmp_path)
    result = c.request(
        "initialize",
        {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {}},
    )
    assert result["capabilities"]["hoverProvider"]
    assert result["capabilities"]["definitionProvider"]
    assert "." in result["capabilities"]["completionProvider"]["triggerCharacters"]
    c.notify("initialized", {})
    yield c
    assert c.close() == 0


WORKFLOW = textwrap.dedent(
    """\
    name: demo
    input:
      type: object
      required: [who]
      properties: {who: {type: string}}
    steps:
      - id: greet
        action: demo.hello
        with: {who: "{{ input.who }}"}
      - id: check
        switch:
          - if: "{{ steps.greet.output.ok }}"
            goto: done
      - id: again
        action: demo.hello
        next: greet
      - id: done
        succeed: {output: "{{ steps.greet.output }}"}
    """
)


def _open(client: Client, path: Path, text: str) -> list[dict[str, Any]]:
    path.write_text(text, encoding="utf-8")
    uri = path.as_uri()
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}},
    )
    return client.notification("textDocument/publishDiagnostics", lambda p: p["uri"] == uri)["diagnostics"]


def _at(text: str, needle: str, offset: int = 0) -> dict[str, int]:
    """The LSP position (UTF-16) of ``needle``'s first occurrence plus ``offset`` characters."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    start = text.rfind("\n", 0, index) + 1
    return {"line": line, "character": to_client(text.split("\n")[line], index - start)}


def test_diagnostics_on_open_and_as_you_type(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    assert _open(client, path, WORKFLOW) == []
    broken = WORKFLOW.replace("goto: done", "goto: dne").replace(
        "action: demo.hello\n    next", "actoin: x.y\n    next"
    )
    client.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": path.as_uri(), "version": 2},
            "contentChanges": [{"text": broken}],
        },
    )
    published = client.notification("textDocument/publishDiagnostics", lambda p: p["uri"] == path.as_uri())
    found = {(d["code"], d["range"]["start"]["line"], d["severity"]) for d in published["diagnostics"]}
    from dsl.validate import validate_text

    expected = {
        (d.rule, d.position.line - 1, {"error": 1, "warning": 2, "info": 3}[d.severity])
        for d in validate_text(broken, str(path)).diagnostics
    }
    assert found == expected  # every diagnostic of `hopflow validate`, nothing else
    assert ("unknown-target", 12, 1) in found
    assert all(d["source"] == "hopflow" for d in published["diagnostics"])


def test_incremental_change_and_utf16_columns(client: Client, tmp_path: Path) -> None:
    # an emoji (two UTF-16 units, one code point) before the culprit shifts the LSP column by one
    text = WORKFLOW.replace("name: demo", 'name: demo\ndescription: "🙂 greets"').replace(
        'with: {who: "{{ input.who }}"}', 'with: {who: "🙂{{ input.whom }}"}'
    )
    path = tmp_path / "emoji.yaml"
    diagnostics = _open(client, path, text)
    (d,) = [d for d in diagnostics if d["code"] == "input-reference"]
    line = text.split("\n")[d["range"]["start"]["line"]]
    code_points = line.index("whom")
    assert d["range"]["start"]["character"] == code_points + 1  # the emoji counts twice in UTF-16
    assert d["range"]["end"]["character"] - d["range"]["start"]["character"] == len("whom")
    # an incremental edit (a range in UTF-16 units) fixes the name: the diagnostic goes away
    start = {"line": d["range"]["start"]["line"], "character": d["range"]["start"]["character"]}
    end = {"line": start["line"], "character": start["character"] + len("whom")}
    client.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": path.as_uri(), "version": 2},
            "contentChanges": [{"range": {"start": start, "end": end}, "text": "who"}],
        },
    )
    published = client.notification("textDocument/publishDiagnostics", lambda p: p["uri"] == path.as_uri())
    assert [d for d in published["diagnostics"] if d["code"] == "input-reference"] == []


def test_hover_step_kinds_references_and_template_scopes(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    _open(client, path, WORKFLOW)
    uri = path.as_uri()

    def hover(position: dict[str, int]) -> str:
        result = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": position})
        return result["contents"]["value"] if result else ""

    assert "step kind" in hover(_at(WORKFLOW, "switch:", 2)) and "jump" in hover(_at(WORKFLOW, "switch:", 2))
    on_goto = hover(_at(WORKFLOW, "goto: done", 7))
    assert "step `done`" in on_goto and "`succeed` step" in on_goto
    on_ref = hover(_at(WORKFLOW, "steps.greet.output.ok", 7))
    assert "step `greet`" in on_ref and "`action` step" in on_ref
    assert "start payload" in hover(_at(WORKFLOW, "input.who", 1))
    assert "template scope" in hover(_at(WORKFLOW, "steps.greet.output.ok", 1))


def test_completion_of_step_ids_in_jumps_and_templates(client: Client, tmp_path: Path) -> None:
    text = WORKFLOW.replace("next: greet", "next: gr").replace("{{ steps.greet.output }}", "{{ steps. }}")
    path = tmp_path / "demo.yaml"
    _open(client, path, text)

    def labels(position: dict[str, int]) -> set[str]:
        result = client.request(
            "textDocument/completion", {"textDocument": {"uri": path.as_uri()}, "position": position}
        )
        items = result["items"] if isinstance(result, dict) else result
        return {i["label"] for i in items}

    ids = {"greet", "check", "again", "done"}
    assert labels(_at(text, "next: gr", len("next: gr"))) == ids
    assert labels(_at(text, "{{ steps. }}", len("{{ steps."))) == ids
    assert set(SCOPES) == labels(_at(text, "{{ input.who }}", 3))


def test_go_to_definition_of_step_references(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    _open(client, path, WORKFLOW)
    uri = path.as_uri()

    def definition(position: dict[str, int]) -> tuple[int, int] | None:
        result = client.request(
            "textDocument/definition", {"textDocument": {"uri": uri}, "position": position}
        )
        if not result:
            return None
        location = result[0] if isinstance(result, list) else result
        assert location["uri"] == uri
        return location["range"]["start"]["line"], location["range"]["start"]["character"]

    greet = _at(WORKFLOW, "id: greet", 4)
    assert definition(_at(WORKFLOW, "next: greet", 7)) == (greet["line"], greet["character"])
    assert definition(_at(WORKFLOW, "steps.greet.output.ok", 8)) == (greet["line"], greet["character"])
    done = _at(WORKFLOW, "id: done", 4)
    assert definition(_at(WORKFLOW, "goto: done", 6)) == (done["line"], done["character"])
    assert definition(_at(WORKFLOW, "demo.hello", 1)) is None


def test_folder_rules_read_the_sibling_files(client: Client, tmp_path: Path) -> None:
    (tmp_path / "a-first.yaml").write_text("name: demo\nsteps:\n  - id: a\n    action: x.y\n")
    diagnostics = _open(client, tmp_path / "demo.yaml", WORKFLOW)
    assert {d["code"] for d in diagnostics} == {"duplicate-workflow-name"}
    caller = "name: caller\nsteps:\n  - id: c\n    workflow: {name: child}\n"
    diagnostics = _open(client, tmp_path / "caller.yaml", caller)
    assert {d["code"] for d in diagnostics} == {"unknown-workflow"}
    # the child exists once it is written, even before it is saved: open buffers count
    diagnostics = _open(client, tmp_path / "child.yaml", "name: child\nsteps:\n  - id: a\n    action: x.y\n")
    assert diagnostics == []
    client.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": (tmp_path / "caller.yaml").as_uri(), "version": 2},
            "contentChanges": [{"text": caller}],
        },
    )
    published = client.notification(
        "textDocument/publishDiagnostics", lambda p: p["uri"] == (tmp_path / "caller.yaml").as_uri()
    )
    assert published["diagnostics"] == []


def test_a_missing_pygls_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "pygls.py").write_text("raise ModuleNotFoundError('No module named pygls', name='pygls')\n")
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "lsp"],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "hopflow lsp: the language server needs pygls: pip install 'hopflow[lsp]'"


@pytest.mark.parametrize(
    ("line", "index", "utf16", "utf8"),
    [("abc", 2, 2, 2), ("é=x", 2, 2, 3), ("🙂x", 1, 2, 4), ("a🙂🙂b", 3, 5, 9)],
)
def test_columns_convert_between_code_points_and_client_units(
    line: str, index: int, utf16: int, utf8: int
) -> None:
    assert to_client(line, index, UTF16) == utf16 and from_client(line, utf16, UTF16) == index
    assert to_client(line, index, UTF8) == utf8 and from_client(line, utf8, UTF8) == index
    assert to_client(line, index, UTF32) == index == from_client(line, index, UTF32)


def test_a_half_typed_file_still_has_step_ids() -> None:
    text = "name: t\nsteps:\n  - id: first\n    action: x.y\n  - id: second\n    next: fi\n    action: [\n"
    a = Analysis(text)
    assert a.doc is None  # the YAML does not load
    assert set(a.steps) == {"first", "second"} and a.steps["first"].kind == "action"
    assert {label for label, *_ in a.completions(5, len("    next: fi"))} == {"first", "second"}
