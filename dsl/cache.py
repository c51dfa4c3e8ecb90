"""Compiled graphs cached on disk by content hash, so a cold start reads JSON instead of running the
whole pipeline (YAML, JSON Schema, compile, every check) on each workflow file.

An entry's key is a SHA-256 over hopflow's own fingerprint (the bytes of every ``dsl`` source file
and JSON Schema that shipped — an upgrade, or an edit in a checkout, changes it), the time budget the
checks judged the file against, and the file's exact bytes. Only graphs that validated without errors
are written, so a hit stands for "this file, compiled by this hopflow, was valid".

Robustness: entries are written to a temporary file in the same folder and renamed into place
(readers see a whole entry or none; concurrent writers of one key write the same bytes); an entry
that does not parse, has another key, or whose graph does not hash to the hash it records is
ignored (and rewritten by the compile that follows), never trusted as it is.

Trust: the cache is a performance aid, not a trust boundary. Whoever can write to its folder can
make the server run a graph of their choice — exactly as whoever can write to the workflow files
can. So only a folder owned by this user (or root) and writable by nobody else is used, and only
entries with the same ownership; anything else is skipped with a warning. docs/deploy.md says where
the folder goes on each platform. Pure: depends on ``dsl.graph`` only, never on ``engine``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path

from dsl.graph import FORMAT, Graph

log = logging.getLogger("hopflow.cache")

ENV = "HOPFLOW_CACHE_DIR"
OFF = frozenset({"off", "0", "false", "no", "none"})
DEFAULT_DIR = Path(".hopflow") / "cache"
CACHE_FORMAT = 1  # bump when an entry's layout changes
MAX_ENTRY_BYTES = 64 * 1024 * 1024  # a graph is far smaller; a huge file is not read
CODE_SUFFIX = ".jinja"
_CODE_MAGIC = b"hopflow-template-code 1 "


_fingerprint_lock = threading.Lock()
_fingerprint: list[str] = []


def fingerprint() -> str:
    """SHA-256 of every ``dsl`` source file and shipped JSON Schema (computed once per process)."""
    with _fingerprint_lock:
        if not _fingerprint:
            import schemas

            digest = hashlib.sha256(f"hopflow-graph-cache {CACHE_FORMAT} {FORMAT}\n".encode())
            roots = ((Path(__file__).parent, "*.py"), (Path(schemas.__file__).parent, "*.json"))
            for root, pattern in roots:
                for path in sorted(root.rglob(pattern)):
                    if "__pycache__" in path.parts:
                        continue
                    digest.update(f"{path.relative_to(root.parent).as_posix()}\n".encode())
                    digest.update(hashlib.sha256(path.read_bytes()).digest())
            _fingerprint.append(digest.hexdigest())
        return _fingerprint[0]


def _private(mode: int, uid: int) -> bool:
    """Owned by this user or root, writable by nobody else."""
    if not hasattr(os, "getuid"):  # pragma: no cover - Windows: no POSIX ownership to check
        return True
    return uid in (os.getuid(), 0) and not mode & (stat.S_IWGRP | stat.S_IWOTH)


class GraphCache:
    """One cache folder. :meth:`get` and :meth:`put` never raise: a cache that cannot be read or
    written only costs the compile it would have saved."""

    def __init__(self, directory: str | Path, *, read_only: bool = False) -> None:
        self.directory = Path(directory)
        self.read_only = read_only  # look entries up, never write (a preflight that changes nothing)
        self._usable: bool | None = None
        self._warned = False

    @classmethod
    def from_setting(cls, setting: str | None, *, read_only: bool = False) -> GraphCache | None:
        """``HOPFLOW_CACHE_DIR``'s value: a folder, ``off`` (no cache), or unset for the default —
        ``.hopflow/cache`` below the working directory when it exists or the working directory is
        writable, else a private folder in the temp directory (a read-only serverless bundle without a
        cache). Nothing is created until the first entry is written."""
        if setting is not None and setting.strip().lower() in OFF:
            return None
        if setting is not None and setting.strip():
            return cls(Path(setting.strip()).expanduser(), read_only=read_only)
        try:
            here = Path.cwd() / DEFAULT_DIR
            if here.is_dir() or os.access(here.parent.parent, os.W_OK):
                return cls(here, read_only=read_only)
        except OSError:  # no working directory any more: the temp folder will do
            pass
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        return cls(Path(tempfile.gettempdir()) / f"hopflow-cache-{uid}", read_only=read_only)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> GraphCache | None:
        return cls.from_setting((os.environ if env is None else env).get(ENV))

    # ------------------------------------------------------------------------------------ entries

    def key(self, data: bytes, time_budget_ms: int) -> str:
        digest = hashlib.sha256(f"{fingerprint()}\n{int(time_budget_ms)}\n".encode())
        digest.update(data)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> Graph | None:
        """The graph cached under ``key``, or None (missing, unreadable, corrupt, not ours)."""
        path = self.path(key)
        raw = self._read(path)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            if entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
                raise ValueError("another key or format")
            graph = Graph.from_dict(entry["graph"])
            if graph.hash != entry.get("hash"):
                raise ValueError("the graph does not hash to the hash the entry records")
        except Exception as exc:  # anything at all: a corrupt entry is rebuilt, never trusted
            log.warning("graph cache: ignoring %s (%s: %s); it is rebuilt", path, type(exc).__name__, exc)
            return None
        return graph

    def put(self, key: str, graph: Graph) -> bool:
        """Write ``graph`` under ``key`` atomically (temporary file + rename); False when it cannot."""
        graph = graph if graph.hash else graph.with_hash()
        entry = {"format": CACHE_FORMAT, "key": key, "hash": graph.hash, "graph": graph.to_dict()}
        data = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        return self._write(self.path(key), data)

    # ------------------------------------------------------------------ compiled template code

    # Jinja2's compiled code for one template source (dsl/templates.py): a cold start that finds it
    # skips Jinja's lexer, parser and code generator. It is Python code that will run, so the same
    # ownership rules hold, and a checksum guards against a torn or damaged file before unmarshalling.

    def code_key(self, source: str, salt: str) -> str:
        """``salt``: what else the code depends on (Jinja2's version, Python's bytecode magic)."""
        digest = hashlib.sha256(f"{fingerprint()}\n{salt}\ntemplate\n".encode())
        digest.update(source.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def code_path(self, key: str) -> Path:
        return self.directory / f"{key}{CODE_SUFFIX}"

    def get_code(self, key: str) -> bytes | None:
        """The payload stored under ``key`` when its checksum holds, else None."""
        path = self.code_path(key)
        raw = self._read(path)
        if raw is None:
            return None
        header, _, payload = raw.partition(b"\n")
        if header != _CODE_MAGIC + hashlib.sha256(payload + key.encode()).hexdigest().encode():
            log.warning("graph cache: ignoring %s (damaged); it is rebuilt", path)
            return None
        return payload

    def put_code(self, key: str, payload: bytes) -> bool:
        checksum = hashlib.sha256(payload + key.encode()).hexdigest().encode()
        return self._write(self.code_path(key), _CODE_MAGIC + checksum + b"\n" + payload)

    # ------------------------------------------------------------------------------------ files

    def _read(self, path: Path) -> bytes | None:
        """An entry's bytes when the folder and the file may be trusted (see the module docstring)."""
        if not self._check():
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None  # the common miss
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or not _private(info.st_mode, info.st_uid):
                self._warn(f"{path}: skipped (not a regular file owned by this user, or writable by others)")
                return None
            if info.st_size > MAX_ENTRY_BYTES:
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read()
        except OSError:
            return None
        finally:
            os.close(fd)

    def _write(self, path: Path, data: bytes) -> bool:
        """Write atomically: a temporary file in the same folder, renamed into place."""
        if self.read_only or not self._check(create=True):
            return False
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            tmp = None
            return True
        except OSError as exc:
            log.debug("graph cache: cannot write %s: %s", self.directory, exc)
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    # ------------------------------------------------------------------------------------- folder

    def _check(self, *, create: bool = False) -> bool:
        """Whether the folder may be used: it exists (created private when ``create``), is a folder,
        and is owned by this user or root and writable by nobody else. Decided once."""
        if self._usable is not None:
            return self._usable
        if create:
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                log.debug("graph cache: cannot create %s: %s", self.directory, exc)
                return False
        try:
            info = os.stat(self.directory)
        except OSError:
            return False  # not there (yet): nothing to read; a put creates it
        if not stat.S_ISDIR(info.st_mode) or not _private(info.st_mode, info.st_uid):
            self._warn(
                f"{self.directory}: not used as the graph cache (it must be a folder owned by this "
                "user and writable by nobody else)"
            )
            self._usable = False
            return False
        self._usable = True
        return True

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("graph cache: %s", message)
