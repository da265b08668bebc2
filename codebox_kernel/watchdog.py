"""The box's watchdog: removes a BoxLite Python kernel's box when the kernel process dies without shutting down
(killed with SIGKILL, as `shutdown_kernel(now=True)` in nbval and nbclient does), unless a new kernel process
took the box over (a restart).

The kernel starts it in its own session (so a signal to the kernel's process group spares it). Kernel processes
name themselves in a claim file next to the connection file: its pid, and "restart" when leaving the box for the
next process. The watchdog leaves the box alone while a live process other than the one it watched claims it.

    python -m codebox_kernel.watchdog --pid PID --box NAME --claim FILE [--persist]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

# After the kernel's death: how long a restart may take to claim the box.
RESTART_GRACE_S = 60.0
KILL_GRACE_S = 5.0
POLL_S = 0.5


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (not yet reaped by its parent) is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_claim(path: Path) -> tuple[int, bool]:
    """(pid, restarting) of the process that claims the box; (0, False) when nobody does."""
    try:
        words = path.read_text().split()
        return int(words[0]), "restart" in words[1:]
    except (OSError, ValueError, IndexError):
        return 0, False


def write_claim(path: Path, restarting: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}{' restart' if restarting else ''}\n")
    tmp.replace(path)


def successor(claim: Path, watched: int) -> bool:
    """Whether another live kernel process has the box: waiting RESTART_GRACE_S for one after a restart was
    announced, KILL_GRACE_S otherwise (a frontend's "restart now" kills the kernel and starts the next one)."""
    started = time.monotonic()
    while True:
        pid, restarting = read_claim(claim)
        if pid and pid != watched and alive(pid):
            return True
        if pid == 0 and not claim.exists():
            return False  # the kernel shut down cleanly and released the box itself
        grace = RESTART_GRACE_S if (pid == watched and restarting) else KILL_GRACE_S
        if time.monotonic() - started > grace:
            return False
        time.sleep(POLL_S)


async def release(box_name: str, persist: bool) -> None:
    from boxlite import Boxlite, BoxliteError

    runtime = Boxlite.default()
    try:
        box = await runtime.get(box_name)
        if box is None:
            return
        with contextlib.suppress(BoxliteError):
            if persist:
                await box.stop()
            else:
                await runtime.remove(box.id, force=True)
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codebox_kernel.watchdog")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--box", required=True)
    parser.add_argument("--claim", type=Path, required=True)
    parser.add_argument("--persist", action="store_true")
    args = parser.parse_args(argv)
    while alive(args.pid):
        time.sleep(POLL_S)
    if successor(args.claim, args.pid):
        return 0
    asyncio.run(release(args.box, args.persist))
    if read_claim(args.claim)[0] == args.pid:
        with contextlib.suppress(OSError):
            args.claim.unlink()
    return 0


def start(kernel_pid: int, box_name: str, claim: Path, persist: bool) -> None:
    """Start the watchdog for this kernel process, detached from its session."""
    import subprocess

    argv = [sys.executable, "-m", "codebox_kernel.watchdog", "--pid", str(kernel_pid), "--box", box_name,
            "--claim", str(claim)] + (["--persist"] if persist else [])
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


if __name__ == "__main__":
    sys.exit(main())
