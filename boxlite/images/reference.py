"""Image references, parsed the way Docker parses them.

    python:slim                      -> docker.io/library/python:slim
    ghcr.io/owner/tool               -> ghcr.io/owner/tool:latest
    127.0.0.1:5000/foo/bar:tag       -> registry 127.0.0.1:5000, repository foo/bar, tag "tag"
    host/x@sha256:<64 hex>           -> pinned by digest (a tag may precede the digest; the digest wins)

The first path component names a registry when it contains "." or ":" or is "localhost"; otherwise the
name is on Docker Hub, where one-component names live under "library/". Bad syntax raises ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from boxlite._errors import ConfigError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A parsed registry reference. tag is None only when the reference is pinned by digest alone."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None
    explicit_registry: bool = True

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def canonical(self) -> str:
        """The fully-qualified form used as the cache key: registry/repository[:tag][@digest]."""
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """The short form Docker prints: docker.io/library/python:slim -> python:slim."""
        return familiar_name(self.canonical)

    @property
    def manifest_reference(self) -> str:
        """What goes after /manifests/ in the registry API: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def on_registry(self, registry: str) -> Reference:
        """The same short name looked up on another registry (for configured search registries)."""
        registry = normalize_host(registry)
        repository = self.repository
        if self.registry == DOCKER_HUB and repository.startswith("library/") and registry != DOCKER_HUB:
            repository = repository[len("library/") :]
        elif registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        return Reference(registry, repository, self.tag, self.digest, explicit_registry=True)


def normalize_host(host: str) -> str:
    """Docker Hub's several names all become docker.io; other hosts are lower-cased."""
    host = host.strip().lower()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.rstrip("/")
    if host.endswith("/v1") or host.endswith("/v2"):
        host = host[:-3]
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def is_valid_host(host: str) -> bool:
    return bool(_HOST.match(host))


def _bad(text: str, why: str) -> ConfigError:
    shown = repr(text) if len(text) <= 100 else repr(text[:100]) + "..."
    return ConfigError(
        f"invalid image reference {shown}: {why}",
        fix="use NAME[:TAG] or NAME@sha256:DIGEST, e.g. 'python:3.12-slim' or '127.0.0.1:5000/team/app:1.0'",
    )


def parse_reference(text: str) -> Reference:
    """Parse a registry image reference; raises ConfigError when the syntax is wrong."""
    original = text
    text = text.strip()
    if not text:
        raise _bad(original, "it is empty")
    if any(c.isspace() for c in text):
        raise _bad(original, "it contains whitespace")
    name, at, digest = text.partition("@")
    if at and not _DIGEST.match(digest):
        raise _bad(original, f"{digest!r} is not a sha256:<64 hex digits> digest")
    tag: str | None = None
    last = name.rfind(":")
    if last > name.rfind("/"):
        name, tag = name[:last], name[last + 1 :]
        if not _TAG.match(tag):
            raise _bad(original, f"tag {tag!r} may only hold letters, digits, '_', '.' and '-' (at most 128)")
    first, slash, rest = name.partition("/")
    explicit = bool(slash) and ("." in first or ":" in first or first == "localhost" or first.startswith("["))
    if explicit:
        if not is_valid_host(first):
            raise _bad(original, f"{first!r} is not a valid registry host[:port]")
        registry, path = normalize_host(first), rest
    else:
        registry, path = DOCKER_HUB, name
    if not path:
        raise _bad(original, "the repository name is missing")
    for component in path.split("/"):
        if not component:
            raise _bad(original, "the repository name has an empty path component")
        if not _COMPONENT.match(component):
            why = "must be lowercase" if component.lower() != component else "has characters that are not allowed"
            raise _bad(original, f"path component {component!r} {why}")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(registry) + 1 + len(path) > _MAX_NAME:
        raise _bad(original, f"the name is longer than {_MAX_NAME} characters")
    if tag is None and not at:
        tag = "latest"
    return Reference(registry, path, tag, digest if at else None, explicit_registry=explicit)


def familiar_name(canonical: str) -> str:
    """docker.io/library/python:slim -> python:slim; docker.io/owner/x -> owner/x; others unchanged."""
    if canonical.startswith(f"{DOCKER_HUB}/"):
        rest = canonical[len(DOCKER_HUB) + 1 :]
        return rest[len("library/") :] if rest.startswith("library/") else rest
    return canonical


LOCAL_PREFIXES = ("oci-layout:", "archive:")


def check_image_option(text: str) -> str:
    """Validate BoxOptions.image: a registry reference, a local oci-layout:/archive: reference, or a digest.

    Raises ConfigError on bad syntax; returns text stripped.
    """
    text = text.strip()
    if text.startswith(LOCAL_PREFIXES):
        path = text.split(":", 1)[1]
        if len(path) == 0:
            raise _bad(text, "the path is missing")
        if "\0" in path:
            raise _bad(text, "the path contains a NUL byte")
        try:
            path.encode()
        except UnicodeEncodeError:
            raise _bad(text, "the path is not valid text (it holds a lone surrogate)") from None
        return text
    if text.startswith("sha256:"):
        if not _DIGEST.match(text):
            raise _bad(text, "a local image digest is sha256:<64 hex digits>")
        return text
    parse_reference(text)
    return text
