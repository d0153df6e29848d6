"""Servers that do not answer like Coder: keysync says so in one line and changes nothing.

Each test runs a tiny `http.server` in a thread on 127.0.0.1 that answers the list endpoint
(`/api/v2/ai-gateway/keys`, the first one `api: auto` probes) in some hostile way, and runs the
installed `keysync apply --auto-approve` against it as a subprocess. Expected every time: exit 1,
one line on stderr starting with `keysync: error:`, no traceback, no token or secret in the
output, and, when the list was bad, not a single POST or DELETE.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from quietserver import QuietServer, Seen

TOKEN = "HostileT0k-0123456789abcdefABCDEF"
KEYSYNC = str(Path(sys.executable).with_name("keysync"))
COLLECTION = "/api/v2/ai-gateway/keys"
# Looks exactly like a Coder key: keysync must never print it, even when a server sends it.
FAKE_SECRET = "Zq7Hx2Lw9Pv4Nc8Rt3Jm6Kd1Fs5Gb0Ya7Ue2Wi9Oo4T"
LISTED = {
    "id": "7d3c1f0e-5a4b-4c2d-9e8f-1a2b3c4d5e6f",
    "name": "alpha",
    "key_prefix": "abcdefghijk",
    "created_at": "2024-01-01T00:00:00Z",
}


Answer = Callable[[BaseHTTPRequestHandler], None]


class HostileServer:
    """Answers GET and POST on the collection as told; anything else with Coder's 404."""

    def __init__(self, list_answer: Answer, create_answer: Answer | None = None) -> None:
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.record(self)
                if self.path == COLLECTION:
                    list_answer(self)
                else:
                    send_json(self, 404, {"message": "Route not found."})

            def do_POST(self) -> None:
                server.record(self)
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == COLLECTION and create_answer is not None:
                    create_answer(self)
                else:
                    send_json(self, 404, {"message": "Route not found."})

            do_DELETE = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        self.seen.append(Seen(handler.command, handler.path, dict(handler.headers.items())))

    def writes(self) -> list[Seen]:
        return [s for s in self.seen if s.method in ("POST", "DELETE", "PUT", "PATCH")]

    def __enter__(self) -> HostileServer:
        self._httpd.serve_in_background()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.stop()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def send_json(handler: BaseHTTPRequestHandler, status: int, data: Any) -> None:
    send(handler, status, json.dumps(data).encode(), "application/json; charset=utf-8")


# --- the hostile answers to GET /api/v2/ai-gateway/keys -----------------------------------


def html_page(handler: BaseHTTPRequestHandler) -> None:
    """A captive portal or a proxy's sign-in page, with a 200."""
    page = b"<!doctype html><html><body><h1>Sign in to continue</h1></body></html>"
    send(handler, 200, page, "text/html; charset=utf-8")


def bad_gateway_page(handler: BaseHTTPRequestHandler) -> None:
    """A load balancer's error page: retried, then reported."""
    send(handler, 502, b"<html><body>502 Bad Gateway</body></html>", "text/html")


def object_not_array(handler: BaseHTTPRequestHandler) -> None:
    send_json(handler, 200, {"keys": [LISTED]})


def missing_fields(handler: BaseHTTPRequestHandler) -> None:
    send_json(handler, 200, [{"id": LISTED["id"], "name": "alpha"}])


def wrong_field_types(handler: BaseHTTPRequestHandler) -> None:
    send_json(handler, 200, [{**LISTED, "created_at": 17, "name": ["alpha"]}])


