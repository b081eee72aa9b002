"""Redis and ClickHouse access: one factory each.

ClickHouse runs embedded (``chdb://<dir>``) on a laptop and in tests, and as a server
(``http(s)://user:pass@host:8123/db`` through clickhouse-connect) in a cluster; both take
the same SQL. chdb allows one process per data directory.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Protocol
from urllib.parse import urlparse

import msgspec
import redis
from pydantic import SecretStr

from adwatch.errors import AdwatchError


class StorageError(AdwatchError):
    """A storage URL is malformed or the store rejected a statement."""


def _reveal(url: str | SecretStr) -> str:
    return url.get_secret_value() if isinstance(url, SecretStr) else url


def make_redis(url: str | SecretStr) -> redis.Redis:
    """A Redis client; the URL (and its password) stays out of every message and repr."""
    return redis.Redis.from_url(_reveal(url), socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


class ClickHouse(Protocol):
    def command(self, sql: str) -> None: ...

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None: ...


_TOKEN = re.compile(r"[A-Za-z0-9_.:|-]{1,256}")


def insert_json_sql(table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> str:
    """One INSERT ... FORMAT JSONEachRow statement: the same SQL for chdb and a server.

    ``dedup_token``: ClickHouse drops an insert whose token it has seen (on a table with
    ``non_replicated_deduplication_window``), so a replayed micro-batch writes nothing twice.
    """
    body = b"\n".join(msgspec.json.encode(row) for row in rows).decode()
    settings = ""
    if dedup_token is not None:
        if not _TOKEN.fullmatch(dedup_token):
            raise StorageError(f"a deduplication token is letters, digits and _.:|- only: {dedup_token!r}")
        settings = f" SETTINGS insert_deduplication_token = '{dedup_token}'"
    return f"INSERT INTO {table}{settings} FORMAT JSONEachRow\n{body}"


class EmbeddedClickHouse:
    """chdb session on a data directory; thread-safe through one lock."""

    def __init__(self, path: str) -> None:
        from chdb import session

        open_session: Any = session.Session  # chdb ships no type hints
        self._session: Any = open_session(path)
        self._lock = threading.Lock()

    def command(self, sql: str) -> None:
        with self._lock:
            self._session.query(sql)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import json

        with self._lock:
            result = self._session.query(sql, "JSONCompact")
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        if not text.strip():
            return []
        return [tuple(row) for row in json.loads(text)["data"]]

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        if rows:
            self.command(insert_json_sql(table, rows, dedup_token))

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ServerClickHouse:
    """A ClickHouse server through clickhouse-connect (HTTP)."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        parsed = urlparse(url)
        self._client = clickhouse_connect.get_client(
            host=parsed.hostname or "localhost",
            port=parsed.port or 8123,
            username=parsed.username or "default",
            password=parsed.password or "",
            database=(parsed.path or "/default").lstrip("/") or "default",
            secure=parsed.scheme == "https",
        )

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._client.query(sql).result_rows]

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        if rows:
            self._client.command(insert_json_sql(table, rows, dedup_token))


def make_clickhouse(url: str | SecretStr) -> EmbeddedClickHouse | ServerClickHouse:
    url = _reveal(url)
    scheme = url.split("://", 1)[0]
    if scheme == "chdb":
        return EmbeddedClickHouse(url.split("://", 1)[1])
    if scheme in ("http", "https"):
        return ServerClickHouse(url)
    raise StorageError(f"unsupported ClickHouse URL scheme {scheme!r}: use chdb://<dir> or http(s)://host:port/db")
