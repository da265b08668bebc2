"""What box the BoxLite Python kernel runs its cells in, and how it behaves.

Settings come, later ones winning, from: the defaults, the kernelspec's metadata (`"metadata": {"boxlite":
{...}}` in kernel.json, written by `python -m codebox_kernel install --image ... --cpus ...`), then environment
variables `BOXLITE_KERNEL_<FIELD>` (`BOXLITE_KERNEL_IMAGE`, `BOXLITE_KERNEL_CPUS`, `BOXLITE_KERNEL_MEMORY_MIB`,
`BOXLITE_KERNEL_TIMEOUT`, `BOXLITE_KERNEL_PERSIST`, `BOXLITE_KERNEL_METRICS`, `BOXLITE_KERNEL_BOX_NAME`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from boxlite import BoxOptions, ConfigError

ENV_PREFIX = "BOXLITE_KERNEL_"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


class KernelSettings(BaseModel):
    """The box a BoxLite Python kernel uses. None means "the library's default"."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = None  # default: boxlite.CODEBOX_IMAGE
    cpus: int | None = None
    memory_mib: int | None = None
    # The box's name. Default: one derived from the connection file, so a restart (same connection file)
    # finds the same box.
    box_name: str | None = None
    # Seconds a cell may run before it is interrupted and fails with boxlite.TimeoutError (None: no limit).
    timeout: float | None = None
    # Keep the box (stopped) when the kernel shuts down, to find it again by box_name next time.
    persist: bool = False
    # Show the live metrics panel with the first cell's output.
    metrics: bool = False

    @field_validator("timeout")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("timeout must be a positive number of seconds")
        return v

    def box_options(self) -> dict[str, Any]:
        """Keyword arguments for boxlite.CodeBox, validated as BoxOptions (ConfigError when invalid)."""
        given = {"image": self.image, "cpus": self.cpus, "memory_mib": self.memory_mib, "name": self.box_name}
        fields: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        BoxOptions(**fields)
        return fields


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in KernelSettings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name in ("persist", "metrics"):
            if raw.strip().lower() not in TRUE | FALSE:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a yes/no value",
                                  fix="set it to 1 or 0")
            values[name] = raw.strip().lower() in TRUE
        else:
            values[name] = raw or None
    return values


def _from_kernelspec(resource_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    if not resource_dir:
        return {}
    path = Path(resource_dir) / "kernel.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the kernelspec {path}: {exc}",
                          fix="reinstall it: python -m codebox_kernel install") from None
    values = (spec.get("metadata") or {}).get("boxlite") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: metadata.boxlite must be an object, not {type(values).__name__}",
                          fix="reinstall it: python -m codebox_kernel install")
    return values


def load_settings(resource_dir: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None, **overrides: Any) -> KernelSettings:
    """The kernel's settings: kernelspec metadata, then BOXLITE_KERNEL_* variables, then `overrides`."""
    values = {**_from_kernelspec(resource_dir), **_from_env(os.environ if environ is None else environ),
              **{k: v for k, v in overrides.items() if v is not None}}
    try:
        settings = KernelSettings(**values)
        settings.box_options()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid BoxLite kernel settings: {problems}",
                          fix="fix the kernelspec metadata (python -m codebox_kernel install ...) or the "
                              f"{ENV_PREFIX}* variables") from None
    return settings
