"""A minimal QMP (QEMU Machine Protocol) client: enough to stop, save, restore, resume and quit a VM.

QMP is line-delimited JSON over a unix socket: a greeting, ``qmp_capabilities``, then one ``{"execute": ...}``
per command answered by ``{"return": ...}`` or ``{"error": ...}``, with asynchronous ``{"event": ...}`` lines in
between (skipped here).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from vm.errors import VmError


class QmpError(VmError):
    """QMP refused a command or the socket went away."""


class QmpClient:
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def connect(self, deadline: float) -> None:
        """Connect once qemu has created the socket; give up at ``deadline`` (monotonic)."""
        last: OSError | None = None
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                last = exc
                time.sleep(0.05)
                continue
            self._sock = sock
            self._read_message()  # greeting
            self.execute("qmp_capabilities")
            return
        raise QmpError(f"QMP socket {self.path} not available: {last}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_message(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise QmpError(f"QMP socket {self.path} closed")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        if self._sock is None:
            raise QmpError("QMP not connected")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            while True:
                message = self._read_message()
                if "event" in message:
                    continue
                if "error" in message:
                    raise QmpError(f"QMP {command}: {message['error'].get('desc', message['error'])}")
                return message.get("return")
        except OSError as exc:
            raise QmpError(f"QMP {command}: {exc}") from exc

    def wait_migration(self, timeout: float) -> dict[str, Any]:
        """Poll ``query-migrate`` until the migration completed; raise when it failed or timed out."""
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = self.execute("query-migrate") or {}
            status = info.get("status")
            if status == "completed":
                return info
            if status in ("failed", "cancelled"):
                raise QmpError(f"migration {status}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise QmpError(f"migration not completed after {timeout:.0f} s (status {status})")
            time.sleep(0.05)
