"""A client for the OCI distribution API (what Docker Hub, ghcr.io and `docker-registry` serve), on httpx.

It resolves a reference to the image manifest for this host (following image indexes), and downloads blobs
with every byte verified against its digest. Authentication follows the registry's WWW-Authenticate
challenge: Bearer (anonymous or with credentials, the token dance) or Basic. Mirrors configured for a host
are tried before the host itself. Threads may share one client (httpx.Client is thread-safe).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from boxlite import __version__
from boxlite._errors import ImageError
from boxlite.images.blobs import HashingWriter
from boxlite.images.config import Endpoint, RegistrySettings
from boxlite.images.oci import (
    INDEX_TYPES,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    parse_json,
    pick_manifest,
    to_model,
)
from boxlite.images.reference import Reference

ACCEPT_MANIFESTS = ", ".join([MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST])
_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MAX_MANIFEST = 4 * 1024 * 1024
CHUNK = 256 * 1024
BLOB_ATTEMPTS = 3
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_LOCAL_HINT = (
    "or use a local image instead: rootfs_path=<OCI layout directory or image archive>, or `boxlite images load`"
)


class RegistryUnreachableError(ImageError):
    """The endpoint could not be talked to (connection, TLS, timeout, 5xx): a mirror failing falls through."""


class DownloadCancelledError(ImageError):
    """A download stopped because another layer of the same pull failed (or the pull was interrupted)."""


class Abort:
    """Stops the downloads of one pull. set() also shuts the connection of every transfer in flight, so a read
    blocked on a stalled registry returns at once: a Ctrl-C must not wait for the network's timeout."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    @contextlib.contextmanager
    def watching(self, resp: httpx.Response) -> Iterator[None]:
        """Within the block, set() shuts resp's connection."""
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):  # not a plain HTTP/1.1 connection (a test transport, say)
            yield
            return
        with self._lock:
            self._sockets.add(sock)
            if self._event.is_set():
                _shut(sock)
        try:
            yield
        finally:
            with self._lock:
                self._sockets.discard(sock)


def _cancelled() -> DownloadCancelledError:
    return DownloadCancelledError("download cancelled: another layer failed, or the pull was interrupted",
                                  fix="see the error of the layer that failed")


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown, not SSLSocket's, which would also drop the TLS object under the reader.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class ManifestNotFoundError(ImageError):
    """The endpoint answered that the manifest does not exist (404)."""


@dataclass(frozen=True)
class Resolved:
    """A reference resolved at one endpoint to this host's image manifest."""

    endpoint: Endpoint
    reference: Reference
    digest: str
    manifest_bytes: bytes
    manifest: Manifest
    media_type: str
    index_digest: str | None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="x",service="y"' -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in _CHALLENGE_PARAM.findall(rest)}


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _registry_message(resp: httpx.Response) -> str:
    """The registry's own error text ({"errors": [{"code", "message"}]}), or a snippet of the body."""
    try:
        body = resp.read()[:4096]
    except httpx.HTTPError:
        return ""
    try:
        errors = json.loads(body).get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    return body.decode("utf-8", "replace").strip()[:200]


