"""A real JupyterLab server and a real headless Chromium, for tests that drive notebooks as a person would.

- `jupyterlab`: a factory fixture that starts `jupyter lab` on a free loopback port with a random token, on a
  temporary copy of some notebooks, with every Jupyter directory (data, config, runtime) and BOXLITE_HOME under
  the test's tmp_path, the wanted kernelspec installed into that data dir; it stops the server at teardown
  and fails the test if any process it started (a kernel, a box) outlives it.
- `browser`: Playwright driving Debian's chromium (`executable_path`, headless): never a browser that
  `playwright install` would download.
- `lab_page`: helpers over a Playwright page for JupyterLab (open a notebook, run all cells, wait, read).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BOXLITE_TEST_ARTIFACTS") or REPO / "test-artifacts")

# How each kernel's spec is written into a prefix (`--prefix P` puts it in P/share/jupyter/kernels/NAME).
KERNEL_INSTALLERS: dict[str, list[str]] = {
    "python3": [sys.executable, "-m", "ipykernel", "install", "--name", "python3"],
    "boxlite-python": [sys.executable, "-m", "codebox_kernel", "install", "--name", "boxlite-python"],
}

# Lab settings for a quiet, deterministic page: no news/update toasts, every cell kept in the DOM (the default
# windowing may detach cells scrolled out of view, and the test reads them all).
USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}
DISABLED_EXTENSIONS = {"@jupyterlab/apputils-extension:announcements": True}

LAB_START_TIMEOUT = 120.0


def chromium_executable() -> str | None:
    """Debian's chromium (or $BOXLITE_CHROMIUM)."""
    wanted = os.environ.get("BOXLITE_CHROMIUM")
    if wanted:
        return wanted
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of live processes whose environment has name=value (how the test finds everything it started)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the server's root_dir: a copy of the notebooks
    home: Path  # BOXLITE_HOME for the kernels
    log: Path
    proc: subprocess.Popen[bytes]
    startup_seconds: float
    marker: str  # BOXLITE_TEST_LAB=<marker> is in the environment of every process the server starts
    kernel: str = ""

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"

    def api(self, path: str) -> Any:
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _write_lab_settings(config_dir: Path) -> None:
    for rel, values in USER_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": DISABLED_EXTENSIONS}))


def _boxlite_home(base: Path, real_home: Path) -> Path:
    """A throwaway BOXLITE_HOME that shares the provisioned home's assets, cache and images (as the VM tests do)."""
    home = base / "boxlite-home"
    home.mkdir()
    for sub in ("assets", "cache", "images"):
        if (real_home / sub).is_dir():
            (home / sub).symlink_to(real_home / sub, target_is_directory=True)
    return home


