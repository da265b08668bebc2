"""Reference parsing, registry settings and the registry client's protocol logic (httpx.MockTransport: no network)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import boxlite
from boxlite._errors import ConfigError, ImageError
from boxlite.images.blobs import HashingWriter
from boxlite.images.config import RegistryConfig, load_settings
from boxlite.images.oci import host_architecture
from boxlite.images.reference import check_image_option, familiar_name, parse_reference
from boxlite.images.registry import RegistryClient, parse_challenge

HEX = "a" * 64


# -- references ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python:slim", "docker.io", "library/python", "slim", None),
        ("python", "docker.io", "library/python", "latest", None),
        ("owner/tool", "docker.io", "owner/tool", "latest", None),
        ("docker.io/python:3", "docker.io", "library/python", "3", None),
        ("index.docker.io/library/python", "docker.io", "library/python", "latest", None),
        ("ghcr.io/owner/tool:v1.2", "ghcr.io", "owner/tool", "v1.2", None),
        ("127.0.0.1:5000/foo/bar:tag", "127.0.0.1:5000", "foo/bar", "tag", None),
        ("localhost/x", "localhost", "x", "latest", None),
        (f"host.example/x@sha256:{HEX}", "host.example", "x", None, f"sha256:{HEX}"),
        (f"host.example/x:1@sha256:{HEX}", "host.example", "x", "1", f"sha256:{HEX}"),
        ("a.b/c/d/e-f_g.h__i:T_1.x-y", "a.b", "c/d/e-f_g.h__i", "T_1.x-y", None),
    ],
)
def test_references_parse_like_docker(text: str, registry: str, repository: str, tag: str | None,
                                      digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_canonical_and_familiar_forms() -> None:
    ref = parse_reference("python:slim")
    assert ref.canonical == "docker.io/library/python:slim" and ref.familiar == "python:slim"
    assert not ref.explicit_registry and parse_reference("docker.io/python").explicit_registry
    assert familiar_name("docker.io/owner/x:1") == "owner/x:1"
    assert familiar_name("127.0.0.1:5000/x:1") == "127.0.0.1:5000/x:1"
    assert ref.on_registry("ghcr.io").canonical == "ghcr.io/python:slim"
    assert parse_reference("tool").on_registry("docker.io").canonical == "docker.io/library/tool:latest"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Python:3", "must be lowercase"),
        ("python:", "tag ''"),
        ("python:bad tag", "whitespace"),
        ("x@sha256:123", "not a sha256"),
        ("host:5000/", "repository name is missing"),
        ("a//b", "empty path component"),
        ("bad_host:99999999/x", "not a valid registry host"),
        ("x:" + "t" * 129, "at most 128"),
        ("a/-b", "not allowed"),
    ],
)
def test_bad_references_are_config_errors(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match="invalid image reference") as info:
        parse_reference(text)
    assert why in str(info.value)


def test_box_options_validate_the_image_at_construction() -> None:
    assert boxlite.BoxOptions(image="127.0.0.1:5000/alpine:latest").image == "127.0.0.1:5000/alpine:latest"
    assert boxlite.BoxOptions(image=boxlite.DEFAULT_IMAGE).image == boxlite.DEFAULT_IMAGE
    assert boxlite.BoxOptions(image="oci-layout:/some/dir").image == "oci-layout:/some/dir"
    with pytest.raises(ConfigError, match="must be lowercase"):
        boxlite.BoxOptions(image="Alpine")
    with pytest.raises(ConfigError, match="sha256:<64 hex digits>"):
        check_image_option("sha256:abc")


# -- settings --------------------------------------------------------------------------------------


def test_settings_merge_options_environment_and_file(tmp_path: Path) -> None:
    (tmp_path / "registries.json").write_text(json.dumps({"image_registries": [
        "quay.io", {"host": "docker.io", "mirrors": ["https://file-mirror.test"]},
        {"host": "private.test", "username": "file-user", "password": "p"},
    ]}))
    env = {
        "BOXLITE_REGISTRY_MIRRORS": "http://127.0.0.1:5000,ghcr.io=https://ghcr-mirror.test",
        "BOXLITE_INSECURE_REGISTRIES": "plain.test:8080",
        "BOXLITE_REGISTRY_AUTH": "private.test=env-user:secret",
        "HOME": str(tmp_path),
    }
    settings = load_settings([RegistryConfig(host="docker.io", mirrors=["opt-mirror.test"])], tmp_path, env)
    assert settings.search == ["quay.io"]  # from the file: neither options nor the environment name any
    hub = [e.base_url for e in settings.endpoints("docker.io")]
    assert hub == ["https://opt-mirror.test", "http://127.0.0.1:5000", "https://file-mirror.test",
                   "https://registry-1.docker.io"]
    assert [e.base_url for e in settings.endpoints("ghcr.io")] == ["https://ghcr-mirror.test", "https://ghcr.io"]
    assert settings.endpoints("plain.test:8080")[-1].base_url == "http://plain.test:8080"
    assert settings.endpoints("other.test")[-1].base_url == "https://other.test"
    assert settings.endpoints("127.0.0.1:5000")[-1].base_url == "http://127.0.0.1:5000"  # loopback: plain http
    assert settings.endpoints("localhost:5000")[-1].base_url == "http://localhost:5000"
    assert settings.credentials("private.test") == ("env-user", "secret")  # the environment beats the file

    only_options = load_settings(["ghcr.io", "docker.io"], None, {"HOME": str(tmp_path)})
    assert only_options.search == ["ghcr.io", "docker.io"]
    assert load_settings([], None, {"HOME": str(tmp_path)}).search == ["docker.io"]


def test_docker_config_auths(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hubuser:hubpass").decode()},
        "reg.test": {"username": "u", "password": "p"},
    }}))
    settings = load_settings([], None, {"DOCKER_CONFIG": str(tmp_path)})
    assert settings.credentials("docker.io") == ("hubuser", "hubpass")
    assert settings.credentials("reg.test") == ("u", "p")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BOXLITE_REGISTRY_AUTH": "host.test=nopassword"}, "BOXLITE_REGISTRY_AUTH is malformed"),
        ({"BOXLITE_INSECURE_REGISTRIES": "bad host"}, "BOXLITE_INSECURE_REGISTRIES is malformed"),
        ({"BOXLITE_IMAGE_REGISTRIES": "no spaces allowed"}, "BOXLITE_IMAGE_REGISTRIES is malformed"),
    ],
)
def test_bad_environment_settings_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings([], None, env)


def test_options_accept_registry_entries(tmp_path: Path) -> None:
    options = boxlite.Options(image_registries=["ghcr.io", {"host": "docker.io", "mirrors": ["http://127.0.0.1:5000"]}])
    assert options.image_registries[0] == "ghcr.io"
    assert isinstance(options.image_registries[1], RegistryConfig)
    with pytest.raises(ConfigError, match="not a valid host"):
        boxlite.Options(image_registries=["not a host"])
    with pytest.raises(ConfigError):
        boxlite.Options(image_registries=[{"host": "x.test", "unknown": 1}])
    bad = tmp_path / "registries.json"
    bad.write_text("[1, 2")
    with pytest.raises(ConfigError, match="cannot read registry settings"):
        load_settings([], tmp_path, {})


# -- the protocol, against a scripted registry ----------------------------------------------------------


def test_parse_challenge() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.test/token",service="reg.test",scope="repository:a:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.test/token", "service": "reg.test", "scope": "repository:a:pull"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def _blob(data: bytes) -> dict[str, Any]:
    return {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}


class ScriptedRegistry:
    """A registry on httpx.MockTransport that wants a bearer token, like Docker Hub, and serves one index."""

    def __init__(self) -> None:
        self.config = json.dumps({"architecture": host_architecture(), "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(self.config)},
                    "layers": []}
        self.manifest = json.dumps(manifest).encode()
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(b"other"),
             "platform": {"os": "linux", "architecture": "riscv64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(self.manifest),
             "platform": {"os": "linux", "architecture": host_architecture()}},
        ]}
        self.index = json.dumps(index).encode()
        self.token_requests: list[httpx.Request] = []
        self.tamper = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            self.token_requests.append(request)
            return httpx.Response(200, json={"token": "T0K3N"})
        if request.headers.get("Authorization") != "Bearer T0K3N":
            return httpx.Response(401, headers={"WWW-Authenticate":
                                  'Bearer realm="https://auth.test/token",service="reg.test"'})
        path = request.url.path
        if path == "/v2/library/app/manifests/1":
            return httpx.Response(200, content=self.index,
                                  headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
        if path == f"/v2/library/app/manifests/{_blob(self.manifest)['digest']}":
            body = self.manifest + (b" " if self.tamper else b"")
            return httpx.Response(200, content=body,
                                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        if path == f"/v2/library/app/blobs/{_blob(self.config)['digest']}":
            return httpx.Response(200, content=self.config)
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})


def test_bearer_token_dance_and_index_resolution() -> None:
    server = ScriptedRegistry()
    client = RegistryClient(load_settings([], None, {}), transport=httpx.MockTransport(server))
    resolved = client.resolve(parse_reference("app:1"))
    assert resolved.digest == _blob(server.manifest)["digest"]
    assert resolved.index_digest == _blob(server.index)["digest"]
    assert resolved.endpoint.base_url == "https://registry-1.docker.io"
    [token_request] = server.token_requests  # one token, reused for the second manifest
    assert token_request.url.params["scope"] == "repository:library/app:pull"
    assert token_request.url.params["service"] == "reg.test"
    assert "Authorization" not in token_request.headers  # anonymous

    import io

    buf = io.BytesIO()
    writer = HashingWriter(buf, "sha256")  # type: ignore[arg-type]
    from boxlite.images.oci import Descriptor

    desc = Descriptor.model_validate(_blob(server.config))
    client.fetch_blob(resolved, desc, writer)
    assert buf.getvalue() == server.config and writer.digest == desc.digest

    with pytest.raises(ImageError, match=r"failed to pull image: 404 Not Found: MANIFEST_UNKNOWN"):
        client.resolve(parse_reference("app:2"))
    server.tamper = True
    with pytest.raises(ImageError, match="hashes to"):
        RegistryClient(load_settings([], None, {}), transport=httpx.MockTransport(server)).resolve(
            parse_reference("app:1"))


def test_credentials_go_to_the_token_service() -> None:
    server = ScriptedRegistry()
    settings = load_settings([{"host": "docker.io", "username": "me", "password": "pw"}], None, {})
    RegistryClient(settings, transport=httpx.MockTransport(server)).resolve(parse_reference("app:1"))
    sent = server.token_requests[0].headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(b"me:pw").decode()


def test_tls_failure_suggests_insecure() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number", request=request)

    client = RegistryClient(load_settings([], None, {}), transport=httpx.MockTransport(refuse))
    with pytest.raises(ImageError, match=r"cannot reach registry plain\.test:5000") as info:
        client.resolve(parse_reference("plain.test:5000/x:1"))
    assert "BOXLITE_INSECURE_REGISTRIES=plain.test:5000" in str(info.value)


def test_a_failing_mirror_falls_through_to_the_registry() -> None:
    server = ScriptedRegistry()

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "mirror.test":
            return httpx.Response(503, text="down for maintenance")
        return server(request)

    settings = load_settings([{"host": "docker.io", "mirrors": ["https://mirror.test"]}], None, {})
    resolved = RegistryClient(settings, transport=httpx.MockTransport(route)).resolve(parse_reference("app:1"))
    assert not resolved.endpoint.mirror
