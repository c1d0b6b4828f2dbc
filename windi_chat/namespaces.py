"""Channel namespaces: deployments that share a Redis or a PostgreSQL never see each other's events.

Redis pub/sub ignores the database number in the URL, and two deployments may LISTEN on one
PostgreSQL database: with bare channel names (``chat:1``), each would deliver the other's messages and
close the other's sockets. Every channel name a deployment publishes or subscribes carries its
namespace, ``WINDI_CHANNELS_NAMESPACE``, by default derived from the name of its database, which every
process of one deployment shares.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from pathlib import Path

from litestar.channels import ChannelsBackend
from sqlalchemy.engine import make_url

__all__ = ("MAX_NAMESPACE_LENGTH", "NAMESPACE_PATTERN", "NamespacedBackend", "default_namespace")

# PostgreSQL channel names are identifiers of at most 63 bytes; "chat:" and a 64-bit id take 25.
MAX_NAMESPACE_LENGTH = 32
NAMESPACE_PATTERN = r"^[A-Za-z0-9_.-]*$"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST_LENGTH = 8


def default_namespace(database_url: str) -> str:
    """The database's name (an SQLite file's absolute path, digested), fit for a channel name."""
    url = make_url(database_url)
    name = url.database or ""
    if url.get_backend_name() == "sqlite":
        path = str(Path(name).resolve()) if name and name != ":memory:" else name
        return _fit(f"sqlite-{Path(name).stem}", digest_of=path)
    return _fit(name, digest_of=name)


def _fit(name: str, digest_of: str) -> str:
    """``name`` when it is short and plain; otherwise a readable prefix and a digest of ``digest_of``."""
    if name and name == digest_of and len(name) <= MAX_NAMESPACE_LENGTH and not _UNSAFE.search(name):
        return name
    digest = hashlib.sha256(digest_of.encode()).hexdigest()[:_DIGEST_LENGTH]
    prefix = _UNSAFE.sub("_", name)[: MAX_NAMESPACE_LENGTH - _DIGEST_LENGTH - 1]
    return f"{prefix}-{digest}"


class NamespacedBackend(ChannelsBackend):
    """A channels backend whose channel names all carry ``namespace``; the app sees the bare names."""

    def __init__(
        self, backend: ChannelsBackend, namespace: str, close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.backend = backend
        self._prefix = f"{namespace}:"
        self._close = close  # releases what the backend does not release itself (its client's connections)

    def _names(self, channels: Iterable[str]) -> list[str]:
        return [self._prefix + channel for channel in channels]

    async def on_startup(self) -> None:
        await self.backend.on_startup()

    async def on_shutdown(self) -> None:
        await self.backend.on_shutdown()
        if self._close is not None:
            await self._close()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        await self.backend.publish(data, self._names(channels))

    async def subscribe(self, channels: Iterable[str]) -> None:
        await self.backend.subscribe(self._names(channels))

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await self.backend.unsubscribe(self._names(channels))

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        async for channel, data in self.backend.stream_events():
            if channel.startswith(self._prefix):  # only this deployment's channels are subscribed
                yield channel[len(self._prefix) :], data

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        return await self.backend.get_history(self._prefix + channel, limit)
