"""The `boxlite` command line: Docker-like commands over the Python API.

    boxlite setup                      provision the kernel, guest root and default image (once)
    boxlite doctor [--json]            check this host
    boxlite run [--rm] [-d] [-it] [-p ..] [-v ..] [--network ..] [IMAGE] [-- CMD ARGS...]
    boxlite exec [-it] BOX -- CMD ARGS...
    boxlite ls [-a] [-q] [--json]
    boxlite start|stop|rm|info|metrics ...
    boxlite images ls|pull|load|rm|prune ...   the image cache (boxlite/cli_images.py)

Command output goes to stdout; progress and diagnostics go to stderr. Exit codes follow Docker: the
command's own code, 128+N when signal N killed it, 124 when --timeout expired, 125 when boxlite itself
failed (no such box, bad option, the VM would not boot, ...), 2 for command-line usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar, cast

from boxlite import __version__
from boxlite._box import Box, BoxInfo
from boxlite._errors import BoxliteError, ConfigError
from boxlite._execution import ExecStatus, Execution
from boxlite._options import BoxOptions, Options
from boxlite._runtime import Boxlite
from boxlite._state import ACTIVE, default_home
from boxlite.cli_images import add_images_parser
from boxlite.cli_net import add_run_options, add_terminal_options, box_options, terminal, terminal_size
from boxlite.cli_snapshots import add_snapshot_parser, templates_check
from boxlite.engine.accel import ACCEL_ENV, detect_accel, hardware_kvm
from boxlite.images import DEFAULT_IMAGE, Image

log = logging.getLogger("boxlite")

EXIT_TIMEOUT = 124  # like timeout(1)
EXIT_BOXLITE = 125  # Docker's code for the runtime's own failures
EXIT_USAGE = 2  # argparse's code for usage errors
KILL_GRACE_S = 3.0  # after forwarding Ctrl-C to a command, how long before it is killed outright
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STDIN_CHUNK = 64 * 1024
DISK_FAIL_BYTES = 512 * 1024**2
DISK_WARN_BYTES = 4 * 1024**3

T = TypeVar("T")


# -- pure helpers ---------------------------------------------------------------------------------------------

def parse_env(value: str) -> tuple[str, str]:
    """`-e KEY=VALUE` -> (KEY, VALUE). Used as an argparse type, so a bad value is a usage error (exit 2)."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < number < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {value!r}")
    return number


def exit_code_for(status: ExecStatus) -> int:
    """The shell's view of how a command ended: its code, 128+N for signal N, 124 when it timed out."""
    if status.timed_out:
        return EXIT_TIMEOUT
    if status.signal:
        return 128 + status.signal
    if status.exit_code < 0:
        return 128 - status.exit_code
    return status.exit_code


def human_duration(seconds: float) -> str:
    """Docker's humanized durations: "Less than a second", "5 seconds", "About a minute", "3 hours"..."""
    s = int(max(seconds, 0))
    if seconds < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def humanize_ago(when: datetime | float, now: float | None = None) -> str:
    ts = when.timestamp() if isinstance(when, datetime) else when
    return f"{human_duration((time.time() if now is None else now) - ts)} ago"


def short_image(reference: str) -> str:
    """Image references for tables: OCI layout digests cut to 12 hex digits."""
    head, sep, digest = reference.rpartition("@")
    if sep and ":" in digest:
        algo, _, hex_digest = digest.partition(":")
        return f"{head}@{algo}:{hex_digest[:12]}"
    return reference


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [list(headers), *rows]]
    return "\n".join(lines)


def box_argv(command: list[str], image: dict[str, Any] | Image, entrypoint: str | None = None) -> list[str]:
    """What `run` executes, as Docker does: the entrypoint, then CMD (or the image's cmd when none is given).

    `entrypoint` (the --entrypoint flag) replaces the image's; "" clears it.
    """
    record = image.model_dump() if isinstance(image, Image) else image
    ep = list(record.get("entrypoint") or []) if entrypoint is None else ([entrypoint] if entrypoint else [])
    argv = ep + (command or ([] if entrypoint is not None else list(record.get("cmd") or [])))
    return argv


# -- output ---------------------------------------------------------------------------------------------------

def info(message: str) -> None:
    """A progress/info line on stderr (silenced by --quiet through the logging level)."""
    log.info(message)


