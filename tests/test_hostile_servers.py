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
import subprocess
import sys
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


def keysync(workdir: Path, url: str, *args: str) -> Run:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(NO_COLOR="1", CODER_URL=url, CODER_SESSION_TOKEN=TOKEN)
    # The timeout bounds a hang (a server that never finishes); it measures nothing.
    done = subprocess.run([KEYSYNC, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=90)
    return Run(done.returncode, done.stdout, done.stderr)


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