def _stop(server: LabServer) -> list[str]:
    """Stop the server (its shutdown API first, so it shuts its kernels down; then signals), then anything
    it started that is still alive. Returns what had to be killed."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError):
            req = urllib.request.Request(f"{server.url}/api/shutdown", method="POST", data=b"",
                                         headers={"Authorization": f"token {server.token}"})
            urllib.request.urlopen(req, timeout=10).close()
        for sig, wait in ((None, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    leaked = []
    # A kernel gets its own session (jupyter_client) and a box's shim daemonizes: neither is in the server's
    # process group, but all of them inherit the marker.
    deadline = time.monotonic() + 30
    while (pids := processes_with_env("BOXLITE_TEST_LAB", server.marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            leaked.append(f"{pid}: {cmdline[:200]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leaked


@pytest.fixture
def jupyterlab(tmp_path: Path, real_home: Path) -> Iterator[Callable[..., LabServer]]:
    """start(kernel=NAME, notebooks=[paths]) -> LabServer; the server is stopped at teardown."""
    servers: list[LabServer] = []

    def start(kernel: str, notebooks: list[Path]) -> LabServer:
        base = tmp_path / f"lab{len(servers)}"
        root, prefix, config, runtime = (base / d for d in ("root", "prefix", "config", "runtime"))
        for d in (root, prefix, config, runtime):
            d.mkdir(parents=True)
        for nb in notebooks:
            shutil.copy2(nb, root / nb.name)
        data = prefix / "share" / "jupyter"
        marker = secrets.token_hex(8)
        env = dict(os.environ)
        env.update(
            JUPYTER_DATA_DIR=str(data),
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTER_RUNTIME_DIR=str(runtime),
            JUPYTER_PLATFORM_DIRS="1",
            IPYTHONDIR=str(base / "ipython"),
            BOXLITE_HOME=str(_boxlite_home(base, real_home)),
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            BOXLITE_TEST_LAB=marker,
        )
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTER_CONFIG_PATH", None)
        installed = subprocess.run([*KERNEL_INSTALLERS[kernel], "--prefix", str(prefix)], env=env,
                                   capture_output=True, text=True, timeout=120)
        assert installed.returncode == 0, f"installing the {kernel} kernelspec failed:\n{installed.stderr}"
        assert (data / "kernels" / kernel / "kernel.json").is_file(), installed.stdout + installed.stderr
        _write_lab_settings(config)

        token, port = secrets.token_hex(24), free_port()
        log = base / "jupyterlab.log"
        argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                "--port-retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True", "--allow-root"]
        started = time.monotonic()
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        server = LabServer(url=f"http://127.0.0.1:{port}", token=token, root=root, home=Path(env["BOXLITE_HOME"]),
                           log=log, proc=proc, startup_seconds=0.0, marker=marker, kernel=kernel)
        servers.append(server)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode} while starting:\n{server.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                if "started" in server.api("/api/status"):
                    break
            if time.monotonic() - started > LAB_START_TIMEOUT:
                pytest.fail(f"jupyter lab did not answer within {LAB_START_TIMEOUT:.0f} s:\n{server.log_tail()}")
            time.sleep(0.25)
        server.startup_seconds = time.monotonic() - started
        specs = server.api("/api/kernelspecs")["kernelspecs"]
        assert kernel in specs, f"the server does not list kernel {kernel!r}: {sorted(specs)}"
        return server

    yield start

    failures = []
    for server in servers:
        leaked = _stop(server)
        # The server's log (kernels write theirs into it too) beside the screenshots, for a failure's story.
        with contextlib.suppress(OSError):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(server.log, ARTIFACTS / f"jupyterlab-{server.kernel}.log")
        if leaked:
            failures.append("processes outlived jupyter lab (killed):\n  " + "\n  ".join(leaked))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium through Playwright's sync API. Module scope: that API drives its own event loop in this thread,
    and while it is open anyio's pytest runner (the async tests that follow) cannot start its own."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no chromium (Debian's `chromium` package, see scripts/setup.sh) or $BOXLITE_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


class LabPage:
    """A JupyterLab tab: open a notebook, run all its cells, wait for them, read what they rendered."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []  # what the page logged (JupyterLab's warnings and errors), for failures
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))

    def open_notebook(self, server: LabServer, name: str, timeout: float) -> None:
        self.page.goto(server.notebook_url(name), timeout=timeout * 1000)
        panel = self.page.locator(".jp-NotebookPanel:visible")
        panel.wait_for(timeout=timeout * 1000)
        self.page.locator(".jp-NotebookPanel:visible .jp-Cell").first.wait_for(timeout=timeout * 1000)

    def kernel_display_name(self) -> str:
        return str(self.page.locator(".jp-NotebookPanel:visible .jp-KernelName").first.inner_text()).strip()

    def wait_kernel_name(self, display_name: str, timeout: float) -> None:
        """Until the toolbar names the notebook's kernel (it says "No Kernel" until the session is up)."""
        try:
            self.page.locator(".jp-NotebookPanel:visible .jp-KernelName", has_text=display_name).first.wait_for(
                timeout=timeout * 1000)
        except Exception as exc:
            raise AssertionError(f"the toolbar names kernel {self.kernel_display_name()!r}, "
                                 f"not {display_name!r}") from exc

    def kernel_status(self) -> str | None:
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator").first.get_attribute(
            "data-status")

    def wait_kernel_idle(self, timeout: float) -> None:
        self.page.locator('.jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
            timeout=timeout * 1000)

    def run_all(self) -> None:
        """Run > Run All Cells, through the menu bar as a person would."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()

    def restart_kernel(self) -> None:
        """Kernel > Restart Kernel..., and the dialog's Restart, as a person would."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
        self.page.locator('.lm-Menu-item[data-command="kernelmenu:restart"]').click()
        self.page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    def cell_prompts(self) -> list[str]:
        return [p.strip() for p in self.page.locator(
            ".jp-NotebookPanel:visible .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()]

    def wait_all_cells_done(self, timeout: float) -> None:
        """Until no code cell is queued or running ([*]:) and the kernel is idle again; then every code cell
        must have an execution count ([n]:): one left blank ([ ]:) was skipped because a cell before it failed
        (Run All stops at the first error)."""
        deadline = time.monotonic() + timeout
        while True:
            prompts = self.cell_prompts()
            started = any(p.strip("[]: ").isdigit() for p in prompts)
            if started and not any("*" in p for p in prompts) and self.kernel_status() == "idle":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"cells still running after {timeout:.0f} s: prompts {prompts}, "
                                     f"kernel {self.kernel_status()}")
            time.sleep(0.5)
        unrun = [i for i, p in enumerate(prompts) if not p.strip("[]: ").isdigit()]
        assert not unrun, (f"code cells {unrun} did not run (prompts {prompts}); errors: {self.error_outputs()}; "
                           f"outputs:\n{self.outputs_text()[-3000:]}")

    def outputs_text(self) -> str:
        return "\n".join(self.page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output").all_inner_texts())

    def error_outputs(self) -> list[str]:
        """The error outputs of the notebook's model (an exception's ename: evalue), read from the app."""
        return list(self.page.evaluate("""() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const errors = [];
            for (const cell of panel.content.model.cells) {
                if (cell.type !== 'code') continue;
                for (const out of cell.toJSON().outputs || []) {
                    if (out.output_type === 'error') errors.push(`${out.ename}: ${out.evalue}`);
                }
            }
            return errors;
        }"""))

    def screenshot(self, path: Path) -> Path:
        """The whole notebook: the viewport is made as tall as the notebook's content first (JupyterLab scrolls
        inside its own panel, so a full-page shot of the usual viewport would cut the notebook off)."""
        height = self.page.evaluate("""() => {
            const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => p.offsetParent !== null);
            const scroller = panel && panel.querySelector('.jp-WindowedPanel-outer');
            const cells = panel ? panel.querySelectorAll('.jp-Cell') : [];
            if (!scroller || !cells.length) return document.body.clientHeight;
            // The page above the notebook, then the notebook down to its last cell (not the empty space
            // JupyterLab leaves after it), then the status bar.
            const top = scroller.getBoundingClientRect().top;
            const end = cells[cells.length - 1].getBoundingClientRect().bottom - top + scroller.scrollTop;
            return top + end + 80;
        }""")
        width = self.page.viewport_size["width"] if self.page.viewport_size else 1280
        self.page.set_viewport_size({"width": width, "height": min(max(int(height) + 200, 800), 12000)})
        self.page.evaluate("""() => {
            for (const e of document.querySelectorAll('.jp-NotebookPanel .jp-WindowedPanel-outer')) e.scrollTop = 0;
        }""")
        self.page.wait_for_timeout(500)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def lab_page(browser: Any) -> Iterator[LabPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    lab = LabPage(page)
    try:
        yield lab
    finally:
        context.close()
        with contextlib.suppress(OSError):  # beside the screenshots, for a failure's story
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "jupyterlab-console.log").write_text("\n".join(lab.console))
