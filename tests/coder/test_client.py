"""The Coder client against the real dev server over HTTP on loopback, with injected faults, and
against a tiny scripted HTTP server for answers the dev server never gives (HTML, redirects,
broken bodies). Sleeping is the client's seam: tests inject a recording `sleep` and a fast
`Backoff`, so nothing here waits for real."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from keysync import errors as e
from keysync.coder.client import ClientSettings, CoderClient, check_url
from keysync.coder.retry import Backoff, rate_limit_floor
from keysync.devserver import DevServer, DevServerConfig
from keysync.keys import LiveKey
from keysync.secret import Secret

from replica import IN, gateway_status

OWNER = "OwnerTokn0-0123456789abcdefghijkl"
MEMBER = "MemberTok1-abcdefghijklmnopqrstuv"
WRONG = "WrongTokn2-zyxwvutsrqponmlkjihgfe"
COLLECTIONS = {
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
}
NEWEST = "/api/v2/ai-gateway/keys"
UNKNOWN_ID = "3f1c8f0e-6a4e-4c36-9d8e-2b1f0c7a5e11"
SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
FORBIDDEN_DETAIL = (
    "You don't have permission to view this content. If you believe this is a mistake, "
    "please contact your administrator or try signing in with different credentials."
)
FAST = Backoff(base=0.01, cap=0.05, attempts=4)
PATIENT = Backoff(base=0.01, cap=0.05, attempts=12)  # 0.5**12: a seeded 50% fault never wins
SECRET_SHAPE = re.compile(r"[0-9A-Za-z]{43}")
LOG_LINE = re.compile(r"(GET|POST|DELETE|PUT|PATCH|HEAD|OPTIONS) (\S+) (\S+) [\d.]+ms")


class Sleeps(list[float]):
    """A `sleep` for the client that records the delay and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# The dev server, with its request log read back


@dataclass
class Served:
    server: DevServer
    log: io.StringIO
    syncs: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def requests(self) -> list[str]:
        """`METHOD PATH OUTCOME` of every request the server has finished, in order.

        The server logs a request just after answering it, so a marker request is sent and
        awaited first: once it is logged, so are the client's requests, which ended before.
        """
        self.syncs += 1
        marker = f"/sync/{self.syncs}"
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", marker)
            connection.getresponse().read()
        finally:
            connection.close()
        deadline = time.monotonic() + 10
        while f"GET {marker} " not in self.log.getvalue():
            assert time.monotonic() < deadline, f"the dev server never logged {marker}"
            time.sleep(0.002)
        lines = (LOG_LINE.fullmatch(line) for line in self.log.getvalue().splitlines())
        return [
            " ".join(match.groups())
            for match in lines
            if match is not None and not match.group(2).startswith("/sync/")
        ]


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[DevServer] = []

    def _serve(**settings: Any) -> Served:
        config = DevServerConfig(**{"port": 0, "token": OWNER, "member_token": MEMBER, "seed": 7, **settings})
        log = io.StringIO()
        server = DevServer(config, log=log)
        server.start()
        started.append(server)
        return Served(server, log)

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture
def connect() -> Iterator[Callable[..., CoderClient]]:
    """Makes clients (closed at the end) that never sleep for real unless given a `sleep`."""
    made: list[CoderClient] = []

    def _connect(
        url: str,
        token: str = OWNER,
        *,
        backoff: Backoff = FAST,
        sleep: Callable[[float], None] | None = None,
        **settings: Any,
    ) -> CoderClient:
        client = CoderClient(
            ClientSettings(url=url, token=Secret(token), **settings),
            backoff=backoff,
            sleep=Sleeps() if sleep is None else sleep,
        )
        made.append(client)
        return client

    yield _connect
    for client in made:
        client.close()


def use_key(url: str, secret: str) -> int:
    """What an AI Gateway replica does with its key: connect (101, its heartbeat is recorded)."""
    return gateway_status(url, secret)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def assert_backoff_delays(sleeps: list[float], backoff: Backoff) -> None:
    for attempt, delay in enumerate(sleeps, start=1):
        assert 0 <= delay <= min(backoff.cap, backoff.base * 2**attempt)


# A tiny scripted HTTP server for answers Coder should never give


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # written as-is instead of a response; b"" hangs up unanswered


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def json_reply(status: int, value: object, **headers: str) -> Reply:
    body = json.dumps(value).encode()
    return Reply(status, body, {"Content-Type": "application/json; charset=utf-8", **headers})


ROUTE_NOT_FOUND = json_reply(404, {"message": "Route not found."})


