"""The gateway's side of the dev server: `/api/v2/ai-gateway/serve` as Coder serves it, over real
sockets, with a real WebSocket client (`websockets`) and the replica stand-in as a subprocess."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from keysync.cli.commands.serving import dev_server
from keysync.devserver import DevServer, DevServerConfig

from conftest import KEYSYNC, base_env
from replica import GATEWAY_HEADER, IN, SERVE, gateway_status, replica_connection, start_replica, stop_replica

OWNER = "OwnerTokn0-0123456789abcdefghijkl"
COLLECTIONS = {
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
}
SEEN = {
    "coderd-keys": "last_used_at",
    "aibridge-keys": "last_used_at",
    "ai-gateway-keys": "last_heartbeat_at",
}
TICK = 0.2  # the heartbeat interval these servers use


class Gateway:
    """A dev server seen by its owner (to create, list and delete keys) and by its replicas."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, headers={"Coder-Session-Token": OWNER}, timeout=10)
        self.collection = COLLECTIONS[server.config.api]

    def create(self, name: str) -> dict[str, Any]:
        response = self.http.post(self.collection, json={"name": name})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def listed(self, name: str) -> dict[str, Any]:
        key: dict[str, Any] = next(k for k in self.http.get(self.collection).json() if k["name"] == name)
        return key

    def delete(self, key_id: str) -> None:
        assert self.http.delete(f"{self.collection}/{key_id}").status_code == 204

    def handshake(self, headers: dict[str, str], query: str = "?version=1.0") -> httpx.Response:
        """A GET of the serve endpoint with exactly these headers, no session token."""
        return httpx.get(self.url + SERVE + query, headers=headers, timeout=10)


@pytest.fixture
def gateway() -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def _start(api: str = "ai-gateway-keys", **settings: Any) -> Gateway:
        config = DevServerConfig(port=0, token=OWNER, api=api, heartbeat_interval=TICK, **settings)
        server = DevServer(config)
        server.start()
        made.append(Gateway(server))
        return made[-1]

    yield _start
    for each in made:
        each.http.close()
        each.server.stop()


