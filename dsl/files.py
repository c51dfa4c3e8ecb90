"""Workflow files on disk: which files a folder holds, and reading one safely.

Kept apart from :mod:`dsl.validate` (which loads YAML and JSON Schema) so that code which only needs
the files and their bytes — the graph cache on a server's cold start — imports nothing heavy.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")


def is_test_file(path: str | Path) -> bool:
    return str(path).endswith(TEST_SUFFIXES)


def workflow_files(path: str | Path, *, tests: bool = False) -> list[Path]:
    """A file as given; a folder → every ``*.yaml``/``*.yml`` below it (recursively, sorted), skipping
    hidden folders such as ``.git`` or ``.github``, and test files (``*.test.yaml``) unless ``tests``."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    found = [
        p
        for p in path.rglob("*")
        if p.suffix in SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and (tests or not is_test_file(p))
    ]
    return sorted(found)


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file; anything else (a FIFO, a device, a folder) is refused without
    reading, so validating never blocks on a pipe or reads a device forever. Opened non-blocking and
    checked on the open descriptor, so a file swapped for a pipe in between cannot hang it either."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(0, "it is a folder")
        if not stat.S_ISREG(mode):
            kind = "it is a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "it is not a regular file"
            raise OSError(0, f"{kind}; skipped")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)