class Scripted:
    """Answers `METHOD PATH` from a queue of replies (the last one repeats); records every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[Seen] = []
        self.gate: threading.Barrier | None = None  # when set, every answer waits at it first
        self._replies: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
        self._httpd.daemon_threads = True
        self._httpd.script = self  # type: ignore[attr-defined]
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def on(self, method: str, path: str, *replies: Reply) -> None:
        with self._lock:
            self._replies[f"{method} {path}"] = list(replies)

    def answer(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            queue = self._replies.get(f"{seen.method} {seen.path}")
            if not queue:
                return ROUTE_NOT_FOUND
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def count(self, method: str, path: str) -> int:
        return sum(1 for seen in self.seen if (seen.method, seen.path) == (method, path))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _ScriptedHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        script: Scripted = self.server.script  # type: ignore[attr-defined]
        reply = script.answer(Seen(self.command, self.path, headers, body))
        if script.gate is not None:
            script.gate.wait()
        self.close_connection = True
        if reply.raw is not None:
            self.wfile.write(reply.raw)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    started: list[Scripted] = []

    def _start(tls: ssl.SSLContext | None = None) -> Scripted:
        server = Scripted(tls)
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()


def created_body(name: str = "alpha", key: str = "A" * 43, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "key": key,
        "key_prefix": key[:11],
        "created_at": "2024-05-01T12:00:00.123456Z",
    }
    return {**body, **overrides}


# API generations and auto-detection

# What each generation's server answers to the three probes (the dev server, like coderd, routes
# the other generations' paths under /api/v2/aibridge/ and /api/v2/ai-gateway/ to a catch-all).
PROBES = {
    "ai-gateway-keys": {
        "GET /api/v2/ai-gateway/keys 200",
        "GET /api/v2/aibridge/keys 400",
        "GET /api/v2/aibridge/coderd-keys 400",
    },
    "aibridge-keys": {
        "GET /api/v2/ai-gateway/keys 404",
        "GET /api/v2/aibridge/keys 200",
        "GET /api/v2/aibridge/coderd-keys 400",
    },
    "coderd-keys": {
        "GET /api/v2/ai-gateway/keys 404",
        "GET /api/v2/aibridge/keys 400",
        "GET /api/v2/aibridge/coderd-keys 200",
    },
}


@pytest.mark.parametrize("generation", list(COLLECTIONS))
def test_auto_detects_each_generation_and_remembers_it(
    serve: Callable[..., Served], connect: Callable[..., CoderClient], generation: str
) -> None:
    served = serve(api=generation)
    client = connect(served.url)
    assert client.list_keys() == []
    assert client.api == generation
    created = client.create_key("alpha")
    assert [key.id for key in client.list_keys()] == [created.live.id]
    assert client.delete_key(created.live.id) is True
    assert client.delete_key(created.live.id) is False
    path = COLLECTIONS[generation]
    # Probes once, all three at once; the probe's answer serves as the first list.
    requests = served.requests()
    assert set(requests[:3]) == PROBES[generation]
    assert requests[3:] == [
        f"POST {path} 201",
        f"GET {path} 200",
        f"DELETE {path}/{created.live.id} 204",
        f"DELETE {path}/{created.live.id} 404",
    ]


@pytest.mark.parametrize("generation", list(COLLECTIONS))
def test_explicit_api_never_probes(
    serve: Callable[..., Served], connect: Callable[..., CoderClient], generation: str
) -> None:
    served = serve(api=generation)
    client = connect(served.url, api=generation)
    created = client.create_key("alpha")
    assert [key.name for key in client.list_keys()] == ["alpha"]
    assert client.delete_key(created.live.id) is True
    path = COLLECTIONS[generation]
    assert served.requests() == [
        f"POST {path} 201",
        f"GET {path} 200",
        f"DELETE {path}/{created.live.id} 204",
    ]


@pytest.mark.parametrize("first", ["create", "delete"])
def test_list_after_a_write_that_triggered_detection_is_fresh(
    serve: Callable[..., Served], connect: Callable[..., CoderClient], first: str
) -> None:
    served = serve(api="aibridge-keys")
    old = connect(served.url, api="aibridge-keys").create_key("old")
    client = connect(served.url)  # api: auto, detected by whichever call comes first
    if first == "create":
        client.create_key("new")
        expected = ["old", "new"]
    else:
        assert client.delete_key(old.live.id) is True
        expected = []
    assert [key.name for key in client.list_keys()] == expected


def test_an_explicit_api_that_falls_into_a_catch_all_says_what_it_got(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys")
    with pytest.raises(e.ApiValidationError) as caught:
        connect(served.url, api="coderd-keys").list_keys()
    assert caught.value.status == 400
    assert "text/plain" in str(caught.value)


def test_explicit_api_the_server_lacks_is_not_found(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="coderd-keys")
    with pytest.raises(e.NotFoundError) as caught:
        connect(served.url, api="ai-gateway-keys").list_keys()
    assert caught.value.message == "Route not found."


# A front that answers as coderd does, written from coderd-api.md rather than with the dev
# server's code, so that detection's correctness does not rest on our own emulator alone.

CATCH_ALL = Reply(400, b"no authentication key provided\n", {"Content-Type": "text/plain; charset=utf-8"})
LISTED = {
    "id": UNKNOWN_ID,
    "name": "alpha",
    "key_prefix": "abcdefghijk",
    "created_at": "2024-01-01T00:00:00Z",
    "last_heartbeat_at": "2024-01-02T00:00:00Z",
}


def coderd_front(scripted: Callable[..., Scripted], generation: str, *answer: Reply) -> Scripted:
    """`generation`'s collection answers `answer` (a list by default); the paths of the others
    fall into a catch-all (text/plain 400) where coderd mounts one, else into 404."""
    server = scripted()
    catch_alls = ("/api/v2/aibridge/", "/api/v2/ai-gateway/" if generation == "ai-gateway-keys" else "none")
    for api, path in COLLECTIONS.items():
        if api == generation:
            server.on("GET", path, *(answer or (json_reply(200, [LISTED]),)))
        elif path.startswith(catch_alls):
            server.on("GET", path, CATCH_ALL)
    return server


@pytest.mark.parametrize("generation", list(COLLECTIONS))
def test_auto_finds_each_generation_behind_coderd_catch_alls(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], generation: str
) -> None:
    server = coderd_front(scripted, generation)
    client = connect(server.url)
    [key] = client.list_keys()
    assert client.api == generation
    assert key.last_seen == datetime(2024, 1, 2, tzinfo=UTC)
    assert sorted(seen.path for seen in server.seen) == sorted(COLLECTIONS.values())  # once each


def test_the_probes_go_out_together(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    # Each answer waits until all three requests have arrived: probes sent one after the
    # other would never get past the first.
    together = threading.Barrier(3, timeout=10)
    server = coderd_front(scripted, "coderd-keys")
    server.gate = together
    assert connect(server.url).api == "coderd-keys"
    assert not together.broken


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"message": SIGNED_OUT, "detail": "API key is invalid."}, e.AuthError),
        (403, {"message": "Forbidden.", "detail": FORBIDDEN_DETAIL}, e.ForbiddenError),
        (403, {"message": "AI Gateway is a Premium feature. Contact sales!"}, e.FeatureDisabledError),
        (500, {"message": "Failed to list keys."}, e.ServerError),
    ],
    ids=["401", "403-member", "403-unlicensed", "500"],
)
def test_a_json_error_from_a_keys_route_is_that_error(
    scripted: Callable[..., Scripted],
    connect: Callable[..., CoderClient],
    status: int,
    body: dict[str, str],
    error: type[e.ApiError],
) -> None:
    server = coderd_front(scripted, "ai-gateway-keys", json_reply(status, body))
    with pytest.raises(error) as caught:
        connect(server.url).list_keys()
    assert (caught.value.status, caught.value.message) == (status, body["message"])


def test_auto_on_a_server_without_keys_api_names_what_each_path_said(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()  # 404 Route not found. everywhere, but the catch-all under /aibridge/
    server.on("GET", COLLECTIONS["aibridge-keys"], CATCH_ALL)
    server.on("GET", COLLECTIONS["coderd-keys"], CATCH_ALL)
    with pytest.raises(e.MalformedResponseError) as caught:
        connect(server.url).list_keys()
    line = str(caught.value)
    assert "\n" not in line
    assert "serves none of the AI Gateway keys APIs" in line
    assert "/api/v2/ai-gateway/keys answered 404" in line
    assert "/api/v2/aibridge/keys answered 400 text/plain ('no authentication key provided')" in line
    assert "coderd.api" in line and "--api" in line
    assert sorted(seen.path for seen in server.seen) == sorted(COLLECTIONS.values())


def test_auto_on_a_server_answering_404_everywhere_is_not_found(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    with pytest.raises(e.NotFoundError, match=r"answered 404, .* answered 404, .* answered 404"):
        connect(scripted().url).list_keys()


# Typed results


def test_create_returns_the_key_and_its_secret_once(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys")
    client = connect(served.url, api="ai-gateway-keys")
    created = client.create_key("alpha")
    secret = created.secret.reveal()
    assert SECRET_SHAPE.fullmatch(secret)
    assert created.live.name == "alpha"
    assert created.live.key_prefix == secret[:11]
    assert created.live.created_at.tzinfo is not None
    assert created.live.last_seen is None
    assert secret not in repr(created) and secret not in str(created)
    [listed] = client.list_keys()
    assert listed == created.live


def test_list_is_typed_and_in_creation_order(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    client = connect(serve(api="coderd-keys").url, api="coderd-keys")
    names = ["gamma", "alpha", "beta"]
    for name in names:
        client.create_key(name)
    keys = client.list_keys()
    assert all(isinstance(key, LiveKey) for key in keys)
    assert [key.name for key in keys] == names
    assert [key.created_at for key in keys] == sorted(key.created_at for key in keys)
    assert len({key.id for key in keys}) == 3


def test_a_gateway_using_its_key_shows_as_last_used(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="aibridge-keys")
    client = connect(served.url, api="aibridge-keys")
    used, idle = client.create_key("used"), client.create_key("idle")
    assert use_key(served.url, used.secret.reveal()) == IN
    assert use_key(served.url, "x" * 43) == 401
    keys = {key.name: key for key in client.list_keys()}
    assert keys["used"].last_used_at is not None
    assert keys["used"].last_seen == keys["used"].last_used_at
    assert keys["used"].in_use(datetime.now(UTC))
    assert keys["idle"].last_seen is None
    assert not keys["idle"].in_use(datetime.now(UTC))
    assert idle.live.id == keys["idle"].id


def test_list_ignores_unknown_fields_and_reads_last_heartbeat_at(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()
    listed = [
        {
            "id": UNKNOWN_ID,
            "name": "beat",
            "key_prefix": "abcdefghijk",
            "created_at": "2024-01-02T03:04:05.123456789Z",
            "last_heartbeat_at": "2024-01-03T00:00:00Z",
            "owner": {"nested": [1, 2]},
            "hashed_secret": "never-read",
        },
        {
            "id": str(uuid.uuid4()),
            "name": "both",
            "key_prefix": "bcdefghijkl",
            "created_at": "2024-01-02T03:04:05+02:00",
            "last_used_at": "2024-01-04T00:00:00Z",
            "last_heartbeat_at": "2024-01-05T00:00:00Z",
        },
    ]
    server.on("GET", NEWEST, json_reply(200, listed))
    beat, both = connect(server.url).list_keys()
    assert beat.last_heartbeat_at == datetime(2024, 1, 3, tzinfo=UTC)
    assert beat.last_used_at is None
    assert beat.last_seen == beat.last_heartbeat_at
    assert not hasattr(beat, "hashed_secret")
    assert both.last_seen == datetime(2024, 1, 5, tzinfo=UTC)


def test_an_early_cgw_key_is_accepted(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()
    key = "cgw_" + "b" * 39
    server.on("POST", NEWEST, json_reply(201, created_body(key=key)))
    created = connect(server.url, api="ai-gateway-keys").create_key("alpha")
    assert created.secret.reveal() == key
    assert created.live.key_prefix == key[:11]


def test_requests_carry_the_token_and_no_bypass_unless_asked(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()
    server.on("GET", NEWEST, json_reply(200, []))
    server.on("POST", NEWEST, json_reply(201, created_body()))
    plain = connect(server.url, api="ai-gateway-keys")
    plain.list_keys()
    plain.create_key("alpha")
    connect(server.url, api="ai-gateway-keys", bypass_rate_limit=True).list_keys()
    first, second, bypassing = server.seen
    for seen in server.seen:
        assert seen.headers["coder-session-token"] == OWNER
        assert seen.headers["user-agent"].startswith("keysync/")
    assert json.loads(second.body) == {"name": "alpha"}
    assert "x-coder-bypass-ratelimit" not in first.headers
    assert bypassing.headers["x-coder-bypass-ratelimit"] == "true"


# Typed errors carrying Coder's message, detail and validations


def test_a_wrong_token_is_an_auth_error(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys")
    with pytest.raises(e.AuthError) as caught:
        connect(served.url, WRONG).list_keys()
    error = caught.value
    assert (error.status, error.message) == (401, SIGNED_OUT)
    assert error.detail.startswith("API key is invalid.")
    assert SIGNED_OUT in str(error) and "API key is invalid." in str(error)
    # Not retried; the catch-alls never ask for a session token.
    assert set(served.requests()) == {
        "GET /api/v2/ai-gateway/keys 401",
        "GET /api/v2/aibridge/keys 400",
        "GET /api/v2/aibridge/coderd-keys 400",
    }


def test_a_wrong_token_on_an_older_server_is_an_auth_error_too(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    # Routes are checked before tokens: the missing generation still answers 404.
    served = serve(api="coderd-keys")
    with pytest.raises(e.AuthError):
        connect(served.url, WRONG).list_keys()
    assert sorted(line.rsplit(" ", 1)[1] for line in served.requests()) == ["400", "401", "404"]


def test_a_member_token_is_forbidden(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="aibridge-keys")
    client = connect(served.url, MEMBER)
    for call in (client.list_keys, lambda: client.create_key("alpha"), lambda: client.delete_key(UNKNOWN_ID)):
        with pytest.raises(e.ForbiddenError) as caught:
            call()
        assert (caught.value.status, caught.value.message) == (403, "Forbidden.")
        assert caught.value.detail.startswith(FORBIDDEN_DETAIL)
    assert connect(served.url).list_keys() == []


@pytest.mark.parametrize(
    ("generation", "message"),
    [
        ("coderd-keys", "AI Bridge is a Premium feature. Contact sales!"),
        ("ai-gateway-keys", "AI Gateway is a Premium feature. Contact sales!"),
    ],
)
def test_an_unlicensed_server_is_feature_disabled(
    serve: Callable[..., Served], connect: Callable[..., CoderClient], generation: str, message: str
) -> None:
    served = serve(api=generation, feature_disabled=True)
    with pytest.raises(e.FeatureDisabledError) as caught:
        connect(served.url).list_keys()  # auto: the 404 probes come first
    assert (caught.value.status, caught.value.message) == (403, message)
    assert message in str(caught.value)


def test_a_duplicate_name_is_a_validation_error(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys")
    client = connect(served.url)
    client.create_key("alpha")
    with pytest.raises(e.ApiValidationError) as caught:
        client.create_key("alpha")
    error = caught.value
    assert (error.status, error.message) == (400, "Key name must be unique.")
    assert error.validations == [("name", "A key with this name already exists.")]
    assert "Key name must be unique." in str(error)
    assert "name: A key with this name already exists." in str(error)


def test_an_invalid_name_is_a_validation_error(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    client = connect(serve(api="coderd-keys").url)
    with pytest.raises(e.ApiValidationError) as caught:
        client.create_key("Not_Valid")
    assert caught.value.message == "Invalid key name."
    assert [field for field, _ in caught.value.validations] == ["name"]


@pytest.mark.parametrize("key_id", ["../../../users/me", "not-a-uuid", UNKNOWN_ID + "/..", UNKNOWN_ID + "\n"])
def test_an_id_that_is_not_a_uuid_never_reaches_a_path(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], key_id: str
) -> None:
    server = scripted()
    with pytest.raises(e.MalformedResponseError, match="not a UUID"):
        connect(server.url, api="ai-gateway-keys").delete_key(key_id)
    assert server.seen == []


def test_deleting_an_unknown_key_is_already_gone(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    client = connect(serve(api="ai-gateway-keys").url)
    assert client.delete_key(UNKNOWN_ID) is False


# Retries against injected faults


def test_reads_and_deletes_get_through_a_flaky_server(
    tmp_path: Path, serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    state = tmp_path / "state.json"
    healthy = serve(api="aibridge-keys", state=state)
    ids = [connect(healthy.url).create_key(f"key-{n}").live.id for n in range(4)]
    healthy.server.stop()

    flaky = serve(api="aibridge-keys", state=state, fail_rate=0.5, seed=3)
    sleeps = Sleeps()
    client = connect(flaky.url, backoff=PATIENT, sleep=sleeps)
    for _ in range(5):
        assert sorted(key.id for key in client.list_keys()) == sorted(ids)
    assert [client.delete_key(key_id) for key_id in ids] == [True] * 4
    assert client.list_keys() == []

    requests = flaky.requests()
    outcomes = [line.rsplit(" ", 1)[1] for line in requests]
    failures = outcomes.count("500")
    assert failures > 0  # the seed does inject failures, so retries were exercised
    assert [line for line in requests if line.startswith("DELETE") and line.endswith(" 404")] == []
    assert outcomes.count("204") == 4
    assert len(sleeps) == failures  # one backoff per failure, none otherwise
    assert all(0 <= delay <= PATIENT.cap for delay in sleeps)


def test_a_server_that_always_fails_is_given_up_on(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="coderd-keys", fail_rate=1.0)
    sleeps = Sleeps()
    with pytest.raises(e.ServerError) as caught:
        connect(served.url, api="coderd-keys", sleep=sleeps).list_keys()
    assert caught.value.status == 500
    assert caught.value.message == "An internal server error occurred."
    assert served.requests() == ["GET /api/v2/aibridge/coderd-keys 500"] * FAST.attempts
    assert len(sleeps) == FAST.attempts - 1
    assert_backoff_delays(sleeps, FAST)


def test_a_create_answered_500_is_an_unknown_outcome_sent_once(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys", fail_rate=1.0)
    sleeps = Sleeps()
    with pytest.raises(e.OutcomeUnknownError) as caught:
        connect(served.url, api="ai-gateway-keys", sleep=sleeps).create_key("alpha")
    assert caught.value.status == 500
    said = str(caught.value)  # Coder's own words, said once
    assert said == "coderd answered 500: POST /api/v2/ai-gateway/keys: Failed to create key. Please retry."
    assert served.requests() == ["POST /api/v2/ai-gateway/keys 500"]
    assert sleeps == []


def test_a_create_whose_answer_is_lost_is_unknown_and_committed(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys", lose_response_rate=1.0)
    client = connect(served.url)
    assert client.list_keys() == []
    with pytest.raises(e.OutcomeUnknownError):
        client.create_key("alpha")
    assert [key.name for key in client.list_keys()] == ["alpha"]
    assert served.requests()[3:] == [
        "POST /api/v2/ai-gateway/keys dropped",
        "GET /api/v2/ai-gateway/keys 200",
    ]


def test_a_create_that_times_out_is_unknown_and_sent_once(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="coderd-keys", latency_ms=300)
    sleeps = Sleeps()
    with pytest.raises(e.OutcomeUnknownError):
        connect(served.url, api="coderd-keys", timeout=0.05, sleep=sleeps).create_key("alpha")
    assert sleeps == []  # no backoff: it was not sent again
    # The server commits after its latency; a patient reader then sees the key, once.
    assert [key.name for key in connect(served.url, api="coderd-keys").list_keys()] == ["alpha"]


@pytest.mark.parametrize("call", ["list", "create", "delete", "detect"])
def test_connection_refused_is_retried_a_bounded_number_of_times(
    connect: Callable[..., CoderClient], call: str
) -> None:
    sleeps = Sleeps()
    url = f"http://127.0.0.1:{closed_port()}"
    client = connect(url, api="auto" if call == "detect" else "coderd-keys", sleep=sleeps)
    actions: dict[str, Callable[[], object]] = {
        "list": client.list_keys,
        "detect": client.list_keys,
        "create": lambda: client.create_key("alpha"),  # never reached the server: safe to retry
        "delete": lambda: client.delete_key(UNKNOWN_ID),
    }
    with pytest.raises(e.TransportError) as caught:
        actions[call]()
    assert f"cannot reach {url}" in str(caught.value)
    probes = len(COLLECTIONS) if call == "detect" else 1  # each probe retries on its own
    assert len(sleeps) == probes * (FAST.attempts - 1)
    assert_backoff_delays(sleeps if probes == 1 else [], FAST)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_for_reads_and_deletes(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], status: int
) -> None:
    server = scripted()
    html = Reply(status, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"})
    server.on("GET", NEWEST, html, json_reply(200, []))
    server.on("DELETE", f"{NEWEST}/{UNKNOWN_ID}", html, html, Reply(204))
    sleeps = Sleeps()
    client = connect(server.url, api="ai-gateway-keys", sleep=sleeps)
    assert client.list_keys() == []
    assert client.delete_key(UNKNOWN_ID) is True
    assert len(sleeps) == 3
    assert server.count("GET", NEWEST) == 2
    assert server.count("DELETE", f"{NEWEST}/{UNKNOWN_ID}") == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_create_answered_with_a_server_error_is_never_repeated(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], status: int
) -> None:
    server = scripted()
    server.on("POST", NEWEST, json_reply(status, {"message": "Oops."}), json_reply(201, created_body()))
    sleeps = Sleeps()
    with pytest.raises(e.ApiError) as caught:
        connect(server.url, api="ai-gateway-keys", sleep=sleeps).create_key("alpha")
    if status != 503:  # PRODUCT.md names 500, 502 and 504; 503 is at least not repeated
        assert isinstance(caught.value, e.OutcomeUnknownError)
    assert server.count("POST", NEWEST) == 1
    assert sleeps == []


# Rate limits


def stay_inside_one_window() -> None:
    """The dev server's windows are whole UTC minutes; start well inside one, so that it cannot
    reset (and let a request through) while a test counts on it being exhausted."""
    left = 60 - time.time() % 60
    if left < 4:
        time.sleep(left + 0.05)


def test_a_rate_limited_read_never_waits_longer_than_the_window_then_gives_up(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys", rate_limit=1)
    stay_inside_one_window()
    sleeps = Sleeps()  # never sleeps for real: the window stays spent, and the budget runs out
    budget = 100.0
    client = connect(served.url, backoff=Backoff(base=0.01, rate_limit_budget=budget), sleep=sleeps)
    assert client.list_keys() == []  # the one request this window allows
    before = time.time()
    reset = (before // 60 + 1) * 60  # X-RateLimit-Reset: the end of this window
    with pytest.raises(e.RateLimitedError) as caught:
        client.list_keys()
    assert caught.value.status == 429
    assert caught.value.message == "You've been rate limited for sending more than 1 requests in 1m0s."
    # The first wait is for the window's end (not Retry-After's blind minute); none is longer
    # than the rest of this window and the next one (in a sliding window the previous window's
    # count fades over the next: with a limit of 1 the budget is back halfway through it); the
    # waits stop before they pass the budget.
    assert reset - time.time() <= sleeps[0] <= reset - before + 1
    assert all(delay <= 121 for delay in sleeps), (sleeps, before, reset, served.requests())
    assert sum(sleeps) <= budget
    assert 1 <= served.requests().count("GET /api/v2/ai-gateway/keys 429") <= 3


@pytest.mark.parametrize("workers", [1, 4])
def test_pacing_meets_a_sliding_window_limit_at_most_once(
    serve: Callable[..., Served], connect: Callable[..., CoderClient], workers: int
) -> None:
    # 12 creates against 4 requests a second: three windows' worth. Only the first request
    # after the first window's end may meet a 429 (it shows the window's length); after that
    # the pacer knows the limiter and sends each request when it will be admitted.
    served = serve(api="ai-gateway-keys", rate_limit=4, rate_window=1.0)
    client = connect(served.url, api="ai-gateway-keys", sleep=time.sleep)
    names = iter(f"key-{n}" for n in range(12))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                name = next(names, None)
            if name is None:
                return
            client.create_key(name)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    requests = served.requests()
    assert requests.count("POST /api/v2/ai-gateway/keys 201") == 12
    assert requests.count("POST /api/v2/ai-gateway/keys 429") <= 1, requests


@pytest.mark.parametrize("retry_after", ["-5", "0", "1e12", "soon"])
def test_a_retry_after_that_makes_no_sense_causes_no_storm(
    scripted: Callable[..., Scripted],
    connect: Callable[..., CoderClient],
    caplog: pytest.LogCaptureFixture,
    retry_after: str,
) -> None:
    server = scripted()
    server.on("GET", NEWEST, json_reply(429, {"message": "Slow down."}, **{"Retry-After": retry_after}))
    sleeps = Sleeps()
    backoff = Backoff(base=0.01, cap=0.05, rate_limit_attempts=5)
    with pytest.raises(e.RateLimitedError):
        connect(server.url, api="ai-gateway-keys", backoff=backoff, sleep=sleeps).list_keys()
    assert server.count("GET", NEWEST) == backoff.rate_limit_attempts
    assert all(delay >= rate_limit_floor(1) - 0.01 for delay in sleeps)  # never an immediate retry
    assert all(delay <= 1.5 for delay in sleeps)  # and never the absurd wait
    if retry_after != "soon":
        warnings = [r for r in caplog.records if "unusable Retry-After" in r.getMessage()]
        assert len(warnings) == 1  # said once, not once per retry


def test_a_rate_limit_longer_than_the_budget_fails_at_once(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys", rate_limit=1)
    stay_inside_one_window()
    connect(served.url, api="ai-gateway-keys").list_keys()  # the same user spends the window
    sleeps = Sleeps()
    client = connect(served.url, api="ai-gateway-keys", backoff=Backoff(rate_limit_budget=0.5), sleep=sleeps)
    with pytest.raises(e.RateLimitedError):
        client.list_keys()
    assert sleeps == []
    assert served.requests() == ["GET /api/v2/ai-gateway/keys 200", "GET /api/v2/ai-gateway/keys 429"]


def test_bypassing_the_rate_limit_never_meets_it(
    serve: Callable[..., Served], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="coderd-keys", rate_limit=2)
    sleeps = Sleeps()
    client = connect(served.url, api="coderd-keys", bypass_rate_limit=True, sleep=sleeps)
    for _ in range(6):
        assert client.list_keys() == []
    assert sleeps == []
    assert served.requests() == ["GET /api/v2/aibridge/coderd-keys 200"] * 6


def test_a_rate_limited_create_is_retried_after_the_wait(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    # A 429 comes from the limiter, before the handler: nothing was created, so it is safe.
    server = scripted()
    limited = json_reply(429, {"message": "You've been rate limited."}, **{"Retry-After": "2"})
    server.on("POST", NEWEST, limited, json_reply(201, created_body()))
    sleeps = Sleeps()
    created = connect(server.url, api="ai-gateway-keys", sleep=sleeps).create_key("alpha")
    assert created.live.name == "alpha"
    assert server.count("POST", NEWEST) == 2
    [delay] = sleeps
    assert 2 <= delay <= 2.25


def test_a_429_with_only_ratelimit_reset_waits_until_then(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()
    before = time.time()
    reset = int(before) + 20
    limited = json_reply(429, {"message": "Slow down."}, **{"X-RateLimit-Reset": str(reset)})
    server.on("GET", NEWEST, limited, json_reply(200, []))
    sleeps = Sleeps()
    assert connect(server.url, api="ai-gateway-keys", sleep=sleeps).list_keys() == []
    after = time.time()
    [delay] = sleeps
    assert reset - after <= delay <= reset - before + 0.25


def test_a_429_without_hints_backs_off_briefly(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()
    server.on("GET", NEWEST, json_reply(429, {"message": "Slow down."}), json_reply(200, []))
    sleeps = Sleeps()
    assert connect(server.url, api="ai-gateway-keys", sleep=sleeps).list_keys() == []
    [delay] = sleeps
    assert rate_limit_floor(1) - 0.01 <= delay <= max(FAST.cap, rate_limit_floor(1))


def test_no_requests_left_paces_the_next_one_until_the_reset(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()
    before = time.time()
    reset = int(before) + 30
    quota = {"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    server.on("GET", NEWEST, json_reply(200, [], **quota))
    waits: list[tuple[float, int]] = []
    client = connect(server.url, api="ai-gateway-keys", sleep=lambda s: waits.append((s, len(server.seen))))
    client.list_keys()
    client.list_keys()
    after = time.time()
    [(delay, sent_before)] = waits
    assert sent_before == 1  # the wait came before the second request went out
    assert reset - after <= delay <= reset - before + 0.5  # and a little margin for clocks


# Answers Coder should never give


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"<!doctype html><title>Sign in</title>", {"Content-Type": "text/html"}),
        json_reply(200, {"keys": []}),
        json_reply(200, None),
        json_reply(200, [{"id": UNKNOWN_ID}]),
        json_reply(200, [{"id": UNKNOWN_ID, "name": "a", "key_prefix": "p", "created_at": "yesterday"}]),
        Reply(200, b"[{", {"Content-Type": "application/json"}),
        Reply(200, b""),
    ],
    ids=["html", "object", "null", "missing-fields", "bad-time", "truncated", "empty"],
)
@pytest.mark.parametrize("api", ["ai-gateway-keys", "auto"])
def test_a_list_that_is_not_a_list_of_keys_is_malformed(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], reply: Reply, api: str
) -> None:
    server = scripted()
    server.on("GET", NEWEST, reply)
    with pytest.raises(e.MalformedResponseError) as caught:
        connect(server.url, api=api).list_keys()
    # Under api: auto, an answer that is not JSON is no generation's list at all.
    said = ("not a list of keys", "not JSON", "serves none of the AI Gateway keys APIs")
    assert any(words in str(caught.value) for words in said)
    assert server.count("GET", NEWEST) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Created</html>",
        b"{}",
        b"",
        json.dumps(created_body(key="A" * 42)).encode(),
        json.dumps(created_body(key="A" * 42 + "!")).encode(),
        json.dumps(created_body(key_prefix="Bbbbbbbbbbb")).encode(),
        json.dumps({k: v for k, v in created_body().items() if k != "key"}).encode(),
    ],
    ids=["html", "empty-object", "empty", "short-key", "bad-character", "wrong-prefix", "no-key"],
)
def test_a_201_with_an_unreadable_body_is_an_unknown_outcome(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], body: bytes
) -> None:
    server = scripted()
    server.on("POST", NEWEST, Reply(201, body, {"Content-Type": "application/json"}))
    with pytest.raises(e.OutcomeUnknownError) as caught:
        connect(server.url, api="ai-gateway-keys").create_key("alpha")
    assert "AAAAAAAAAA" not in str(caught.value)  # no piece of a secret in the message
    assert server.count("POST", NEWEST) == 1


def test_an_html_error_page_is_reported_without_its_body(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    server = scripted()
    page = b"<html><body>Request blocked by policy " + b"x" * 500 + b"</body></html>"
    server.on("GET", NEWEST, Reply(400, page, {"Content-Type": "text/html; charset=utf-8"}))
    with pytest.raises(e.ApiValidationError) as caught:
        connect(server.url, api="ai-gateway-keys").list_keys()
    assert caught.value.status == 400
    assert "text/html" in str(caught.value)
    assert "blocked" not in str(caught.value)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("api", ["ai-gateway-keys", "auto"])
def test_a_redirect_is_an_error_and_the_target_never_sees_the_token(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], status: int, api: str
) -> None:
    target = scripted()
    target.on("GET", NEWEST, json_reply(200, []))
    server = scripted()
    location = f"{target.url}{NEWEST}"
    server.on("GET", NEWEST, Reply(status, b"", {"Location": location}))
    server.on("POST", NEWEST, Reply(status, b"", {"Location": location}))
    client = connect(server.url, api=api)
    with pytest.raises(e.ApiError) as caught:
        client.list_keys()
    assert caught.value.status == status
    assert "redirect" in str(caught.value) and location in str(caught.value)
    if api != "auto":
        with pytest.raises(e.ApiError, match="redirect"):
            client.create_key("alpha")
    assert target.seen == []


@pytest.mark.parametrize(
    "raw", [b"", b"garbage\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n"], ids=["hang-up", "garbage", "bad-status"]
)
def test_a_broken_answer_is_retried_for_reads_and_unknown_for_creates(
    scripted: Callable[..., Scripted], connect: Callable[..., CoderClient], raw: bytes
) -> None:
    server = scripted()
    server.on("GET", NEWEST, Reply(raw=raw))
    server.on("POST", NEWEST, Reply(raw=raw))
    sleeps = Sleeps()
    client = connect(server.url, api="ai-gateway-keys", sleep=sleeps)
    with pytest.raises(e.TransportError):
        client.list_keys()
    assert server.count("GET", NEWEST) == FAST.attempts
    assert len(sleeps) == FAST.attempts - 1
    with pytest.raises(e.OutcomeUnknownError):
        client.create_key("alpha")
    assert server.count("POST", NEWEST) == 1
    assert len(sleeps) == FAST.attempts - 1


# URLs and TLS


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:7080",
        "http://127.0.0.1",
        "http://127.3.4.5:1",
        "http://localhost:7080",
        "http://LOCALHOST",
        "http://[::1]:7080",
        "https://coder.example.com",
        "https://10.0.0.1:8443",
        "https://coder.example.com/",
    ],
)
def test_check_url_accepts_https_and_loopback_http(url: str) -> None:
    assert check_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://coder.example.com",
        "http://10.0.0.1:7080",
        "http://0.0.0.0:7080",
        "http://127.0.0.1.nip.io",
        "http://localhost.example.com",
        "http://[2001:db8::1]",
        "ftp://127.0.0.1",
        "coder.example.com",
        "https://",
        "",
    ],
)
def test_check_url_refuses_plain_http_off_loopback_and_non_urls(url: str) -> None:
    with pytest.raises(e.UsageError):
        check_url(url)


def test_a_client_refuses_plain_http_before_any_request(connect: Callable[..., CoderClient]) -> None:
    with pytest.raises(e.UsageError, match="plain http"):
        connect("http://coder.example.com")


@pytest.fixture(scope="module")
def tls_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(tls_authority: trustme.CA, scripted: Callable[..., Scripted]) -> Scripted:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_authority.issue_cert("127.0.0.1").configure_cert(context)
    server = scripted(context)
    server.on("GET", NEWEST, json_reply(200, []))
    return server


def test_tls_is_verified_by_default(tls_server: Scripted, connect: Callable[..., CoderClient]) -> None:
    with pytest.raises(e.TransportError) as caught:
        connect(tls_server.url, api="ai-gateway-keys").list_keys()
    assert "certificate" in str(caught.value).lower()
    assert tls_server.seen == []


def test_ca_cert_trusts_a_private_authority(
    tmp_path: Path, tls_authority: trustme.CA, tls_server: Scripted, connect: Callable[..., CoderClient]
) -> None:
    ca_file = tmp_path / "ca.pem"
    tls_authority.cert_pem.write_to_path(str(ca_file))
    assert connect(tls_server.url, ca_cert=ca_file).list_keys() == []
    assert tls_server.seen[0].headers["coder-session-token"] == OWNER


def test_an_unreadable_ca_cert_is_a_usage_error(tmp_path: Path, connect: Callable[..., CoderClient]) -> None:
    with pytest.raises(e.UsageError, match="ca-cert"):
        connect("https://coder.example.com", ca_cert=tmp_path / "missing.pem")


# Secrets stay secret


def test_the_session_token_never_shows(
    serve: Callable[..., Served], scripted: Callable[..., Scripted], connect: Callable[..., CoderClient]
) -> None:
    served = serve(api="ai-gateway-keys")
    redirecting = scripted()
    redirecting.on("GET", NEWEST, Reply(302, b"", {"Location": f"{served.url}{NEWEST}"}))
    settings = ClientSettings(url=served.url, token=Secret(OWNER))
    client = connect(served.url)
    texts = [repr(client), str(client), repr(settings), str(settings)]
    failing: list[Callable[[], object]] = [
        connect(served.url, WRONG).list_keys,
        connect(served.url, MEMBER).list_keys,
        lambda: client.create_key("Bad_Name"),
        connect(redirecting.url).list_keys,
        connect(f"http://127.0.0.1:{closed_port()}").list_keys,
    ]
    for call in failing:
        with pytest.raises(e.ApiError) as caught:
            call()
        error = caught.value
        texts += [str(error), repr(error), error.message, error.detail, repr(error.args)]
    for token in (OWNER, WRONG, MEMBER):
        assert all(token not in text for text in texts)
