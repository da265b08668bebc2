"""Registry settings: which registries short names search, mirrors, plain-http hosts and credentials.

Three sources, merged in this order (earlier wins for credentials; mirrors are concatenated):

1. `Options(image_registries=[...])`: each entry is a registry host searched for short names
   ("ghcr.io", in order; Docker Hub when none is given) or a RegistryConfig / dict:
   `{"host": "docker.io", "mirrors": ["http://127.0.0.1:5000"], "insecure": false,
     "username": "...", "password": "..."}`.
2. Environment variables:
   BOXLITE_IMAGE_REGISTRIES      comma-separated hosts searched for short names (e.g. "ghcr.io,docker.io")
   BOXLITE_REGISTRY_MIRRORS      comma-separated mirrors; "URL" mirrors Docker Hub, "HOST=URL" mirrors HOST
   BOXLITE_INSECURE_REGISTRIES   comma-separated hosts reached over plain http
   BOXLITE_REGISTRY_AUTH         comma-separated "HOST=USER:PASSWORD" credentials
3. The file `registries.json` in the boxlite home (~/.boxlite/registries.json):
   `{"image_registries": [ ...entries as in 1... ]}`.

Docker's own `~/.docker/config.json` (or $DOCKER_CONFIG/config.json) `auths` entries are used for hosts that
have no credentials above. Loopback registries (localhost, 127.0.0.0/8, ::1) use plain http, as Docker does;
any other host uses https unless it is named as insecure.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from boxlite._errors import ConfigError
from boxlite.images.reference import DOCKER_HUB, DOCKER_HUB_API, is_valid_host, normalize_host

CONFIG_FILE = "registries.json"
ENV_SEARCH = "BOXLITE_IMAGE_REGISTRIES"
ENV_MIRRORS = "BOXLITE_REGISTRY_MIRRORS"
ENV_INSECURE = "BOXLITE_INSECURE_REGISTRIES"
ENV_AUTH = "BOXLITE_REGISTRY_AUTH"


class RegistryConfig(BaseModel):
    """Settings for one registry host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    mirrors: list[str] = []
    insecure: bool = False
    username: str | None = None
    password: str | None = Field(default=None, repr=False)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        host = normalize_host(v)
        if not is_valid_host(host):
            raise ValueError(f"registry host {v!r} is not a valid host[:port]")
        return host

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, v: list[str]) -> list[str]:
        for mirror in v:
            if not is_valid_host(_split_url(mirror)[1]):
                raise ValueError(f"registry mirror {mirror!r} is not a host[:port] or http(s)://host[:port] URL")
        return v


RegistryEntry = str | RegistryConfig


def check_search_host(v: str) -> str:
    host = normalize_host(v)
    if not is_valid_host(host):
        raise ValueError(f"image registry {v!r} is not a valid host[:port]")
    return host


@dataclass(frozen=True)
class Endpoint:
    """One place to fetch a registry's content from: the registry itself or one of its mirrors."""

    host: str  # the registry the content belongs to (docker.io, 127.0.0.1:5000, ...)
    base_url: str  # e.g. https://registry-1.docker.io or http://127.0.0.1:5000
    mirror: bool = False

    @property
    def netloc(self) -> str:
        return self.base_url.split("://", 1)[1]


@dataclass
class HostSettings:
    mirrors: list[str] = field(default_factory=list)
    insecure: bool = False
    credentials: tuple[str, str] | None = None


@dataclass
class RegistrySettings:
    """The merged settings a pull uses."""

    search: list[str] = field(default_factory=lambda: [DOCKER_HUB])
    hosts: dict[str, HostSettings] = field(default_factory=dict)
    docker_auths: dict[str, tuple[str, str]] = field(default_factory=dict)

    def host(self, host: str) -> HostSettings:
        return self.hosts.get(normalize_host(host)) or HostSettings()

    def is_insecure(self, host: str) -> bool:
        host = normalize_host(host)
        return self.host(host).insecure or _is_loopback(host)

    def credentials(self, host: str) -> tuple[str, str] | None:
        host = normalize_host(host)
        return self.host(host).credentials or self.docker_auths.get(host)

    def endpoints(self, host: str) -> list[Endpoint]:
        """Mirrors first, in order, then the registry itself."""
        host = normalize_host(host)
        found: list[Endpoint] = []
        for mirror in self.host(host).mirrors:
            scheme, netloc = _split_url(mirror)
            if scheme is None:
                scheme = "http" if self.is_insecure(netloc) else "https"
            found.append(Endpoint(host, f"{scheme}://{netloc}", mirror=True))
        api = DOCKER_HUB_API if host == DOCKER_HUB else host
        found.append(Endpoint(host, f"{'http' if self.is_insecure(host) else 'https'}://{api}"))
        return found