def error(message: str) -> None:
    print(f"boxlite: {message}", file=sys.stderr, flush=True)


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


class _Output:
    """Writes a command's output to one of our streams as it arrives; survives a closed pipe (`| head`)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.broken = False

    def write(self, chunk: bytes) -> None:
        if self.broken:
            return
        try:
            self.stream.write(chunk)
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            # Later flushes (at interpreter exit) must not fail again.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())


async def _pump(chunks: AsyncIterator[bytes], out: _Output) -> None:
    async for chunk in chunks:
        out.write(chunk)


# -- stdin ----------------------------------------------------------------------------------------------------

def stdin_worth_forwarding(fd: int = 0) -> bool:
    """Forward our stdin to `run`'s command only when it is piped or redirected data: not a terminal,
    not closed, not /dev/null (or another device), not an empty file."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    if os.isatty(fd) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return False
    if stat.S_ISREG(st.st_mode):
        try:
            return st.st_size > os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            return st.st_size > 0
    return True


def _start_stdin_reader(fd: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
    """Read `fd` in a daemon thread (a blocked read must never keep the process alive), with backpressure."""

    def reader() -> None:
        while True:
            try:
                data = os.read(fd, STDIN_CHUNK)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
            except (RuntimeError, asyncio.CancelledError, ConnectionError):
                return  # the loop is gone
            if not data:
                return

    threading.Thread(target=reader, name="boxlite-stdin", daemon=True).start()


async def _feed_stdin(execution: Execution, fd: int) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
    _start_stdin_reader(fd, asyncio.get_running_loop(), queue)
    while data := await queue.get():
        if execution.done:
            return
        await execution.write_stdin(data)
    await execution.close_stdin()


# -- signals and running a command ----------------------------------------------------------------------------

class _Signals:
    """SIGINT/SIGTERM/SIGHUP while the event loop runs: queued for the command, and cancelling `guard`
    (the box's creation) when one is set."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.first: int | None = None
        self.guard: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in FORWARDED_SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def uninstall(self) -> None:
        if self._loop is not None:
            for sig in FORWARDED_SIGNALS:
                self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self.first is None:
            self.first = sig
        self.queue.put_nowait(sig)
        if self.guard is not None and not self.guard.done():
            self.guard.cancel()

    async def guarded(self, work: Awaitable[T]) -> T:
        """Await `work`, cancelled by a signal. Raises CancelledError (self.first is then set)."""
        task = asyncio.ensure_future(work)
        self.guard = task
        try:
            return await task
        finally:
            self.guard = None

    @property
    def exit_code(self) -> int:
        return 128 + (self.first or signal.SIGINT)


async def _run_command(execution: Execution, signals: _Signals, stdin_fd: int | None) -> ExecStatus | None:
    """Stream the command's output, feed its stdin, and pass our signals on (then SIGKILL after a grace
    period, or at once on a second signal). Returns its status, or None when it could not be ended."""
    loop = asyncio.get_running_loop()
    pumps = [asyncio.ensure_future(_pump(execution.stdout_bytes(), _Output(sys.stdout.buffer))),
             asyncio.ensure_future(_pump(execution.stderr_bytes(), _Output(sys.stderr.buffer)))]
    feeder = asyncio.ensure_future(_feed_stdin(execution, stdin_fd)) if stdin_fd is not None else None
    status_task = asyncio.ensure_future(execution.wait())
    deadline: float | None = None
    killed = False
    try:
        while True:
            sig_task = asyncio.ensure_future(signals.queue.get())
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait({status_task, sig_task}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not sig_task.done():
                sig_task.cancel()
            if status_task in done:
                break
            if sig_task in done and not sig_task.cancelled():
                sig = sig_task.result()
                if deadline is None:  # the first signal: pass it on
                    await execution.kill(sig)
                else:  # the second: no more patience
                    await execution.kill(signal.SIGKILL)
                    killed = True
                deadline = loop.time() + KILL_GRACE_S
            elif deadline is not None and loop.time() >= deadline:
                if killed:
                    return None  # the command cannot be reached; the caller stops the box
                await execution.kill(signal.SIGKILL)
                killed = True
                deadline = loop.time() + KILL_GRACE_S
        status = status_task.result()
        await asyncio.wait(pumps, timeout=5.0)
        return status
    finally:
        for task in [*pumps, status_task, *([feeder] if feeder else [])]:
            if not task.done():
                task.cancel()
        await asyncio.gather(*pumps, *([feeder] if feeder else []), return_exceptions=True)


def _finish(status: ExecStatus | None, signals: _Signals, timeout: float | None) -> int:
    if signals.first is not None:
        return signals.exit_code
    if status is None:
        return EXIT_BOXLITE
    if status.timed_out:
        error(f"command timed out after {timeout:g} s")
        return EXIT_TIMEOUT
    return exit_code_for(status)


# -- the runtime ----------------------------------------------------------------------------------------------

def host_path(text: str, what: str) -> Path:
    """A path given on the command line, absolute. One that cannot name a file (a NUL byte, ~ of an unknown
    user, ...) is a ConfigError (exit 125), not a traceback."""
    try:
        return Path(text).expanduser().resolve()
    except (ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(f"bad {what} {text!r}: {exc}", fix=f"give a valid path for {what}") from None


def _home(args: argparse.Namespace) -> Path:
    return host_path(args.home, "--home") if args.home else default_home().expanduser()


AccelChoice = Literal["auto", "kvm", "tcg"]


def _accel_choice(args: argparse.Namespace) -> AccelChoice:
    choice = (args.accel or os.environ.get(ACCEL_ENV) or "auto").lower()
    if choice not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"unknown accelerator {choice!r} (from ${ACCEL_ENV})", fix='use "auto", "kvm" or "tcg"')
    return cast(AccelChoice, choice)


def _runtime(args: argparse.Namespace) -> Boxlite:
    return Boxlite(Options(home_dir=_home(args), accel=_accel_choice(args)))


# -- commands -------------------------------------------------------------------------------------------------

def cmd_setup(args: argparse.Namespace) -> int:
    from boxlite.provision import ensure_assets

    home = _home(args)
    started = time.monotonic()
    info(f"setting up {home}")
    assets = ensure_assets(home, info)
    info(f"guest root: {assets.guest_root.name}")
    runtime = _runtime(args)
    image = runtime.images.get(DEFAULT_IMAGE, info)
    info(f"default image: {image.reference} ({image.digest[:19]})")
    accel = detect_accel(_accel_choice(args))
    print(f"boxlite is ready in {home} ({time.monotonic() - started:.1f} s): kernel {assets.kernel.name}, "
          f"guest root {assets.guest_root.name}, image {image.reference}; accelerator {accel.name} "
          f"({accel.reason})", flush=True)
    return 0


def _check(results: dict[str, dict[str, str]], name: str, status: str, detail: str) -> None:
    results[name] = {"status": status, "detail": detail}


def _tool_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def vm_user_check(accel_choice: str) -> tuple[str, str]:
    """Who boxes' VM processes run as (boxlite/engine/jail.py)."""
    from boxlite.engine import jail

    try:
        accel = detect_accel(accel_choice).name
    except BoxliteError:
        accel = "tcg"
    user, note = jail.vm_user("000000000000", set(), accel, volumes=False)
    if user is None:
        return ("ok" if os.geteuid() != 0 else "warn"), note
    helper = jail.proxy_helper()
    volumes = (f"shared directories through {helper}" if helper else
               "virtfs-proxy-helper not found: boxes with volumes run QEMU as root")
    return ("ok" if helper else "warn"), (f"each box's VM processes run as an unprivileged user of its own "
                                           f"(uids from {jail.uid_base():#x}); {volumes}")


