"""Failures of the box, the portal, the engine or a timeout, as Jupyter error content (ename, evalue, traceback):
the frontend shows them as it shows any exception, named by their BoxliteError subclass."""

from __future__ import annotations

from typing import Any

from boxlite import BoxliteError, InternalError

RED, RESET = "\x1b[0;31m", "\x1b[0m"
RULE = "-" * 75


def error_content(exc: BaseException, recover: str | None = None) -> dict[str, Any]:
    """`{"ename", "evalue", "traceback"}` for an error the kernel itself met (not one raised by the cell's code).

    The traceback reads like Python's last line: `boxlite.errors.PortalError: portal error: ... (fix: ...)`,
    then how to carry on in this notebook when there is something to say (`recover`).
    """
    if not isinstance(exc, BoxliteError):
        exc = InternalError(f"the BoxLite kernel failed: {exc!r}", fix="please report it; `%boxlite restart` "
                                                                         "gives a new box meanwhile")
    # Named by the public class users catch (ImageError for the registry's own RegistryUnreachableError, say).
    cls = next(c for c in type(exc).__mro__ if c.__module__ == "boxlite.errors")
    lines = [f"{RED}{RULE}{RESET}", f"{RED}{cls.__module__}.{cls.__name__}{RESET}: {exc}"]
    if recover:
        lines.append(recover)
    return {"ename": cls.__name__, "evalue": str(exc), "traceback": lines}


def reply_type(request_type: str) -> str:
    return request_type[: -len("_request")] + "_reply" if request_type.endswith("_request") else request_type
