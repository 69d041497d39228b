"""Parallel transfers of one pull or push: a client per thread, and a quick stop for all when one fails.

Why: layers go up and down several at a time (docker's ``max-concurrent-uploads``/``-downloads``), each thread with
its own connection (a :class:`RegistryClient` is not shared between threads). When one transfer fails, or the
command is interrupted, the others must not run on to the end of their gigabytes: every connection is closed, so a
transfer still running fails at its next read or write, and the first failure is what the caller sees.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable

from runtime.errors import UsageError
from runtime.registry.client import RegistryClient


class ClientPool:
    """Clones of ``client``, one per thread that asks (``get``); ``close`` closes every one of them."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._local = threading.local()
        self._clients: list[RegistryClient] = []
        self._lock = threading.Lock()

    def get(self) -> RegistryClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self.client.clone()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        assert isinstance(client, RegistryClient)
        return client

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()

    def stop(self) -> None:
        """Stop every clone: transfers under way end at their next read or write (:meth:`RegistryClient.stop`)."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.stop()


def run_all(calls: list[Callable[[], object]], workers: int, pool: ClientPool) -> None:
    """Run ``calls`` in ``workers`` threads and return when all ended; raise the first failure. A failure or an
    interrupt cancels the calls not started and closes every connection of ``pool``, so running ones end soon."""
    first: list[BaseException] = []
    with concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="transfer") as executor:
        futures = [executor.submit(call) for call in calls]
        try:
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if error is not None:
                    first.append(error)
                    break
        except BaseException:  # interrupted while waiting: stop the transfers, then let the interrupt through
            executor.shutdown(wait=False, cancel_futures=True)
            pool.stop()
            raise
        if first:
            executor.shutdown(wait=False, cancel_futures=True)
            pool.stop()
    pool.close()
    if first:
        raise first[0]


def concurrency(env: str, default: int) -> int:
    """How many transfers run at once: ``env`` (1 to 32, as docker's max-concurrent-*), else ``default``."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 32:
        raise UsageError(f"invalid {env} {raw!r}: want a whole number from 1 to 32")
    return int(raw)
