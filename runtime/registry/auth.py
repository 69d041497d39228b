"""Registry authentication: the ``WWW-Authenticate`` challenge, Basic and Bearer token flows, stored logins.

A registry says how it wants to be authenticated in the 401 answer to ``GET /v2/``: ``Basic realm=...`` (the
htpasswd setup), or ``Bearer realm=URL,service=...,scope=...`` (a token server, as Docker Hub). For Bearer, the
client asks the realm for a token for the scopes it needs - sending the stored user and password as Basic
credentials when there are some, anonymously otherwise - and sends ``Authorization: Bearer <token>``.

Logins live where docker keeps them, so tools can share them: ``config.json`` in the client config directory
(``--config`` / ``REFRT_CONFIG``, default ``~/.refrt``) as ``{"auths": {"host:port": {"auth": base64(user:pass)}}}``,
mode 0600, rewritten atomically and keeping every key refrt does not know.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.registry.errors import RegistryError
from runtime.store.reference import DEFAULT_DOMAIN

CONFIG_FILE = "config.json"
#: The key docker uses for Docker Hub logins in config.json.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass
class Challenge:
    """One parsed challenge of a ``WWW-Authenticate`` header: the scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


# -- challenge parsing -----------------------------------------------------------------------------------------
def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _read_token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in " \t,=\"":
        i += 1
    return text[start:i], i


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; backslash escapes the next character."""
    out: list[str] = []
    i += 1
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i + 1


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``Bearer realm="https://a/token",service="reg",scope="repository:x:pull", Basic realm="r"``.

    Parameters are ``name=token`` or ``name="quoted string"`` (commas inside quotes are data, as in scopes with
    several actions); a token followed by a space and then ``name=`` starts a new challenge.
    """
    challenges: list[Challenge] = []
    current: Challenge | None = None
    i = 0
    while i < len(header):
        i = _skip_spaces(header, i)
        if i >= len(header):
            break
        if header[i] == ",":
            i += 1
            continue
        word, i = _read_token(header, i)
        if not word:
            i += 1
            continue
        j = _skip_spaces(header, i)
        if j < len(header) and header[j] == "=" and current is not None:
            j = _skip_spaces(header, j + 1)
            if j < len(header) and header[j] == '"':
                value, i = _read_quoted(header, j)
            else:
                value, i = _read_token(header, j)
            current.params[word.lower()] = value
        else:
            current = Challenge(scheme=word.lower())
            challenges.append(current)
    return challenges


# -- the credential store --------------------------------------------------------------------------------------
def default_config_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".refrt"


def config_key(domain: str) -> str:
    """The ``auths`` key for a registry: ``host:port``, or docker's historical URL for Docker Hub."""
    return DOCKER_HUB_KEY if domain == DEFAULT_DOMAIN else domain


class CredentialStore:
    """Logins by registry in ``<config_dir>/config.json``."""

    def __init__(self, config_dir: str | Path | None = None) -> None:
        self.config_dir = Path(config_dir) if config_dir else default_config_dir()

    @property
    def path(self) -> Path:
        return self.config_dir / CONFIG_FILE

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise RegistryError(f"cannot read {self.path}: not a JSON object")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        """Write atomically with mode 0600 from the first byte (the file holds passwords)."""
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.config_dir, prefix=".config.json.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent="\t")
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, domain: str) -> Credentials | None:
        entry = self._load().get("auths", {}).get(config_key(domain))
        if not isinstance(entry, dict):
            return None
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
        encoded = entry.get("auth")
        if not encoded:
            return None
        try:
            user, sep, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"{self.path}: invalid auth entry for {domain}") from None
        if not sep:
            raise RegistryError(f"{self.path}: invalid auth entry for {domain}")
        return Credentials(user, password)

    def store(self, domain: str, credentials: Credentials) -> None:
        data = self._load()
        auths = data.setdefault("auths", {})
        raw = f"{credentials.username}:{credentials.password}".encode()
        auths[config_key(domain)] = {"auth": base64.b64encode(raw).decode("ascii")}
        self._save(data)

    def erase(self, domain: str) -> bool:
        """Forget the login for ``domain``; False when there was none."""
        data = self._load()
        auths = data.get("auths", {})
        if config_key(domain) not in auths:
            return False
        del auths[config_key(domain)]
        self._save(data)
        return True