def kernel_check(home: Path) -> tuple[str, str]:
    from boxlite.provision.kernel import kernel_key

    kernel = home / "assets" / f"vmlinux-6.1-{kernel_key()}"
    return ("ok", str(kernel)) if kernel.exists() else ("fail", f"{kernel} missing; run `boxlite setup`")


def guest_root_check(home: Path) -> tuple[str, str]:
    """The guest root of this version of the agent. Looked for, never made: a changed agent's root is made by
    the first box that needs it (boxlite.provision.find_assets), from the cached Debian base in seconds."""
    from boxlite.provision.guest_root import base_ready, guest_root_path

    disk = guest_root_path(home / "assets")
    if disk.exists():
        return "ok", str(disk)
    if base_ready(home / "cache"):
        return "warn", (f"{disk.name} not made yet for this version of the agent: the first box makes it from "
                        "the cached Debian base (seconds; `boxlite setup` does it now)")
    return "fail", f"{disk} missing and no cached Debian base to make it from; run `boxlite setup`"


def doctor_checks(home: Path, accel_choice: str) -> dict[str, dict[str, str]]:
    """Every check as {name: {"status": "ok"|"warn"|"fail", "detail": ...}}. Boots nothing, builds nothing, writes
    nothing but a probe file in the home (removed at once)."""
    from boxlite.images import ImageStore
    from boxlite.provision.vsock_device import installed_binary

    results: dict[str, dict[str, str]] = {}
    for tool, name in (("qemu-system-x86_64", "qemu"), ("qemu-img", "qemu_img")):
        found = shutil.which(tool)
        if found:
            _check(results, name, "ok", f"{found}: {_tool_version(found) or 'version unknown'}")
        else:
            _check(results, name, "fail", f"{tool} not found (apt-get install qemu-system-x86 qemu-utils)")
    passt = shutil.which("passt")
    _check(results, "network", "ok" if passt else "warn",
           f"{passt}: user-mode NAT for network 'enabled'" if passt else
           "passt not found: only boxes with network 'disabled' or an allow_net list can start "
           "(apt-get install passt)")

    _, why = hardware_kvm()
    try:
        accel = detect_accel(accel_choice)
        status = "ok" if accel.name == "kvm" or accel_choice == "tcg" else "warn"
        detail = f"{accel.name} ({accel.reason})"
        if accel.name == "tcg" and accel_choice != "tcg":
            detail += "; boxes run under software emulation, several times slower"
        _check(results, "accel", status, detail)
    except BoxliteError as exc:
        _check(results, "accel", "fail", f"{exc.detail} (hardware KVM: {why})")

    _check(results, "vm_user", *vm_user_check(accel_choice))

    vsock_dev = Path("/dev/vhost-vsock")
    user_space = installed_binary() or (home / "assets" / "vhost-device-vsock")
    if vsock_dev.exists() and os.access(vsock_dev, os.R_OK | os.W_OK):
        _check(results, "vsock", "ok", "kernel vhost-vsock (/dev/vhost-vsock)")
    elif user_space.exists():
        reason = "not accessible" if vsock_dev.exists() else "absent"
        _check(results, "vsock", "ok", f"user-space vhost-device-vsock ({user_space}); /dev/vhost-vsock {reason}")
    else:
        _check(results, "vsock", "fail", "neither /dev/vhost-vsock nor vhost-device-vsock; run `boxlite setup`")

    _check(results, "kernel", *kernel_check(home))
    _check(results, "guest_root", *guest_root_check(home))

    try:
        images = ImageStore(home).list()
    except (BoxliteError, OSError) as exc:
        images = []
        _check(results, "default_image", "warn", f"cannot list images: {exc}")
    else:
        default = next((i for i in images if i.reference == DEFAULT_IMAGE), None)
        if default is not None:
            _check(results, "default_image", "ok", f"{DEFAULT_IMAGE} ({default.digest[:19]})")
        else:
            _check(results, "default_image", "warn",
                   f"{DEFAULT_IMAGE} not built yet (the first box builds it; `boxlite setup` does it now)")

    if home.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
                pass
            _check(results, "home", "ok", f"{home} is writable")
        except OSError as exc:
            _check(results, "home", "fail", f"{home} is not writable: {exc.strerror or exc}")
    else:
        parent = _existing_parent(home)
        if os.access(parent, os.W_OK | os.X_OK):
            _check(results, "home", "ok", f"{home} does not exist yet; {parent} is writable")
        else:
            _check(results, "home", "fail", f"{home} does not exist and {parent} is not writable")

    try:
        usage = shutil.disk_usage(_existing_parent(home))
    except OSError as exc:
        _check(results, "disk", "warn", f"cannot measure free space: {exc}")
    else:
        free = f"{usage.free / 1024**3:.1f} GiB free under {_existing_parent(home)}"
        status = "fail" if usage.free < DISK_FAIL_BYTES else "warn" if usage.free < DISK_WARN_BYTES else "ok"
        _check(results, "disk", status, free)
    _check(results, "templates", *templates_check(home))
    return results