@pytest.fixture(params=list(COLLECTIONS))
def generation(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def poll(predicate: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def seen_at(gw: Gateway, name: str) -> datetime | None:
    value = gw.listed(name).get(SEEN[gw.server.config.api])
    return datetime.fromisoformat(value) if value else None


# The handshake


def test_a_replica_connects_whatever_the_generation_and_is_seen(
    gateway: Callable[..., Gateway], generation: str
) -> None:
    gw = gateway(generation)
    key = gw.create("replica")
    assert set(gw.listed("replica")) == {"id", "name", "key_prefix", "created_at"}  # omitted while null
    with replica_connection(gw.url, key["key"]) as connection:
        listed = gw.listed("replica")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", listed[SEEN[generation]])
        other = {"last_used_at", "last_heartbeat_at"} - {SEEN[generation]}
        assert not other & set(listed)
        assert connection.ping().wait(2)  # pings are answered


def test_the_first_ai_gateway_keys_servers_list_last_used_at(gateway: Callable[..., Gateway]) -> None:
    gw = gateway("ai-gateway-keys", last_seen_field="last_used_at")
    key = gw.create("replica")
    assert gateway_status(gw.url, key["key"]) == IN
    listed = gw.listed("replica")
    assert "last_used_at" in listed
    assert "last_heartbeat_at" not in listed


def test_the_upgrade_follows_rfc_6455(gateway: Callable[..., Gateway]) -> None:
    gw = gateway()
    key = gw.create("raw")
    host, port = gw.url.removeprefix("http://").split(":")
    request = (
        f"GET {SERVE}?version=1.0 HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{GATEWAY_HEADER}: {key['key']}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:] if line)}
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "Upgrade"
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's own example
    assert "content-length" not in headers


def test_the_key_is_checked_first(gateway: Callable[..., Gateway], generation: str) -> None:
    gw = gateway(generation)
    key = gw.create("replica")
    for query in ("", "/"):  # chi serves the mount point with or without a trailing slash
        missing = gw.handshake({}, query=query)
        assert missing.status_code == 401
        assert missing.json() == {"message": "AI Gateway key required."}
    for wrong in (key["key"][:11] + "x" * 32, "not-a-key"):
        unknown = gw.handshake({GATEWAY_HEADER: wrong}, query="?version=nonsense")
        assert unknown.status_code == 401
        assert unknown.json() == {"message": "AI Gateway key invalid."}
    assert seen_at(gw, "replica") is None


@pytest.mark.parametrize(
    ("version", "why"),
    [
        (None, "invalid version string: "),
        ("1", "invalid version string: 1"),
        ("1.0.0", "invalid version string: 1.0.0"),
        ("x.0", "invalid major version: x.0"),
        ("1.y", "invalid minor version: 1.y"),
        ("1.99999999999999999999", "invalid minor version: 1.99999999999999999999"),
        ("2.0", "server is at version 1.0, behind requested major version 2.0"),
        ("1.3", "server is at version 1.0, behind requested minor version 1.3"),
        ("0.9", "version 0.9 is no longer supported"),
    ],
)
def test_then_the_version(gateway: Callable[..., Gateway], version: str | None, why: str) -> None:
    gw = gateway()
    key = gw.create("replica")
    with pytest.raises(InvalidStatus) as refused, replica_connection(gw.url, key["key"], version=version):
        pass
    assert refused.value.response.status_code == 400
    body = json.loads(refused.value.response.body)
    assert body == {
        "message": "Incompatible or unparsable version",
        "validations": [
            {"field": "version", "detail": why},
            {"field": "client_api_version", "detail": version or ""},
            {"field": "server_api_version", "detail": "1.0"},
        ],
    }
    assert seen_at(gw, "replica") is None


@pytest.mark.parametrize("version", ["1.0", "01.0", "%2B1.0", "1.0&version=9.9"])
def test_versions_go_accepts(gateway: Callable[..., Gateway], version: str) -> None:
    gw = gateway()
    assert gateway_status(gw.url, gw.create("replica")["key"], version=version) == IN


UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket"}


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, 'WebSocket protocol violation: Connection header "keep-alive" does not contain Upgrade'),
        (
            {"Connection": "Upgrade"},
            'WebSocket protocol violation: Upgrade header "" does not contain websocket',
        ),
        (UPGRADE, 'unsupported WebSocket protocol version (only 13 is supported): ""'),
        (
            {**UPGRADE, "Sec-WebSocket-Version": "13"},
            "WebSocket protocol violation: missing Sec-WebSocket-Key",
        ),
        (
            {**UPGRADE, "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "c2hvcnQ="},
            'WebSocket protocol violation: invalid Sec-WebSocket-Key "c2hvcnQ=", '
            "must be a 16 byte base64 encoded string",
        ),
        (
            {
                **UPGRADE,
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Origin": "https://evil.example",
            },
            'request Origin "evil.example" is not authorized for Host "HOST"',
        ),
    ],
)
def test_then_the_websocket_upgrade(
    gateway: Callable[..., Gateway], headers: dict[str, str], error: str
) -> None:
    """coder/websocket's Accept refuses with a reason; Coder answers 400 with its JSON naming it."""
    gw = gateway()
    key = gw.create("replica")
    response = gw.handshake({GATEWAY_HEADER: key["key"], **headers})
    error = error.replace("HOST", gw.url.removeprefix("http://"))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {
        "message": "Failed to accept websocket connection.",
        "detail": f"failed to accept WebSocket connection: {error}",
    }
    assert seen_at(gw, "replica") is None


def test_the_feature_check_comes_before_the_key(gateway: Callable[..., Gateway], generation: str) -> None:
    gw = gateway(generation, feature_disabled=True)
    response = gw.handshake({})
    assert response.status_code == 403
    assert "is a Premium feature. Contact sales!" in response.json()["message"]


# While the connection is open


def test_heartbeats_are_recorded_while_open_and_stop_with_it(gateway: Callable[..., Gateway]) -> None:
    gw = gateway()
    key = gw.create("replica")
    with replica_connection(gw.url, key["key"]):
        first = seen_at(gw, "replica")
        assert first is not None
        poll(lambda: (seen_at(gw, "replica") or first) > first, "a heartbeat after the first")
    last = seen_at(gw, "replica")
    time.sleep(3 * TICK)
    assert seen_at(gw, "replica") == last


def test_a_deleted_key_is_cut_off_at_the_next_tick(gateway: Callable[..., Gateway], generation: str) -> None:
    gw = gateway(generation)
    key = gw.create("replica")
    with replica_connection(gw.url, key["key"]) as connection:
        gw.delete(key["id"])
        with pytest.raises(ConnectionClosed) as closed:
            connection.recv(timeout=5 * TICK + 1)
        assert closed.value.rcvd is None  # dropped as Coder drops it: no close frame
    assert gateway_status(gw.url, key["key"]) == 401


def test_many_replicas_share_one_key(gateway: Callable[..., Gateway]) -> None:
    gw = gateway()
    key = gw.create("shared")
    with replica_connection(gw.url, key["key"]) as one, replica_connection(gw.url, key["key"]) as two:
        assert one.ping().wait(2) and two.ping().wait(2)


def test_stopping_the_server_ends_open_connections(gateway: Callable[..., Gateway]) -> None:
    gw = gateway()
    key = gw.create("replica")
    with replica_connection(gw.url, key["key"]) as connection:
        gw.server.stop()
        with pytest.raises(ConnectionClosed):
            connection.recv(timeout=3)


# The replica stand-in, as a subprocess


def test_the_replica_reads_its_key_file_once_and_exits_once_refused(
    gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway()
    first, second = gw.create("first"), gw.create("second")
    key_file = tmp_path / "key"
    key_file.write_text(f"  {first['key']}\n\n")  # trimmed, as the gateway trims it
    process = start_replica(gw.url, key_file)
    try:
        assert seen_at(gw, "first") is not None
        key_file.write_text(second["key"])  # a rotation the replica never notices
        gw.delete(first["id"])
        process.wait(timeout=5 * TICK + 5)
    finally:
        code, err = stop_replica(process)
    assert code == 1
    assert "refused the connection: 401 AI Gateway key invalid." in err
    assert seen_at(gw, "second") is None  # it reconnected with the key it read at start-up
    assert first["key"] not in err and second["key"] not in err


def test_the_replica_keeps_its_connection_and_stops_cleanly(
    gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway()
    key = gw.create("replica")
    key_file = tmp_path / "key"
    key_file.write_text(key["key"])
    process = start_replica(gw.url, key_file)
    try:
        first = seen_at(gw, "replica")
        assert first is not None
        poll(lambda: (seen_at(gw, "replica") or first) > first, "the replica's next heartbeat")
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        code, err = stop_replica(process)
    assert code == 0
    assert key["key"] not in err


@pytest.mark.parametrize("content", [None, "  \n"])
def test_the_replica_needs_a_key(
    gateway: Callable[..., Gateway], tmp_path: Path, content: str | None
) -> None:
    gw = gateway()
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    code, err = stop_replica(start_replica(gw.url, key_file))
    assert code == 1
    assert err.count("\n") == 1 and "replica:" in err and str(key_file) in err
    assert "Traceback" not in err


# The command line


def test_dev_server_options_are_documented() -> None:
    shown = subprocess.run([KEYSYNC, "dev-server", "--help"], capture_output=True, text=True, env=base_env())
    assert shown.returncode == 0
    for option in ("--rate-window", "--heartbeat-interval", "--last-seen-field", "ai-gateway-keys]"):
        assert option in shown.stdout


def test_the_dev_server_serves_the_same_generation_from_python_as_from_the_command_line() -> None:
    (api,) = [p for p in dev_server.params if p.name == "api"]
    assert DevServerConfig().api == api.default == "ai-gateway-keys"


@pytest.mark.parametrize(
    "args",
    [
        ["--api", "coderd-keys", "--last-seen-field", "last_heartbeat_at"],
        ["--rate-window", "soon"],
        ["--heartbeat-interval", "0s"],
        ["--last-seen-field", "last_seen"],
    ],
)
def test_dev_server_refuses_bad_options(args: list[str]) -> None:
    done = subprocess.run(
        [KEYSYNC, "dev-server", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("keysync: error: ") and done.stderr.count("\n") == 1


def test_the_command_serves_the_newest_generation_by_default(tmp_path: Path) -> None:
    argv = [KEYSYNC, "dev-server", "--port", "0", "--token", OWNER, "--heartbeat-interval", "1s"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=base_env()
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        with httpx.Client(base_url=url, headers={"Coder-Session-Token": OWNER}) as owner:
            key = owner.post(COLLECTIONS["ai-gateway-keys"], json={"name": "replica"}).json()
            assert gateway_status(url, key["key"]) == IN
            assert "last_heartbeat_at" in owner.get(COLLECTIONS["ai-gateway-keys"]).json()[0]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0
