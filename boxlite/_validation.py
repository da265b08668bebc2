"""Pydantic models whose validation failures are ConfigError, as the rest of the library promises.

Shared by the option models (boxlite/_options.py) and the network, port and volume specs (boxlite/_netopts.py),
which users may also construct themselves.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from boxlite._errors import ConfigError


def shown(value: Any, limit: int = 80) -> str:
    """repr() of a bad input for an error message: cut to `limit` characters, and never failing itself
    (a 5000-digit int cannot be repr'd under Python's int-to-str limit)."""
    try:
        text = repr(value)
    except Exception:  # whatever the input's repr does, the error message must still be made
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_error(exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    messages = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = ", ".join(sorted(model.model_fields))
            messages.append(f"unknown option {where!r} (valid options: {valid})")
        elif err["type"] == "value_error":
            messages.append(str(err["ctx"]["error"]) if "ctx" in err else err["msg"])
        else:
            messages.append(f"{where}: {err['msg']} (got {shown(err.get('input'))})")
    return ConfigError("; ".join(messages), fix="correct the option and try again")


def unencodable(name: str | None = None) -> ConfigError:
    """pydantic-core cannot carry a message quoting a lone surrogate: it raises UnicodeEncodeError instead."""
    return ConfigError(f"{'option ' + repr(name) if name else 'an option'} holds text that is not valid UTF-8 "
                       "(a lone surrogate, as from undecodable bytes)", fix="pass text that can be encoded as UTF-8")


class Validated(BaseModel):
    """A model that refuses unknown fields and reports every invalid value as a ConfigError."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self)) from None
        except UnicodeEncodeError:
            raise unencodable() from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise config_error(exc, type(self)) from None
        except UnicodeEncodeError:
            raise unencodable(name) from None