def cmd_doctor(args: argparse.Namespace) -> int:
    home = _home(args)
    checks = doctor_checks(home, _accel_choice(args))
    ok = all(c["status"] != "fail" for c in checks.values())
    if args.json:
        print(json.dumps({"ok": ok, "home": str(home), "checks": checks}, indent=2))
    else:
        labels = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
        for name, check in checks.items():
            print(f"{labels[check['status']]:<5} {name:<14} {check['detail']}")
        print("boxlite doctor: " + ("no failures" if ok else "FAILED"), file=sys.stderr)
    return 0 if ok else 1


def _resolve_image(runtime: Boxlite, opts: BoxOptions) -> Image:
    if opts.snapshot:
        return Image.model_validate(runtime.snapshots.get(opts.snapshot).image_record)
    if opts.rootfs_path:
        return runtime.images.import_layout(Path(opts.rootfs_path), progress=info)
    return runtime.images.get(opts.image or DEFAULT_IMAGE, progress=info)


async def _stop_quietly(box: Box, remove: bool) -> None:
    """Stop the box after `run`. A box that is removed anyway (--rm) needs no patient shutdown: it gets the
    runtime's forced removal (a short stop), not the full clean-shutdown wait a kept box gets."""
    runtime = box._runtime
    with contextlib.suppress(BoxliteError):
        if not remove:
            await box.stop()
        elif await runtime.get(box.id) is not None:
            await runtime.remove(box.id, force=True)


