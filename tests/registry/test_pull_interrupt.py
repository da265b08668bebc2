"""Ctrl-C during a synchronous pull interrupts it at once and leaves nothing partial.

A registry served here (plain HTTP on 127.0.0.1) answers the manifest and config, then sends the first part of
each layer and stalls: the pull is mid-download, with partial blobs on disk, and only an interrupt can end it
before the network timeout. A child process pulls with `ImageStore.pull` (the synchronous API: what
`runtime.images.pull(...)` and `boxlite pull` run); the test sends it SIGINT, and checks that it ended by
KeyboardInterrupt within seconds, held no lock and no download thread when it did, and left no blob, scratch
file, disk, manifest or name behind. The same server also checks that a failing layer stops the stalled ones at
once, and that an uninterrupted pull through the same path completes.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ocitools import debugfs, make_tar, reg

from boxlite.images.oci import host_architecture

REPO = Path(__file__).resolve().parents[2]
LAYER_SIZE = 8 * 1024 * 1024
SENT_BEFORE_STALL = 512 * 1024  # more than the client's 256 KiB chunk, so a partial blob reaches the disk
LAYERS = 2


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class StallingRegistry:
    """/v2/stall:v1, an image of LAYERS layers none of which ever finishes downloading. With fail_when, the
    last layer is answered 404 instead, once fail_when() is true (or after a minute). With complete=True the
    layers are real (a file each) and sent whole: the same server and client path, uninterrupted."""

    def __init__(self, fail_when: Callable[[], bool] | None = None, complete: bool = False) -> None:
        self.fail_when = fail_when
        tars = [make_tar([reg(f"layer-{n}.txt", f"layer {n}\n".encode())]) for n in range(LAYERS)]
        self.bodies = {_digest(gz): gz for gz in (gzip.compress(t) for t in tars)} if complete else {}
        self.layers = list(self.bodies) or [f"sha256:{os.urandom(32).hex()}" for _ in range(LAYERS)]
        diff_ids = [_digest(t) if complete else f"sha256:{os.urandom(32).hex()}" for t in tars]
        self.config = json.dumps({
            "architecture": host_architecture(), "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
                        "size": len(self.bodies[d]) if complete else LAYER_SIZE} for d in self.layers],
        }).encode()
        self.stalled: set[str] = set()  # layers whose first part was sent
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v2/":
                    self._send(b"{}", "application/json")
                elif self.path == "/v2/stall/manifests/v1":
                    self._send(registry.manifest, "application/vnd.oci.image.manifest.v1+json")
                elif self.path == f"/v2/stall/blobs/{_digest(registry.config)}":
                    self._send(registry.config, "application/octet-stream")
                elif registry.fail_when is not None and self.path == f"/v2/stall/blobs/{registry.layers[-1]}":
                    deadline = time.monotonic() + 60
                    while not registry.fail_when() and time.monotonic() < deadline:
                        registry.release.wait(0.05)
                    self.send_error(404)
                elif self.path.removeprefix("/v2/stall/blobs/") in registry.bodies:
                    self._send(registry.bodies[self.path.removeprefix("/v2/stall/blobs/")], "application/octet-stream")
                elif self.path.removeprefix("/v2/stall/blobs/") in registry.layers:
                    self._stall(self.path.removeprefix("/v2/stall/blobs/"))
                else:
                    self.send_error(404)

            def _stall(self, digest: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(LAYER_SIZE))
                self.end_headers()
                try:
                    self.wfile.write(os.urandom(SENT_BEFORE_STALL))
                    self.wfile.flush()
                except OSError:
                    return
                with registry.lock:
                    registry.stalled.add(digest)
                registry.release.wait(300)  # far beyond the test; closing the registry ends it
                self.close_connection = True

        return Handler


PULL = """
import fcntl, json, os, sys, threading, time
from pathlib import Path
from boxlite.images.store import ImageStore

home, reference = Path(sys.argv[1]), sys.argv[2]
store = ImageStore(home)
try:
    store.pull(reference, progress=lambda line: print(line, flush=True))
