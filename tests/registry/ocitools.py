"""Helpers for the registry tests: tiny OCI layouts, skopeo pushes, a meddling proxy and a token service.

Everything talks to 127.0.0.1 only: the registries started by scripts/registry.sh and servers started here.
"""

from __future__ import annotations

import base64
import collections
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("BOXLITE_REGISTRY_DIR") or "/tmp/boxlite-registry")
ANON = "127.0.0.1:5000"
BASIC = "127.0.0.1:5001"
TOKEN = "127.0.0.1:5002"
TOKEN_PORT = 5003
USER, PASSWORD = "boxlite", "boxlite-secret"
TOKEN_SERVICE = "boxlite-registry-test"
TOKEN_ISSUER = "boxlite-token-test"

TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
DEBUGFS = shutil.which("debugfs") or "/usr/sbin/debugfs"


# -- layers and layouts ----------------------------------------------------------------------------


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
    return info, data


def directory(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, b""


def device(name: str, kind: bytes, major: int, minor: int) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor, info.mode = kind, major, minor, 0o666
    return info, b""


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def put_json(layout: Path, media_type: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"mediaType": media_type, **put_blob(layout, json.dumps(value).encode())}


def add_image(
    layout: Path, layers: list[bytes], *, arch: str = "amd64", run_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write an image's blobs (gzip layers) into layout; returns its manifest descriptor (not yet indexed)."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descs, diff_ids = [], []
    for plain in layers:
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
        descs.append({"mediaType": TAR_GZIP, **put_blob(layout, gzip.compress(plain, mtime=0))})
    config = {
        "architecture": arch,
        "os": "linux",
        "config": run_config if run_config is not None else {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": put_json(layout, CONFIG, config), "layers": descs}
    return {**put_json(layout, MANIFEST, manifest), "platform": {"os": "linux", "architecture": arch}}


def set_index(layout: Path, tag: str, *descriptors: dict[str, Any]) -> None:
    manifests = [dict(d, annotations={"org.opencontainers.image.ref.name": tag}) for d in descriptors]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


def make_layout(layout: Path, layers: list[bytes], tag: str = "latest", **kw: Any) -> Path:
    set_index(layout, tag, add_image(layout, layers, **kw))
    return layout


def make_multiarch_layout(layout: Path, images: dict[str, list[bytes]], tag: str = "latest") -> Path:
    """One tag whose manifest is an image index with one image per architecture."""
    descs = [add_image(layout, layers, arch=arch) for arch, layers in images.items()]
    index = put_json(layout, INDEX, {"schemaVersion": 2, "mediaType": INDEX, "manifests": descs})
    set_index(layout, tag, index)
    return layout


# -- pushing ---------------------------------------------------------------------------------------


def push(layout: Path, dest: str, tag: str = "latest", *, creds: str | None = None, all_images: bool = False) -> str:
    """skopeo copy oci:LAYOUT:TAG docker://DEST; returns the manifest digest the registry holds."""
    digest_file = layout.parent / f".{layout.name}.digest"
    cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file)]
    if creds:
        cmd += ["--dest-creds", creds]
    if all_images:
        cmd += ["--all"]
    cmd += [f"oci:{layout}:{tag}", f"docker://{dest}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"skopeo push to {dest} failed: {result.stderr.strip()}")
    return digest_file.read_text().strip()


def registry_answers(host: str) -> bool:
    try:
        conn = http.client.HTTPConnection(host, timeout=2)
        conn.request("GET", "/v2/")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


def registry_blob_file(registry_name: str, digest: str) -> Path:
    hex_digest = digest.split(":", 1)[1]
    return STATE / registry_name / "storage/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def debugfs(disk: Path, request: str) -> str:
    result = subprocess.run([DEBUGFS, "-R", request, str(disk)], capture_output=True, text=True, check=True)
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a proxy in front of a registry ------------------------------------------------------------------


class Proxy:
    """Forwards GETs to a registry, counting blob downloads; can slow blobs, or cut one off and go away."""

    def __init__(self, upstream: str = ANON, port: int = 0) -> None:
        self.upstream = upstream
        self.blob_gets: collections.Counter[str] = collections.Counter()
        self.blob_delay = 0.0
        self.cut_blob_after: int | None = None  # send this many bytes of a blob, then close and stop serving
        self.went_away = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        headers = {k: v for k, v in handler.headers.items() if k.lower() in ("accept", "authorization", "range")}
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        conn.request("GET", handler.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        blob = "/blobs/sha256:" in handler.path
        if blob and resp.status == 200:
            self.blob_gets[handler.path.rsplit("/", 1)[1]] += 1
            time.sleep(self.blob_delay)
        handler.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() in ("content-type", "docker-content-digest", "www-authenticate", "content-length"):
                handler.send_header(key, value)
        handler.end_headers()
        if blob and resp.status == 200 and self.cut_blob_after is not None:
            handler.wfile.write(body[: self.cut_blob_after])
            handler.wfile.flush()
            time.sleep(0.2)  # let the client take in what was sent before the connection dies
            handler.close_connection = True
            self.went_away.set()
            threading.Thread(target=self.stop, daemon=True).start()
            with_socket = handler.connection
            with_socket.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- a token service for the registry on 127.0.0.1:5002 ------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens (RS256 JWTs, signed with openssl by the key scripts/registry.sh made).

    boxlite/boxlite-secret gets what it asks for; anonymous callers get pull on public/* only; a wrong
    password gets 401.
    """

    def __init__(self, port: int = TOKEN_PORT) -> None:
        self.key = STATE / "token" / "key.pem"
        cert_lines = (STATE / "token" / "cert.pem").read_text().strip().splitlines()
        self.x5c = "".join(line for line in cert_lines if not line.startswith("-----"))
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(handler.path).query)
        user = None
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (name, password) != (USER, PASSWORD):
                self._reply(handler, 401, {"details": "wrong username or password"})
                return
            user = name
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            granted = wanted if user else [a for a in wanted if a == "pull" and name.startswith("public/")]
            access.append({"type": kind, "name": name, "actions": granted})
        self.requests.append({"user": user, "scope": query.get("scope", []), "service": query.get("service")})
        now = int(time.time())
        claims = {"iss": TOKEN_ISSUER, "sub": user or "", "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
            capture_output=True, check=True,
        ).stdout
        token = f"{signing_input}.{_b64url(signature)}"
        self._reply(handler, 200, {"token": token, "access_token": token, "expires_in": 300})

    @staticmethod
    def _reply(handler: http.server.BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def derived_layout(base: Path, dest: Path, extra: bytes, run_config: dict[str, Any], tag: str = "latest") -> Path:
    """base's image plus one gzip layer and a new run config, as a new layout (base blobs hard-linked)."""
    (dest / "blobs" / "sha256").mkdir(parents=True)
    for blob in (base / "blobs" / "sha256").iterdir():
        try:
            os.link(blob, dest / "blobs" / "sha256" / blob.name)
        except OSError:
            shutil.copy(blob, dest / "blobs" / "sha256" / blob.name)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = json.loads((base / "index.json").read_text())
    manifest_desc = index["manifests"][0]
    manifest = json.loads((base / "blobs" / "sha256" / manifest_desc["digest"][7:]).read_text())
    config = json.loads((base / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    config["config"] = run_config
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(extra).hexdigest())
    manifest["layers"].append({"mediaType": TAR_GZIP, **put_blob(dest, gzip.compress(extra, mtime=0))})
    manifest["config"] = put_json(dest, CONFIG, config)
    set_index(dest, tag, put_json(dest, MANIFEST, manifest))
    return dest
