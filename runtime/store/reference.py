"""Image references as docker reads them: ``busybox`` == ``busybox:latest`` == ``docker.io/library/busybox:latest``.

The store keys its index by the *normalized* form (domain, full path, tag or digest) so that every spelling of a
name finds the same image; listings show the *familiar* form docker shows (``busybox:latest``). The registry
client reuses :func:`parse_reference` to know which host and repository to talk to.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from runtime.store.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``tag`` is empty when only a digest was given."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``domain/path``: the repository, fully qualified."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as docker prints it: no ``docker.io/``, no ``library/`` for official images."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_PREFIX) and self.path.count("/") == 1:
            return self.path[len(OFFICIAL_PREFIX) :]
        return self.path

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def familiar(self) -> str:
        return self.familiar_name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, "")

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, "", digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain = DEFAULT_DOMAIN if first == LEGACY_DOMAIN else first
        return domain, rest
    return DEFAULT_DOMAIN, name


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse ``[domain/]path[:tag][@digest]``; add ``:latest`` when neither tag nor digest is given."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {text!r}")
    remainder, _, digest = text.partition("@")
    if digest and not _DIGEST_RE.match(digest):
        raise InvalidReference(f"invalid reference format: bad digest in {text!r}")
    tag = ""
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid reference format: bad tag in {text!r}")
    domain, path = _split_domain(remainder)
    if domain != DEFAULT_DOMAIN and not _DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid reference format: bad registry host in {text!r}")
    if not _PATH_RE.match(path):
        if path.lower() != path and _PATH_RE.match(path.lower()):
            raise InvalidReference(f"invalid reference format: repository name must be lowercase: {text!r}")
        raise InvalidReference(f"invalid reference format: {text!r}")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if len(f"{domain}/{path}") > MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid reference format: repository name longer than {MAX_NAME_LENGTH}")
    if not tag and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def normalize_reference(text: str) -> str:
    """The canonical spelling: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    return str(parse_reference(text))


def familiar_reference(text: str) -> str:
    """The spelling docker prints: ``docker.io/library/busybox:latest`` -> ``busybox:latest``."""
    return parse_reference(text, default_tag=False).familiar


def is_digest(text: str) -> bool:
    return bool(_DIGEST_RE.match(text))


def reference_matches(pattern: str, repo: str, tag: str) -> bool:
    """Whether ``repo:tag`` (familiar form) matches a ``docker images REPOSITORY[:TAG]`` / ``reference=`` filter
    pattern (glob patterns; a ``:`` inside a registry's host:port is not a tag separator)."""
    head, sep, last = pattern.rpartition(":")
    pat_repo, pat_tag = (head, last) if sep and "/" not in last else (pattern, "")
    return fnmatch.fnmatchcase(repo, pat_repo) and (not pat_tag or fnmatch.fnmatchcase(tag, pat_tag))
