"""Options crossing the public API. Invalid values fail here, at construction, with a ConfigError."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from boxlite._errors import ConfigError
from boxlite._netopts import (
    NetworkSpec,
    PortSpec,
    VolumeSpec,
    check_unique,
    parse_network,
    parse_port,
    parse_volume,
)
from boxlite._validation import Validated
from boxlite._validation import shown as _shown
from boxlite.images.config import RegistryConfig, check_search_host
from boxlite.images.reference import check_image_option

MIN_MEMORY_MIB, MAX_MEMORY_MIB = 128, 65536
MAX_DISK_GB = 2048


def check_text(value: str, what: str) -> str:
    """A string that crosses into the box (argv, env, paths, user names): no NUL bytes (the kernel's strings end
    there) and encodable as UTF-8 (the portal's strings are UTF-8; a lone surrogate is not). Raises ValueError."""
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL byte: {_shown(value)}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid text (it holds a lone surrogate): {_shown(value)}") from None
    return value


def _entries(value: Any, what: str) -> list[Any]:
    """A list option's entries: None is none; anything but a list or tuple is refused (iterating an int raised
    TypeError, a string went character by character)."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValueError(f"{what} must be a list, got {_shown(value)}")
    return list(value)


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class Options(Validated):
    """Runtime options: where state lives and how VMs are run."""

    home_dir: Path | None = None
    # "auto" picks hardware KVM when it really works, else TCG; "kvm"/"tcg" force one.
    # None: $BOXLITE_ACCEL if set, else "auto".
    accel: Literal["auto", "kvm", "tcg"] | None = None
    # How long a box may take from launch to its agent reporting ready.
    boot_timeout_s: float = 120.0
    # Registries for image pulls. A string is a registry searched for short names like "python:slim", in
    # order (Docker Hub when none is given); a RegistryConfig (or dict) sets a host's mirrors, plain-http
    # ("insecure") use and credentials: {"host": "docker.io", "mirrors": ["http://127.0.0.1:5000"]}.
    # Merged with $BOXLITE_REGISTRY_MIRRORS & co. and HOME/registries.json (see boxlite/images/config.py).
    image_registries: list[str | RegistryConfig] = Field(default_factory=list)
    # Start boxes from a ready snapshot of a booted box ("template") whenever their options allow; the first box
    # of each image/resources combination boots cold and leaves the template behind. False: always cold.
    templates: bool = True

    @field_validator("home_dir")
    @classmethod
    def _absolute_home(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        try:
            return v.expanduser().resolve()
        except (RuntimeError, OSError) as exc:  # "~nosuchuser": no such home directory
            raise ValueError(f"home_dir {str(v)!r} cannot be resolved: {exc}") from None

    @field_validator("image_registries")
    @classmethod
    def _registries(cls, v: list[str | RegistryConfig]) -> list[str | RegistryConfig]:
        return [check_search_host(entry) if isinstance(entry, str) else entry for entry in v]

    @field_validator("boot_timeout_s")
    @classmethod
    def _positive_timeout(cls, v: float) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"boot_timeout_s must be positive and finite (seconds), got {v!r}")
        return v


class BoxOptions(Validated):
    """What a box is made of: its image, its resources and the defaults of the commands run in it."""

    image: str | None = None
    rootfs_path: str | None = None
    cpus: int = 1
    memory_mib: int = 512
    disk_size_gb: float | None = None
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    name: str | None = None
    auto_remove: bool = True
    detach: bool = False
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    # What the box reaches and what reaches it (boxlite/_netopts.py).
    network: NetworkSpec = NetworkSpec()
    ports: list[PortSpec] = Field(default_factory=list)
    volumes: list[VolumeSpec] = Field(default_factory=list)

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, v: Any) -> Any:
        return parse_network(v)

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> Any:
        return [parse_port(p) for p in _entries(v, "ports")]

    @field_validator("volumes", mode="before")
    @classmethod
    def _volumes(cls, v: Any) -> Any:
        return [parse_volume(entry) for entry in _entries(v, "volumes")]
    # Start from this snapshot (runtime.snapshots) instead of booting: its memory, devices and disk.
    snapshot: str | None = None

    @field_validator("env", mode="before")
    @classmethod
    def _env_pairs(cls, v: Any) -> Any:
        # The reference API takes a list of (key, value) pairs; a dict is accepted too.
        # Numbers are written out (("PORT", 8080) -> "8080"); anything else must already be a string (None is
        # not turned into "None", nor a 2-character string into a pair).
        # A name given twice in pairs is refused: one of the two values would be silently dropped.
        if isinstance(v, dict):
            return {k: _number_as_text(val) for k, val in v.items()}
        if isinstance(v, list | tuple):
            if not all(isinstance(pair, list | tuple) and len(pair) == 2 for pair in v):
                raise ValueError("env must be a dict or a list of (key, value) pairs")
            env: dict[Any, Any] = {}
            for k, val in v:
                name = _number_as_text(k)
                try:
                    if name in env:
                        raise ValueError(f"env sets {_shown(name)} twice; give each name once")
                    env[name] = _number_as_text(val)
                except TypeError:  # a key that cannot be one (a list, say)
                    raise ValueError("env names must be strings") from None
            return env
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key, val in v.items():
            if not key or "=" in key:
                raise ValueError(f"invalid environment variable name {_shown(key)}: it must be non-empty and "
                                 "hold no '='")
            check_text(key, "an environment variable name")
            check_text(val, f"environment variable {key}")
        return v

    @field_validator("working_dir", "user", "rootfs_path")
    @classmethod
    def _plain_text(cls, v: str | None, info: ValidationInfo) -> str | None:
        return check_text(v, str(info.field_name)) if v is not None else None

    @field_validator("entrypoint", "cmd")
    @classmethod
    def _argv(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        for arg in v or []:
            check_text(arg, f"an argument of {info.field_name}")
        return v

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: int) -> int:
        host = os.cpu_count() or 1
        if not 1 <= v <= host:
            raise ValueError(f"CPU count must be between 1 and {host}")
        return v

    @field_validator("memory_mib")
    @classmethod
    def _memory(cls, v: int) -> int:
        if not MIN_MEMORY_MIB <= v <= MAX_MEMORY_MIB:
            raise ValueError(f"memory_mib must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}")
        return v

    @field_validator("disk_size_gb")
    @classmethod
    def _disk(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= MAX_DISK_GB:
            raise ValueError(f"disk_size_gb must be between 0 and {MAX_DISK_GB}")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return check_image_option(v)
        except ConfigError as exc:
            raise ValueError(exc.detail) from None

    @field_validator("rootfs_path")
    @classmethod
    def _rootfs(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not os.path.isabs(v):
            raise ValueError(f"rootfs_path must be an absolute path, got {v!r}")
        if not os.path.isdir(v) and not os.path.isfile(v):
            raise ValueError(f"rootfs_path {v} is not a directory (expected an OCI image layout directory) "
                             "nor an image archive file (`docker save` or OCI archive)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v or len(v) > 64 or not v.isascii() or not all(c.isalnum() or c in "-_." for c in v) \
                or not v[0].isalnum():
            raise ValueError(f"invalid box name {v!r}: use 1-64 letters, digits, '-', '_' or '.', "
                             "starting with a letter or digit")
        return v

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"working_dir must be an absolute path inside the box, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> BoxOptions:
        if self.image is not None and self.rootfs_path is not None:
            raise ValueError("give either image or rootfs_path, not both")
        check_unique(self.ports, self.volumes)
        return self