except KeyboardInterrupt:
    caught = time.monotonic()
    held = []
    for lock in sorted((home / "images" / "locks").glob("*.lock")):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails if this process still holds it elsewhere
        except BlockingIOError:
            held.append(lock.name)
        finally:
            os.close(fd)
    threads = [t.name for t in threading.enumerate() if t.name.startswith("pull")]
    print("INTERRUPTED " + json.dumps({"caught": caught, "held": held, "threads": threads}), flush=True)
    raise
print("FINISHED", flush=True)
"""


@pytest.fixture
def stalling_registry() -> Iterator[StallingRegistry]:
    registry = StallingRegistry()
    try:
        yield registry
    finally:
        registry.close()


def test_ctrl_c_interrupts_a_sync_pull_and_leaves_nothing_partial(stalling_registry: StallingRegistry,
                                                                    home: Path, helpers: type) -> None:
    wait_until = helpers.wait_until  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": str(REPO), "BOXLITE_HOME": str(home)}
    child = subprocess.Popen([sys.executable, "-c", PULL, str(home), f"{stalling_registry.host}/stall:v1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        scratch = home / "images" / "tmp"
        # Mid-pull: every layer has started and stalled, and partial blobs are on the disk.
        assert wait_until(lambda: len(stalling_registry.stalled) == LAYERS, 60), "the pull never reached the layers"
        assert wait_until(lambda: sum(p.stat().st_size for p in scratch.glob("*.blob-*")) >= 256 * 1024, 30), \
            "no partial blob was written"
        assert child.poll() is None
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    # Ended by the KeyboardInterrupt (Python exits by SIGINT then), promptly: not after the 60 s read timeout.
    assert child.returncode == -signal.SIGINT, (child.returncode, out, err)
    assert "KeyboardInterrupt" in err and "FINISHED" not in out
    report = json.loads(out.split("INTERRUPTED ", 1)[1])
    assert report["caught"] - sent < 10, f"the interrupt took {report['caught'] - sent:.1f} s to land"
    assert report["held"] == [], "locks still held after the interrupt"
    assert report["threads"] == [], "download threads still running after the interrupt"
    # Nothing partial: no scratch files, no layer blob, no disk, manifest or name for the image.
    images = home / "images"
    assert sorted(p.name for p in scratch.iterdir()) == []
    for digest in stalling_registry.layers:
        assert not (images / "blobs" / "sha256" / digest.split(":")[1]).exists()
    for sub in ("disks", "manifests", "refs"):
        assert not (images / sub).exists() or list((images / sub).iterdir()) == []


def test_a_failing_layer_stops_the_stalled_ones_at_once(home: Path) -> None:
    """One layer's error ends the pull now, with that error: the other downloads' connections are shut, not
    left to the network timeout."""
    from boxlite.errors import ImageError
    from boxlite.images.registry import DownloadCancelledError
    from boxlite.images.store import ImageStore

    def others_blocked() -> bool:
        # Every byte sent before the stall is in the partial blobs: their downloads wait in recv() now.
        partial = sum(p.stat().st_size for p in (home / "images" / "tmp").glob("*.blob-*"))
        return partial >= SENT_BEFORE_STALL * (LAYERS - 1)

    registry = StallingRegistry(fail_when=others_blocked)
    store = ImageStore(home)
    try:
        started = time.monotonic()
        with pytest.raises(ImageError) as info:
            store.pull(f"{registry.host}/stall:v1")
        elapsed = time.monotonic() - started
    finally:
        store.close()
        registry.close()
    assert len(registry.stalled) == LAYERS - 1  # the others really were mid-download when it failed
    assert not isinstance(info.value, DownloadCancelledError) and "404" in info.value.detail
    assert elapsed < 20, f"the pull took {elapsed:.1f} s to fail"
    assert list((home / "images" / "tmp").iterdir()) == []


def test_an_uninterrupted_pull_through_the_same_path_completes(home: Path) -> None:
    from boxlite.images.store import ImageStore

    registry = StallingRegistry(complete=True)
    store = ImageStore(home)
    try:
        image = store.pull(f"{registry.host}/stall:v1")
    finally:
        store.close()
        registry.close()
    assert image.disk_path.is_file()
    listing = debugfs(image.disk_path, "ls -l /")
    assert all(f"layer-{n}.txt" in listing for n in range(LAYERS))
    assert list((home / "images" / "tmp").iterdir()) == []
