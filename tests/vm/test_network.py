"""Networks and published ports of real boxes: what a box reaches, and nothing else.

Every server here listens on the host's 127.0.0.1 (the traffic never leaves this machine), except the pip test,
which installs one small package from the default package index through the NAT, as a user would.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.anyio]

# Run in the box: try each address on the port; print "host OK <reply tail>" or "host ERR <error>".
PROBE = """
import socket, sys
port = int(sys.argv[1])
for host in sys.argv[2:]:
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        print(host, "OK", data[-12:].decode(errors="replace"))
    except Exception as exc:
        print(host, "ERR", exc)
"""

# Run in the box: a hand-made TCP SYN to 127.0.0.1:PORT (and to the gateway) sent as a raw Ethernet frame
# through eth0 to the NAT, bypassing the box's own routing, which would keep 127.0.0.1 inside the box.
RAW_SYN = r"""
import socket, struct, sys, time
port = int(sys.argv[1])
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
src = socket.inet_aton("10.0.2.15")
try:  # fill the ARP cache with the gateway's address
    socket.create_connection(("10.0.2.2", 9), timeout=1)
except OSError:
    pass
gw_mac = None
for line in open("/proc/net/arp").read().splitlines()[1:]:
    f = line.split()
    if f[0] == "10.0.2.2":
        gw_mac = bytes.fromhex(f[3].replace(":", ""))
my_mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
assert gw_mac, "no ARP entry for the gateway"
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind(("eth0", 0))
for n, target in enumerate(["127.0.0.1", "10.0.2.2"]):
    dst = socket.inet_aton(target)
    tcp = struct.pack("!HHIIBBHHH", 40000 + n, port, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), n + 1, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    for _ in range(3):
        raw.send(gw_mac + my_mac + b"\x08\x00" + ip + tcp)
        time.sleep(0.2)
print("sent")
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"host-loopback-secret"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def host_server() -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1 only; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def probe(box: boxlite.SimpleBox, port: int, *hosts: str) -> dict[str, str]:
    r = await box.exec("python3", "-c", PROBE, str(port), *hosts)
    assert r.exit_code == 0, r.stderr
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in r.stdout.splitlines()}


async def interfaces(box: boxlite.SimpleBox) -> set[str]:
    r = await box.exec("ls", "/sys/class/net", check=True)
    return set(r.stdout.split()) - {"sit0"}  # sit0: the kernel's IPv6-in-IPv4 stub, never configured


def _get(url: str, timeout: float = 30.0) -> bytes:
    """GET `url`, retrying while the server in the box is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                data: bytes = resp.read()
                return data
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# -- published ports --------------------------------------------------------------------------------------------
async def test_published_port_reaches_a_guest_http_server(runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    async with boxlite.SimpleBox(runtime=runtime, ports=[(0, 8000, "tcp")], network="disabled") as box:
        ports = (await box.info()).ports
        assert len(ports) == 1 and ports[0]["guest_port"] == 8000 and ports[0]["host_ip"] == "127.0.0.1"
        host_port = ports[0]["host_port"]
        assert host_port > 0
        await box.exec("sh", "-c", "mkdir -p /srv && echo guest-page > /srv/index.html", check=True)
        server = await box._box.exec("python3", ["-m", "http.server", "8000", "--bind", "127.0.0.1",
                                                 "--directory", "/srv"])
        try:
            body = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{host_port}/index.html")
            assert body == b"guest-page\n"
        finally:
            await server.kill()


async def test_port_in_use_is_a_network_error_naming_it(runtime: boxlite.Boxlite) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    before = {b.id for b in await runtime.list_info()}
    try:
        with pytest.raises(boxlite.NetworkError) as info:
            await runtime.create(boxlite.BoxOptions(ports=[(port, 80, "tcp")], network="disabled"))
        assert str(port) in str(info.value) and "in use" in str(info.value)
    finally:
        taken.close()
    # Nothing left behind: no box record, no VM.
    assert {b.id for b in await runtime.list_info()} == before


# -- what a box reaches --------------------------------------------------------------------------------------------
async def test_disabled_box_has_no_network_device(runtime: boxlite.Boxlite, host_server: int) -> None:
    async with boxlite.SimpleBox(runtime=runtime, network="disabled") as box:
        assert await interfaces(box) == {"lo"}
        seen = await probe(box, host_server, "10.0.2.2", "127.0.0.1", _host_address())
        assert all("host-loopback-secret" not in v and v.startswith("ERR") for v in seen.values()), seen


async def test_enabled_box_without_a_rule_cannot_reach_host_loopback(box: boxlite.SimpleBox, host_server: int) -> None:
    assert await interfaces(box) == {"lo", "eth0"}
    seen = await probe(box, host_server, "10.0.2.2", "10.0.2.3", "127.0.0.1", _host_address())
    assert all("host-loopback-secret" not in v for v in seen.values()), seen
    names = await probe(box, host_server, boxlite_alias())
    assert names[boxlite_alias()].startswith("ERR"), names


async def test_raw_frames_to_loopback_never_reach_the_host(box: boxlite.SimpleBox) -> None:
    """Even a hand-made packet to 127.0.0.1 (the box is root and has raw sockets) connects to nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(3)
    port = listener.getsockname()[1]
    try:
        r = await box.exec("python3", "-c", RAW_SYN, str(port))
        assert r.exit_code == 0 and "sent" in r.stdout, r.stderr
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


async def test_allow_rule_reaches_the_host_loopback_and_nothing_else(runtime: boxlite.Boxlite,
                                                                    host_server: int) -> None:
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    rule = f"{boxlite_alias()}:{host_server}"
    try:
        async with boxlite.SimpleBox(runtime=runtime, network={"mode": "enabled", "allow_net": [rule]}) as box:
            assert await interfaces(box) == {"lo"}  # no device: the relay of the rules is the only way out
            seen = await probe(box, host_server, boxlite_alias(), "10.0.2.2")
            assert seen[boxlite_alias()].startswith("OK") and "secret" in seen[boxlite_alias()], seen
            assert seen["10.0.2.2"].startswith("ERR"), seen
            # Same host, a port no rule names: refused inside the box.
            blocked = await probe(box, other.server_address[1], boxlite_alias())
            assert blocked[boxlite_alias()].startswith("ERR"), blocked
    finally:
        other.shutdown()
        other.server_close()


async def test_pip_install_works_in_an_enabled_box(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    """Real DNS and TCP through the NAT: pip (copied from the host, the image has none) installs a package."""
    import pip

    await box.exec("mkdir", "-p", "/tmp/pipsrc", check=True)
    await box.copy_in(os.path.dirname(pip.__file__), "/tmp/pipsrc/")
    r = await box.exec("sh", "-c", "PYTHONPATH=/tmp/pipsrc python3 -m pip install --isolated --no-cache-dir "
                       "--disable-pip-version-check --no-deps --target /tmp/piptarget six && "
                       "PYTHONPATH=/tmp/piptarget python3 -c 'import six; print(six.__version__)'", timeout=240)
    assert r.exit_code == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].count(".") >= 1


def boxlite_alias() -> str:
    from boxlite._netopts import HOST_ALIAS

    return HOST_ALIAS


def _host_address() -> str:
    """One of the host's own non-loopback addresses (the HTTP server is not bound there, by design)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        address: str = s.getsockname()[0]
        return address
    return "192.0.2.2"