async def _run(args: argparse.Namespace) -> int:
    rootfs = str(host_path(args.rootfs, "--rootfs")) if args.rootfs else None
    command: list[str] = list(args.command)
    if rootfs and args.image:  # with --rootfs every positional is the command
        command = [args.image, *command]
    if args.detach and command:
        raise _UsageError("run -d starts a box and leaves it running; it takes no command "
                          "(run commands in it with `boxlite exec BOX -- CMD`)")
    try:
        net_fields = box_options(args)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    # Only what was given: with --snapshot, the snapshot fixes the image and the resources, and a flag that asks
    # for others is refused by the snapshot's fit check (runtime.create), never dropped.
    source: dict[str, Any] = {"rootfs_path": rootfs, "snapshot": args.snapshot,
                              "image": args.image if rootfs is None else None}
    if not args.snapshot and source["image"] is None and rootfs is None:
        source["image"] = DEFAULT_IMAGE
    source.update({k: v for k, v in (("cpus", args.cpus), ("memory_mib", args.memory)) if v is not None})
    opts = BoxOptions(**source, env=dict(args.env or []), working_dir=args.workdir, user=args.user,
                      name=args.name, auto_remove=args.rm, detach=True, **net_fields)
    runtime = _runtime(args)
    signals = _Signals()
    signals.install()
    try:
        try:
            image = await signals.guarded(asyncio.to_thread(_resolve_image, runtime, opts))
            argv = box_argv(command, image, args.entrypoint)
            if not argv and not args.detach:
                raise ConfigError(f"image {image.reference} has no entrypoint or cmd",
                                  fix="give the command to run: boxlite run IMAGE -- CMD ARGS...")
            box = await signals.guarded(runtime.create(opts))
        except asyncio.CancelledError:
            if signals.first is None:
                raise
            return signals.exit_code
        if args.detach:
            print(box.id, flush=True)
            return 0
        status: ExecStatus | None = None
        try:
            if signals.first is None:
                stdin_fd = 0 if args.interactive or (not args.tty and stdin_worth_forwarding(0)) else None
                execution = await box.exec(argv[0], argv[1:], timeout=args.timeout, stdin=stdin_fd is not None,
                                           tty=args.tty, tty_size=terminal_size() if args.tty else None)
                async with terminal(execution if args.tty else None):
                    status = await _run_command(execution, signals, stdin_fd)
        finally:
            await asyncio.shield(_stop_quietly(box, args.rm))
        return _finish(status, signals, args.timeout)
    finally:
        signals.uninstall()
        await runtime.close()