class RegistryClient:
    def __init__(
        self, settings: RegistrySettings, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=True,  # cross-host redirects (blob CDNs) drop the Authorization header
            headers={"User-Agent": f"boxlite/{__version__}"},
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )
        self._auth: dict[tuple[str, str], str] = {}  # (base_url, scope or "*") -> Authorization value
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    # -- resolving manifests ---------------------------------------------------------------------------

    def resolve(self, ref: Reference) -> Resolved:
        """Fetch ref's manifest for this host, trying the host's mirrors first."""
        endpoints = self.settings.endpoints(ref.registry)
        problems: list[str] = []
        for number, endpoint in enumerate(endpoints, 1):
            try:
                return self._resolve_at(endpoint, ref)
            except (RegistryUnreachableError, ManifestNotFoundError) as e:
                if number == len(endpoints):
                    if problems and isinstance(e, RegistryUnreachableError):
                        detail = f"{e.detail}; mirrors tried first: {'; '.join(problems)}"
                        raise RegistryUnreachableError(detail, fix=e.fix) from e
                    raise
                problems.append(f"{endpoint.base_url}: {e.detail}")
        raise AssertionError("unreachable")  # pragma: no cover - endpoints() always holds the registry

    def _resolve_at(self, endpoint: Endpoint, ref: Reference) -> Resolved:
        data, media_type = self._get_manifest(endpoint, ref, ref.manifest_reference)
        digest = sha256_digest(data)
        if ref.digest and ref.digest.startswith("sha256:") and digest != ref.digest:
            raise ImageError(
                f"failed to pull image {ref.canonical}: the manifest {endpoint.netloc} sent hashes to {digest}",
                fix="the registry's copy is corrupt or was tampered with",
            )
        index_digest: str | None = None
        for _ in range(4):
            raw = parse_json(data, f"manifest of {ref.canonical}")
            media_type = media_type or str(raw.get("mediaType", ""))
            if media_type in _SCHEMA1 or raw.get("schemaVersion") == 1:
                raise ImageError(
                    f"failed to pull image {ref.canonical}: it only has a Docker schema 1 manifest",
                    fix="schema 1 images are deprecated; push the image again with a current tool",
                )
            if media_type in INDEX_TYPES or ("manifests" in raw and "layers" not in raw):
                index = to_model(Index, raw, f"image index of {ref.canonical}")
                index_digest = index_digest or digest
                desc = pick_manifest(index.manifests, f"image index of {ref.canonical}")
                data, media_type = self._get_manifest(endpoint, ref, desc.digest)
                digest = sha256_digest(data)
                if digest != desc.digest:
                    raise ImageError(
                        f"failed to pull image {ref.canonical}: manifest {desc.digest} from {endpoint.netloc} "
                        f"hashes to {digest}",
                        fix="the registry's copy is corrupt or was tampered with",
                    )
                continue
            manifest = to_model(Manifest, raw, f"manifest of {ref.canonical}")
            return Resolved(endpoint, ref, digest, data, manifest, media_type, index_digest)
        raise ImageError(f"failed to pull image {ref.canonical}: image indexes nest too deeply",
                         fix="pull a platform-specific tag or digest of the image")

    def _get_manifest(self, endpoint: Endpoint, ref: Reference, reference: str) -> tuple[bytes, str]:
        path = f"/v2/{ref.repository}/manifests/{reference}"
        with contextlib.closing(self._send(endpoint, ref, path, {"Accept": ACCEPT_MANIFESTS})) as resp:
            self._check(resp, endpoint, ref, "manifest")
            data = b""
            try:
                for chunk in resp.iter_bytes(CHUNK):
                    data += chunk
                    if len(data) > MAX_MANIFEST:
                        raise ImageError(f"failed to pull image {ref.canonical}: its manifest is implausibly large",
                                         fix="the registry is not serving an image manifest; check the reference")
            except httpx.TransportError as e:
                raise self._unreachable(endpoint, ref, e) from e
            media_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
            return data, media_type if media_type != "application/json" else ""

    # -- blobs --------------------------------------------------------------------------------------------

    def fetch_blob(
        self,
        resolved: Resolved,
        desc: Descriptor,
        out: HashingWriter,
        on_bytes: Callable[[int], None] | None = None,
        abort: Abort | None = None,
    ) -> None:
        """Write blob desc into out (retrying broken transfers from the start); verification is the caller's."""
        endpoint, ref = resolved.endpoint, resolved.reference
        path = f"/v2/{ref.repository}/blobs/{desc.digest}"
        problems: list[str] = []
        for attempt in range(1, BLOB_ATTEMPTS + 1):
            out.reset()
            try:
                with contextlib.closing(self._send(endpoint, ref, path, {})) as resp, \
                        abort.watching(resp) if abort is not None else contextlib.nullcontext():
                    self._check(resp, endpoint, ref, f"blob {desc.digest}")
                    for chunk in resp.iter_bytes(CHUNK):
                        if abort is not None and abort.is_set():
                            raise _cancelled()
                        out.write(chunk)
                        if out.count > desc.size:
                            raise ImageError(
                                f"failed to pull image {ref.canonical}: blob {desc.digest} from {endpoint.netloc} "
                                f"is larger than the {desc.size} bytes its descriptor says",
                                fix="the registry's copy is corrupt or was tampered with",
                            )
                        if on_bytes is not None:
                            on_bytes(out.count)
                return
            except (httpx.TransportError, RegistryUnreachableError) as e:
                if abort is not None and abort.is_set():
                    raise _cancelled() from e  # the connection was shut by Abort.set()
                if isinstance(e, RegistryUnreachableError):
                    problems.append(e.detail.rsplit("): ", 1)[-1])
                else:
                    problems.append(
                        f"the connection broke after {out.count} of {desc.size} bytes ({type(e).__name__}: {e})"
                    )
                if attempt == BLOB_ATTEMPTS:
                    raise ImageError(
                        f"failed to pull image {ref.canonical}: downloading {desc.digest} from registry "
                        f"{endpoint.netloc} failed {attempt} times: " + "; then ".join(problems),
                        fix="check that the registry is up and reachable, then pull again (nothing partial was kept)",
                    ) from e
                time.sleep(0.25 * attempt)

    # -- HTTP and authentication -------------------------------------------------------------------------

    def _send(self, endpoint: Endpoint, ref: Reference, path: str, headers: dict[str, str]) -> httpx.Response:
        """GET path (streamed; the caller closes the response), answering auth challenges as they come."""
        scope = f"repository:{ref.repository}:pull"
        url = endpoint.base_url + path
        answered = False
        while True:
            request_headers = dict(headers)
            auth = self._auth_for(endpoint, scope)
            if auth:
                request_headers["Authorization"] = auth
            try:
                resp = self._client.send(self._client.build_request("GET", url, headers=request_headers), stream=True)
            except httpx.TransportError as e:
                raise self._unreachable(endpoint, ref, e) from e
            if resp.status_code != 401 or answered:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self._answer(endpoint, ref, scope, challenge)
            answered = True

    def _auth_for(self, endpoint: Endpoint, scope: str) -> str | None:
        with self._lock:
            return self._auth.get((endpoint.base_url, scope)) or self._auth.get((endpoint.base_url, "*"))

    def _credentials(self, endpoint: Endpoint) -> tuple[str, str] | None:
        return self.settings.credentials(endpoint.netloc if endpoint.mirror else endpoint.host)

    def _answer(self, endpoint: Endpoint, ref: Reference, scope: str, challenge: str) -> None:
        scheme, params = parse_challenge(challenge)
        credentials = self._credentials(endpoint)
        if scheme == "basic":
            if credentials is None:
                raise self._auth_required(endpoint, ref, "it asks for a username and password")
            value = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            with self._lock:
                self._auth[(endpoint.base_url, "*")] = value
            return
        if scheme != "bearer" or "realm" not in params:
            raise ImageError(
                f"failed to pull image {ref.canonical}: registry {endpoint.netloc} wants authentication this "
                f"client does not speak ({challenge or 'no WWW-Authenticate header'})",
                fix="pull through a mirror that allows anonymous or basic/token access (BOXLITE_REGISTRY_MIRRORS)",
            )
        token = self._fetch_token(endpoint, ref, params, scope, credentials)
        with self._lock:
            self._auth[(endpoint.base_url, scope)] = f"Bearer {token}"

    def _fetch_token(
        self,
        endpoint: Endpoint,
        ref: Reference,
        params: dict[str, str],
        scope: str,
        credentials: tuple[str, str] | None,
    ) -> str:
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        auth = httpx.BasicAuth(*credentials) if credentials else None
        realm = params["realm"]
        try:
            resp = self._client.get(realm, params=query, auth=auth)
        except httpx.TransportError as e:
            raise RegistryUnreachableError(
                f"failed to pull image {ref.canonical}: cannot reach the token service {realm} of registry "
                f"{endpoint.netloc}: {type(e).__name__}: {e}",
                fix="check the network and that the registry's token service is up",
            ) from e
        if resp.status_code in (401, 403):
            if credentials:
                raise ImageError(
                    f"failed to pull image {ref.canonical}: {resp.status_code} {resp.reason_phrase}: the token "
                    f"service {realm} rejected the credentials of user {credentials[0]!r} for {endpoint.netloc}",
                    fix=f"check the username and password configured for {endpoint.host}",
                )
            raise self._auth_required(endpoint, ref, f"its token service refused an anonymous token ({realm})")
        if resp.status_code != 200:
            raise ImageError(
                f"failed to pull image {ref.canonical}: the token service {realm} answered "
                f"{resp.status_code} {resp.reason_phrase}: {_registry_message(resp)}",
                fix=f"check the credentials configured for {endpoint.host}, or try again later",
            )
        try:
            body: Any = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ImageError(f"failed to pull image {ref.canonical}: the token service {realm} sent no token",
                             fix=f"check the credentials configured for {endpoint.host}, or try again later")
        return token

    def _check(self, resp: httpx.Response, endpoint: Endpoint, ref: Reference, what: str) -> None:
        code = resp.status_code
        if code == 200:
            return
        head = f"failed to pull image: {code} {resp.reason_phrase}"
        detail = _registry_message(resp)
        where = f"{ref.canonical} ({what} at {endpoint.base_url})"
        text = f"{head}: {detail}: {where}" if detail else f"{head}: {where}"
        if code == 404:
            raise ManifestNotFoundError(
                text,
                fix=f"check the image name and tag; `skopeo list-tags docker://{ref.name}` lists the tags",
            )
        if code == 401:
            credentials = self._credentials(endpoint)
            if credentials:
                raise ImageError(
                    f"{text}: the credentials of user {credentials[0]!r} were rejected",
                    fix=f"check the username and password configured for {endpoint.host}",
                )
            raise self._auth_required(endpoint, ref, detail or "401 Unauthorized")
        if code == 403:
            raise ImageError(text, fix=f"the account used for {endpoint.host} may not pull {ref.repository}")
        if code == 429:
            raise ImageError(text, fix="the registry is rate limiting pulls: wait, log in, or configure a mirror")
        if code >= 500:
            raise RegistryUnreachableError(text, fix="the registry is failing; try again later or configure a mirror")
        raise ImageError(text, fix="check the image reference and the registry's address")

    def _auth_required(self, endpoint: Endpoint, ref: Reference, why: str) -> ImageError:
        return ImageError(
            f"failed to pull image: 401 Unauthorized: {ref.canonical} at {endpoint.netloc} needs credentials "
            f"({why}); the repository may also not exist",
            fix=f"configure credentials for {endpoint.host}: BOXLITE_REGISTRY_AUTH={endpoint.host}=USER:PASSWORD, "
            f"a {{\"host\": \"{endpoint.host}\", \"username\": ..., \"password\": ...}} entry in registries.json "
            "or Options.image_registries, or `docker login`",
        )

    def _unreachable(self, endpoint: Endpoint, ref: Reference, e: Exception) -> RegistryUnreachableError:
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        tls = "SSL" in reason or "TLS" in reason or "certificate" in reason.lower()
        if tls and endpoint.base_url.startswith("https://"):
            fix = (
                f"if {endpoint.netloc} serves plain http, name it as insecure: "
                f"BOXLITE_INSECURE_REGISTRIES={endpoint.netloc}, or {{\"host\": \"{endpoint.netloc}\", "
                "\"insecure\": true}} in registries.json / Options.image_registries"
            )
        else:
            fix = (
                f"check the network and that {endpoint.netloc} is up; configure a mirror with "
                f"BOXLITE_REGISTRY_MIRRORS (or registries.json in the boxlite home); {_LOCAL_HINT}"
            )
        return RegistryUnreachableError(
            f"failed to pull image {ref.canonical}: cannot reach registry {endpoint.netloc} "
            f"({endpoint.base_url}): {reason}",
            fix=fix,
        )