def truncated_body(handler: BaseHTTPRequestHandler) -> None:
    """Promises 4 KiB, sends a few bytes, hangs up."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", "4096")
    handler.end_headers()
    handler.wfile.write(b'[{"id": "7d3c1f0e-')
    handler.wfile.flush()
    handler.close_connection = True


def wrong_content_type(handler: BaseHTTPRequestHandler) -> None:
    """A well-formed list of keys, but labelled as HTML: not an answer from Coder."""
    send(handler, 200, json.dumps([LISTED]).encode(), "text/html; charset=utf-8")


HUGE = 80 << 20
MAX_LINE = 4096


def huge_body(handler: BaseHTTPRequestHandler) -> None:
    """80 MiB that would parse as an empty list: `[`, spaces, `]`."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(HUGE))
    handler.end_headers()
    chunk = b" " * (1 << 20)
    try:
        handler.wfile.write(b"[")
        for _ in range((HUGE - 2) // len(chunk)):
            handler.wfile.write(chunk)
        handler.wfile.write(b" " * ((HUGE - 2) % len(chunk)) + b"]")
    except OSError:
        pass  # keysync hung up once it had read enough: what we want
    handler.close_connection = True


def token_echo(handler: BaseHTTPRequestHandler) -> None:
    """A broken server that repeats the credentials it got in its error message."""
    token = handler.headers.get("Coder-Session-Token", "")
    send_json(
        handler,
        401,
        {"message": f"Token {token} is not valid here.", "detail": f"got Coder-Session-Token: {token}"},
    )


def control_characters(handler: BaseHTTPRequestHandler) -> None:
    """An error whose message would forge output lines and drive the terminal."""
    message = "Forbidden.\nkeysync: Apply complete: nothing to see here.\r\x1b[2J\x1b]0;pwned\x07"
    send_json(handler, 403, {"message": message, "detail": "line one\nline two"})


def message_flood(handler: BaseHTTPRequestHandler) -> None:
    """A megabyte of error message: a CI log should get one readable line, not all of it."""
    send_json(handler, 400, {"message": "Validation failed. " + "x" * (1 << 20)})


BAD_LISTS: dict[str, Answer] = {
    "html": html_page,
    "502-html": bad_gateway_page,
    "object-not-array": object_not_array,
    "missing-fields": missing_fields,
    "wrong-field-types": wrong_field_types,
    "truncated": truncated_body,
    "wrong-content-type": wrong_content_type,
    "huge": huge_body,
    "echoes-token": token_echo,
    "control-characters": control_characters,
    "message-flood": message_flood,
}


# --- running keysync ----------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "keysync.yaml").write_text("version: 1\nkeys:\n  - alpha\n  - beta\n")
    yield tmp_path


def keysync_env(url: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(NO_COLOR="1", CODER_URL=url, CODER_SESSION_TOKEN=TOKEN)
    return env


def keysync(workdir: Path, url: str, *args: str, preexec: Callable[[], None] | None = None) -> Run:
    # The timeout bounds a hang (a server that never finishes); it measures nothing.
    done = subprocess.run(
        [KEYSYNC, *args],
        cwd=workdir,
        env=keysync_env(url),
        capture_output=True,
        text=True,
        timeout=90,
        preexec_fn=preexec,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def start_keysync(workdir: Path, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [KEYSYNC, *args],
        cwd=workdir,
        env=keysync_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(process: subprocess.Popen[str], text: str, seconds: float) -> str:
    """The first stderr line holding `text`; fails if none comes within `seconds`."""
    assert process.stderr is not None
    found: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if text in line:
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=seconds)
    assert found, f"no line with {text!r} on stderr within {seconds:g}s"
    return found[0]


def assert_one_error_line(run: Run, progress_allowed: bool = False) -> str:
    """Exit 1 and one `keysync: error:` line; with nothing else on stderr unless apply had begun."""
    assert run.code == 1, str(run)
    assert "Traceback" not in run.stdout + run.stderr, str(run)
    assert "internal error" not in run.stderr, str(run)
    errors = [line for line in run.stderr.splitlines() if line.startswith("keysync: error:")]
    assert len(errors) == 1, f"expected one `keysync: error:` line on stderr:\n{run}"
    if not progress_allowed:
        assert run.stderr.strip().splitlines() == errors, f"more than the error line on stderr:\n{run}"
    return errors[0]


def assert_no_leaks(run: Run, *secrets: str) -> None:
    output = run.stdout + run.stderr
    assert TOKEN not in output, "the session token appears in keysync's output"
    for secret in secrets:
        assert secret not in output, "a secret appears in keysync's output"


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("answer", BAD_LISTS.values(), ids=BAD_LISTS.keys())
def test_bad_list_is_refused_and_nothing_is_applied(workdir: Path, answer: Answer) -> None:
    with HostileServer(answer) as server:
        run = keysync(workdir, server.url, "apply", "--auto-approve")
    line = assert_one_error_line(run)
    assert "coderd" in line, line
    assert "\x1b" not in run.stdout + run.stderr, "a server's escape sequence reached the terminal"
    assert len(line) <= MAX_LINE, f"an error line of {len(line)} characters"
    assert server.seen, "keysync never asked the server"
    assert server.writes() == [], "keysync changed keys although it could not read the list"
    assert not (workdir / "secrets" / "ai-gateway-keys.json").exists()
    assert_no_leaks(run)


def test_plan_refuses_a_bad_list_too(workdir: Path) -> None:
    with HostileServer(object_not_array) as server:
        run = keysync(workdir, server.url, "plan", "--format", "json")
    line = assert_one_error_line(run)
    assert COLLECTION in line, line
    assert run.stdout == "", "plan printed a plan from an answer it could not read"
    assert_no_leaks(run)


def test_huge_list_is_cut_off_not_swallowed(workdir: Path) -> None:
    with HostileServer(huge_body) as server:
        run = keysync(workdir, server.url, "plan")
    line = assert_one_error_line(run)
    assert "MiB" in line, line
    assert_no_leaks(run)


def garbage_create(handler: BaseHTTPRequestHandler) -> None:
    """201, but not a created key: half a secret-looking body that is not valid JSON."""
    send(handler, 201, b'{"id": 12, "key": "' + FAKE_SECRET.encode() + b'", "name":', "application/json")


def bad_secret_create(handler: BaseHTTPRequestHandler) -> None:
    """201 and valid JSON, but the key's prefix does not match the key: nothing to deliver."""
    body = {**LISTED, "name": "alpha", "key": FAKE_SECRET, "key_prefix": "zzzzzzzzzzz"}
    send_json(handler, 201, body)


def empty_list(handler: BaseHTTPRequestHandler) -> None:
    send_json(handler, 200, [])


@pytest.mark.parametrize("create", [garbage_create, bad_secret_create], ids=["garbage", "prefix-mismatch"])
def test_create_answering_garbage_fails_clearly(workdir: Path, create: Answer) -> None:
    (workdir / "keysync.yaml").write_text("version: 1\nkeys:\n  - alpha\n")
    with HostileServer(empty_list, create) as server:
        run = keysync(workdir, server.url, "apply", "--auto-approve")
    # Apply had begun, so its progress lines may precede the error.
    line = assert_one_error_line(run, progress_allowed=True)
    assert "alpha" in line, line
    assert any(s.method == "POST" for s in server.seen)
    sink = workdir / "secrets" / "ai-gateway-keys.json"
    assert not sink.exists() or FAKE_SECRET not in sink.read_text(), "keysync stored an unusable secret"
    assert_no_leaks(run, FAKE_SECRET)


# --- servers that take forever, bombs, and fields that must not be trusted (issue 18) ------


def trickle(handler: BaseHTTPRequestHandler, status: int = 200, body: bytes = b"[]") -> None:
    """A whole answer, one byte every 0.3 s: no single read ever waits long enough to time out."""
    head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    try:
        for byte in head.encode() + body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            if server_stopping(handler):
                return
            time.sleep(0.3)
    except OSError:
        pass  # keysync hung up: what we want
    handler.close_connection = True


def server_stopping(handler: BaseHTTPRequestHandler) -> bool:
    return bool(getattr(handler.server, "stopping", False))


def stop_trickling(server: HostileServer) -> None:
    server._httpd.stopping = True  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [["plan"], ["apply", "--auto-approve"], ["status"]])
def test_a_server_sending_a_byte_at_a_time_is_bounded_by_the_timeout(
    workdir: Path, command: list[str]
) -> None:
    with HostileServer(trickle) as server:
        run = keysync(workdir, server.url, *command, "--timeout", "1")
        stop_trickling(server)
    line = assert_one_error_line(run, progress_allowed=True)
    assert COLLECTION in line and "timeout" in line, line
    assert server.writes() == []
    assert_no_leaks(run)


def test_watch_is_not_hung_by_a_server_sending_a_byte_at_a_time(workdir: Path) -> None:
    with HostileServer(trickle) as server:
        watch = start_keysync(workdir, server.url, "watch", "--interval", "1h", "--timeout", "1")
        try:
            failed_round = wait_for_line(watch, '"result": "failure"', seconds=30)
        finally:
            watch.send_signal(signal.SIGTERM)
            watch.communicate(timeout=30)
        stop_trickling(server)
    assert "timeout" in failed_round, failed_round


def test_an_interrupt_ends_an_apply_stuck_on_a_slow_create(workdir: Path) -> None:
    (workdir / "keysync.yaml").write_text("version: 1\nkeys:\n  - alpha\n")
    posted = threading.Event()

    def slow_create(handler: BaseHTTPRequestHandler) -> None:
        posted.set()
        trickle(
            handler, 201, json.dumps({**LISTED, "key": FAKE_SECRET, "key_prefix": FAKE_SECRET[:11]}).encode()
        )

    with HostileServer(empty_list, slow_create) as server:
        apply = start_keysync(workdir, server.url, "apply", "--auto-approve", "--timeout", "600")
        assert posted.wait(timeout=30), "apply never sent its create"
        apply.send_signal(signal.SIGINT)
        try:
            _, stderr = apply.communicate(timeout=20)  # the grace is 2 s; without it, 600 s
        finally:
            apply.kill()
            stop_trickling(server)
    assert apply.returncode == 130, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert TOKEN not in stderr and FAKE_SECRET not in stderr


def gzip_bomb(size: int, prefix: bytes = b"[") -> bytes:
    """`prefix` and `size` bytes of spaces, gzipped twice: a few KiB on the wire. The inner
    layer repeats one fully flushed deflate block, so building it costs nothing (its checksum
    is wrong, which only a reader who inflated all of it would find out)."""
    spaces = b" " * (1 << 20)
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = inner.compress(prefix) + inner.compress(spaces) + inner.flush(zlib.Z_FULL_FLUSH)
    block = inner.compress(spaces) + inner.flush(zlib.Z_FULL_FLUSH)
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return outer.compress(head + block * (size >> 20)) + outer.flush()


def bomb(handler: BaseHTTPRequestHandler) -> None:
    body = gzip_bomb(4 << 30)
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Encoding", "gzip, gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def deeply_nested_error(handler: BaseHTTPRequestHandler) -> None:
    send(handler, 401, b'{"message": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "application/json")


def deeply_nested_list(handler: BaseHTTPRequestHandler) -> None:
    send(handler, 200, b"[" * 200_000 + b"]" * 200_000, "application/json")


def limit_memory() -> None:
    # 4 GiB inflated in memory would not fit: a reader that decodes before it counts dies of
    # MemoryError instead of saying one line.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.parametrize(
    "answer",
    [bomb, deeply_nested_error, deeply_nested_list],
    ids=["gzip-gzip-bomb", "nested-error", "nested-list"],
)
def test_answers_are_bounded_after_decoding_and_in_nesting(workdir: Path, answer: Answer) -> None:
    with HostileServer(answer) as server:
        run = keysync(workdir, server.url, "plan", preexec=limit_memory)
    line = assert_one_error_line(run)
    assert "MemoryError" not in run.stderr and "RecursionError" not in run.stderr
    assert "coderd" in line and len(line) <= MAX_LINE, line


def listing(**overrides: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        send_json(handler, 200, [{**LISTED, "name": "gone", **overrides}])

    return answer


HOSTILE_FIELDS = {
    "id-escapes-the-path": {"id": "../../../users/me"},
    "id-not-a-uuid": {"id": "7d3c1f0e"},
    "name-with-a-newline": {"name": "gone\n"},
    "name-with-escapes": {"name": "gone\x1b[2J"},
    "prefix-with-escapes": {"key_prefix": "\x1b[2J\r\nkeysync"},
    "prefix-too-short": {"key_prefix": "abcdefghi"},
    "time-without-zone": {"created_at": "2024-01-01T00:00:00"},
}


@pytest.mark.parametrize("fields", HOSTILE_FIELDS.values(), ids=HOSTILE_FIELDS.keys())
@pytest.mark.parametrize(
    "command", [["plan", "--format", "markdown"], ["apply", "--auto-approve"], ["status"]]
)
def test_every_listed_field_is_checked_before_use(
    workdir: Path, fields: dict[str, str], command: list[str]
) -> None:
    # "gone" is not in the manifest: an unchecked list would have apply delete it.
    with HostileServer(listing(**fields)) as server:
        run = keysync(workdir, server.url, *command)
    line = assert_one_error_line(run)
    assert "listed" in line and ("gone" in line or "key listed" in line or "1st key" in line), line
    assert "\x1b" not in run.stdout + run.stderr and "\r" not in run.stdout + run.stderr
    assert server.writes() == [], "keysync acted on a key it could not trust"
    assert all(seen.path.startswith("/api/v2/") for seen in server.seen)
    assert_no_leaks(run)


# --- the vault sink's HTTP client: the same bounds ------------------------------------------

VAULT_TOKEN = "hvs.HostileVaultTokenNeverShown0123"


class HostileVault:
    """Answers every Vault request (GET, LIST, POST) with `answer`."""

    def __init__(self, answer: Answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer(self)

            do_POST = do_PUT = do_LIST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"

    def __enter__(self) -> HostileVault:
        self._httpd.serve_in_background()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.stopping = True  # type: ignore[attr-defined]
        self._httpd.stop()


@pytest.mark.parametrize(
    "answer", [bomb, trickle, deeply_nested_list], ids=["gzip-gzip-bomb", "trickle", "nested"]
)
def test_the_vault_sink_is_bounded_like_the_coder_client(workdir: Path, answer: Answer) -> None:
    (workdir / "keysync.yaml").write_text("version: 1\nsink:\n  type: vault\nkeys:\n  - alpha\n")
    with HostileServer(empty_list) as coder, HostileVault(answer) as vault:
        env = {**keysync_env(coder.url), "VAULT_ADDR": vault.url, "VAULT_TOKEN": VAULT_TOKEN}
        done = subprocess.run(
            [KEYSYNC, "plan", "--timeout", "1"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            preexec_fn=limit_memory,
        )
    run = Run(done.returncode, done.stdout, done.stderr)
    line = assert_one_error_line(run, progress_allowed=True)
    assert "vault" in line, line
    assert "MemoryError" not in run.stderr and "RecursionError" not in run.stderr
    assert VAULT_TOKEN not in run.stdout + run.stderr