async def _exec(args: argparse.Namespace) -> int:
    if not args.command:
        raise _UsageError("exec needs a command: boxlite exec BOX -- CMD ARGS...")
    runtime = _runtime(args)
    signals = _Signals()
    signals.install()
    box: Box | None = None
    try:
        box = await runtime.get_or_raise(args.box)
        execution = await box.exec(args.command[0], args.command[1:], env=dict(args.env or []) or None,
                                   user=args.user, cwd=args.workdir, timeout=args.timeout, stdin=args.interactive,
                                   tty=args.tty, tty_size=terminal_size() if args.tty else None)
        async with terminal(execution if args.tty else None):
            status = await _run_command(execution, signals, 0 if args.interactive else None)
        return _finish(status, signals, args.timeout)
    finally:
        signals.uninstall()
        if box is not None:
            await box._client.close()
        await runtime.close()


async def _ls(args: argparse.Namespace) -> int:
    runtime = _runtime(args)
    boxes = [b for b in await runtime.list_info() if args.all or b.status in ACTIVE]
    if args.quiet_ids:
        for b in boxes:
            print(b.id)
    elif args.json:
        print(json.dumps([b.model_dump(mode="json") for b in boxes], indent=2))
    else:
        print(format_table(["ID", "NAME", "IMAGE", "STATUS", "ENGINE", "CREATED"], [_ls_row(b) for b in boxes]))
    return 0


def _ls_row(b: BoxInfo) -> list[str]:
    status = b.status
    if b.status == "running" and b.started_at is not None:
        status = f"running ({human_duration(time.time() - b.started_at.timestamp())})"
    return [b.id, b.name or "", short_image(b.image), status, b.engine or "", humanize_ago(b.created_at)]


async def _each(args: argparse.Namespace, action: Callable[[Boxlite, str], Awaitable[str]]) -> int:
    """Apply `action` to every BOX argument; report each failure and go on, as Docker does."""
    runtime = _runtime(args)
    failed = False
    for ref in args.boxes:
        try:
            print(await action(runtime, ref), flush=True)
        except BoxliteError as exc:
            error(str(exc))
            failed = True
    return EXIT_BOXLITE if failed else 0


async def _start_one(runtime: Boxlite, ref: str) -> str:
    box = await runtime.get_or_raise(ref)
    await box.start()
    return box.id


async def _stop_one(runtime: Boxlite, ref: str) -> str:
    box = await runtime.get_or_raise(ref)
    await box.stop()
    return box.id


def _remover(force: bool) -> Callable[[Boxlite, str], Awaitable[str]]:
    async def remove(runtime: Boxlite, ref: str) -> str:
        box = await runtime.get_or_raise(ref)
        await runtime.remove(box.id, force=force)
        return box.id

    return remove


async def _info(args: argparse.Namespace) -> int:
    box = await _runtime(args).get_or_raise(args.box)
    print((await box.info()).model_dump_json(indent=2))
    return 0


async def _metrics(args: argparse.Namespace) -> int:
    runtime = _runtime(args)
    if args.box:
        box = await runtime.get_or_raise(args.box)
        try:
            print((await box.metrics()).model_dump_json(indent=2))
        finally:
            await box._client.close()
    else:
        print((await runtime.metrics()).model_dump_json(indent=2))
    return 0