def _split_url(text: str) -> tuple[str | None, str]:
    text = text.strip().rstrip("/")
    for scheme in ("http", "https"):
        if text.lower().startswith(f"{scheme}://"):
            return scheme, text[len(scheme) + 3 :].split("/", 1)[0].lower()
    return None, text.split("/", 1)[0].lower()


def _is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _entries_from_file(path: Path) -> list[Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read registry settings {path}: {e}", fix="fix or remove the file") from e
    entries = raw.get("image_registries") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(
            f"registry settings {path} must be a JSON object with an \"image_registries\" list",
            fix='e.g. {"image_registries": [{"host": "docker.io", "mirrors": ["http://127.0.0.1:5000"]}]}',
        )
    return entries


def _split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _entries_from_env(environ: Mapping[str, str]) -> tuple[list[str], list[RegistryConfig]]:
    search: list[str] = []
    configs: list[RegistryConfig] = []
    source = ""
    try:
        source = ENV_SEARCH
        search = [check_search_host(h) for h in _split_list(environ.get(ENV_SEARCH))]
        source = ENV_MIRRORS
        for item in _split_list(environ.get(ENV_MIRRORS)):
            host, eq, url = item.partition("=")
            configs.append(RegistryConfig(host=host, mirrors=[url]) if eq else RegistryConfig(
                host=DOCKER_HUB, mirrors=[item]))
        source = ENV_INSECURE
        configs.extend(RegistryConfig(host=h, insecure=True) for h in _split_list(environ.get(ENV_INSECURE)))
        source = ENV_AUTH
        for item in _split_list(environ.get(ENV_AUTH)):
            host, eq, userpass = item.partition("=")
            user, colon, password = userpass.partition(":")
            if not eq or not colon:
                raise ValueError(f"expected HOST=USER:PASSWORD, got an entry for {host!r} without them")
            configs.append(RegistryConfig(host=host, username=user, password=password))
    except (ValidationError, ValueError) as e:
        detail = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise ConfigError(f"${source} is malformed: {detail}", fix=f"correct or unset ${source}") from None
    return search, configs


def docker_config_auths(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Credentials from Docker's config.json `auths` (base64 "user:password" entries); {} if none."""
    directory = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME") or Path.home()) / ".docker")
    try:
        raw = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    auths = raw.get("auths") if isinstance(raw, dict) else None
    found: dict[str, tuple[str, str]] = {}
    if not isinstance(auths, dict):
        return found
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
        if isinstance(user, str) and isinstance(password, str) and user:
            found.setdefault(normalize_host(str(key)), (user, password))
    return found


def load_settings(
    entries: Sequence[RegistryEntry | Mapping[str, Any]],
    home: Path | None,
    environ: Mapping[str, str] | None = None,
) -> RegistrySettings:
    """Merge options entries, environment variables, the home's registries.json and Docker's config."""
    env = os.environ if environ is None else environ
    search: list[str] = []
    configs: list[RegistryConfig] = []

    def take(items: Sequence[Any], where: str) -> list[str]:
        hosts: list[str] = []
        for item in items:
            try:
                if isinstance(item, str):
                    hosts.append(check_search_host(item))
                elif isinstance(item, RegistryConfig):
                    configs.append(item)
                else:
                    configs.append(RegistryConfig.model_validate(item))
            except (ValidationError, ValueError) as e:
                detail = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
                raise ConfigError(f"bad registry entry in {where}: {detail}", fix=f"correct {where}") from None
        return hosts

    option_search = take(list(entries), "Options.image_registries")
    env_search, env_configs = _entries_from_env(env)
    configs.extend(env_configs)
    file_search: list[str] = []
    if home is not None:
        file_search = take(_entries_from_file(home / CONFIG_FILE), str(home / CONFIG_FILE))
    search = option_search or env_search or file_search or [DOCKER_HUB]

    hosts: dict[str, HostSettings] = {}
    for config in configs:
        settings = hosts.setdefault(config.host, HostSettings())
        settings.mirrors.extend(m for m in config.mirrors if m not in settings.mirrors)
        settings.insecure = settings.insecure or config.insecure
        if settings.credentials is None and config.username:
            settings.credentials = (config.username, config.password or "")
    return RegistrySettings(search=list(dict.fromkeys(search)), hosts=hosts, docker_auths=docker_config_auths(env))