def _async(fn: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def main() -> int:
            return await fn(args)

        return asyncio.run(main())

    return run


# -- the parser -----------------------------------------------------------------------------------------------

class _UsageError(Exception):
    """A usage error found after parsing (exit 2, like argparse's own)."""


def _add_exec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--env", action="append", type=parse_env, metavar="KEY=VALUE",
                   help="set an environment variable (repeatable)")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the box (absolute)")
    p.add_argument("-u", "--user", metavar="USER", help='user to run as: "name" or "uid[:gid]"')
    p.add_argument("--timeout", type=_positive_float, metavar="S",
                   help="kill the command after S seconds (exit 124)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxlite", description="Run commands in microVM sandboxes booted from OCI images.",
        epilog="Exit codes: the command's own; 128+N if signal N killed it; 124 on --timeout; "
               "125 if boxlite itself failed; 2 for usage errors.")
    parser.add_argument("--version", action="version", version=f"boxlite {__version__}")
    parser.add_argument("--home", metavar="PATH", help="state directory (default: $BOXLITE_HOME or ~/.boxlite)")
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"],
                        help=f"VM accelerator (default: ${ACCEL_ENV} or auto)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    p = sub.add_parser("setup", help="provision the guest kernel, guest root and default image (idempotent)")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("doctor", help="check that this host can run boxes")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser(
        "run", help="create a box and run a command in it",
        usage="boxlite run [OPTIONS] [IMAGE] [-- CMD ARGS...]",
        description=f"Create a box from IMAGE (default: {DEFAULT_IMAGE}), run CMD (default: the image's "
                    "entrypoint and cmd) with its output streamed, then stop the box (removing it with --rm). "
                    "Piped stdin is forwarded. With -d the box is left running and its id printed; -d takes no "
                    "command. With --rootfs every positional argument is the command.")
    p.add_argument("--rm", action="store_true", help="remove the box when it stops")
    p.add_argument("-d", "--detach", action="store_true", help="leave the box running and print its id")
    p.add_argument("--name", metavar="NAME", help="name the box")
    p.add_argument("--cpus", type=int, metavar="N", help="virtual CPUs (default 1; a snapshot's own with --snapshot)")
    p.add_argument("--memory", "-m", type=int, metavar="MIB",
                   help="memory in MiB (default 512; a snapshot's own with --snapshot)")
    p.add_argument("--rootfs", metavar="PATH", help="boot from an OCI image layout directory instead of IMAGE")
    p.add_argument("--entrypoint", metavar="CMD", help='override the image\'s entrypoint ("" clears it)')
    add_run_options(p)
    p.add_argument("--snapshot", metavar="NAME", help="start the box from this snapshot instead of booting it")
    _add_exec_options(p)
    p.add_argument("image", nargs="?", metavar="IMAGE", help=f"image reference (default {DEFAULT_IMAGE})")
    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_async(_run))

    p = sub.add_parser("exec", help="run a command in a running box",
                       usage="boxlite exec [OPTIONS] BOX -- CMD ARGS...")
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin to the command")
    add_terminal_options(p, interactive=False)
    _add_exec_options(p)
    p.add_argument("box", metavar="BOX", help="box id, id prefix or name")
    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_async(_exec))

    p = sub.add_parser("ls", aliases=["ps"], help="list boxes")
    p.add_argument("-a", "--all", action="store_true", help="all boxes, not only running ones")
    p.add_argument("-q", "--quiet", dest="quiet_ids", action="store_true", help="only ids")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_async(_ls))

    p = sub.add_parser("start", help="boot stopped boxes")
    p.add_argument("boxes", nargs="+", metavar="BOX")
    p.set_defaults(func=_async(lambda a: _each(a, _start_one)))

    p = sub.add_parser("stop", help="stop running boxes")
    p.add_argument("boxes", nargs="+", metavar="BOX")
    p.set_defaults(func=_async(lambda a: _each(a, _stop_one)))

    p = sub.add_parser("rm", help="remove boxes")
    p.add_argument("-f", "--force", action="store_true", help="stop running boxes first")
    p.add_argument("boxes", nargs="+", metavar="BOX")
    p.set_defaults(func=_async(lambda a: _each(a, _remover(a.force))))

    p = sub.add_parser("info", aliases=["inspect"], help="a box's details as JSON")
    p.add_argument("box", metavar="BOX")
    p.set_defaults(func=_async(_info))

    p = sub.add_parser("metrics", help="a box's metrics, or the runtime's, as JSON")
    p.add_argument("box", nargs="?", metavar="BOX")
    p.set_defaults(func=_async(_metrics))

    add_images_parser(sub, _runtime)
    add_snapshot_parser(sub, _runtime)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse, with everything after the first `--` of `run`/`exec` taken as the command, verbatim."""
    parser = build_parser()
    argv = list(argv)
    at = 0  # skip the global options to find the subcommand
    while at < len(argv) and argv[at].startswith("-") and argv[at] != "--":
        at += 2 if argv[at] in _GLOBAL_WITH_VALUE else 1
    if at < len(argv) and argv[at] in ("run", "exec") and "--" in argv[at:]:
        cut = argv.index("--", at)
        args = parser.parse_args(argv[:cut])
        rest = argv[cut + 1:]
        # `run IMAGE sh -c x -- y`: the `--` belongs to the command already begun.
        args.command = [*args.command, "--", *rest] if args.command else rest
        return args
    return parser.parse_args(argv)


_GLOBAL_WITH_VALUE = ("--home", "--accel")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.quiet)
    try:
        code: int = args.func(args)
        return code
    except _UsageError as exc:
        print(f"boxlite {args.cmd}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BoxliteError as exc:
        error(str(exc))
        return EXIT_BOXLITE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
