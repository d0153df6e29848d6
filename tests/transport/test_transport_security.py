"""How keysync talks to Coder: TLS verified, plain http only to loopback, the token only to Coder.

Real servers in threads on loopback (HTTPS with a `trustme` CA), the installed `keysync` as a
subprocess. Every test also checks that the session token and any secret stay out of the output.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import string
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from quietserver import QuietServer, Seen

TOKEN = "TransportT-0123456789abcdefABCDEF"
KEYSYNC = str(Path(sys.executable).with_name("keysync"))
COLLECTION = "/api/v2/ai-gateway/keys"
TOKEN_HEADER = "Coder-Session-Token"


class FakeCoder:
    """Just enough of Coder's newest keys API to plan and apply; or a redirect to elsewhere.

    `redirect` maps a method to (status, location): that method is answered with a redirect.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        redirect: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.seen: list[Seen] = []
        self.keys: list[dict[str, str]] = []
        self.secrets: list[str] = []
        self._redirect = redirect or {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.answer(self)

            do_POST = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = QuietServer((host, 0), Handler)
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self._httpd.server_port}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.seen.append(Seen(handler.command, handler.path, dict(handler.headers.items())))
        if handler.command in self._redirect:
            status, location = self._redirect[handler.command]
            handler.send_response(status)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if handler.path != COLLECTION:
            return reply(handler, 404, {"message": "Route not found."})
        if handler.headers.get(TOKEN_HEADER) != TOKEN:
            return reply(handler, 401, {"message": "You are signed out or your session has expired."})
        if handler.command == "GET":
            with self._lock:
                return reply(handler, 200, list(self.keys))
        if handler.command == "POST":
            return reply(handler, 201, self.create(json.loads(body)["name"]))
        return reply(handler, 405, {"message": "Method not allowed."})

    def create(self, name: str) -> dict[str, str]:
        secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))
        key = {
            "id": str(uuid.uuid4()),
            "name": name,
            "key_prefix": secret[:11],
            "created_at": "2025-01-01T00:00:00Z",
        }
        with self._lock:
            self.keys.append(key)
            self.secrets.append(secret)
        return {**key, "key": secret}

    def tokens_seen(self) -> list[str]:
        return [s.headers[TOKEN_HEADER] for s in self.seen if TOKEN_HEADER in s.headers]

    def __enter__(self) -> FakeCoder:
        self._httpd.serve_in_background()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.stop()


def reply(handler: BaseHTTPRequestHandler, status: int, data: Any) -> None:
    body = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def keysync(workdir: Path, *args: str, url: str | None = None, token_env: bool = True) -> Run:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["NO_COLOR"] = "1"
    if token_env:
        env["CODER_SESSION_TOKEN"] = TOKEN
    if url is not None:
        env["CODER_URL"] = url
    # The timeout bounds a hang; it measures nothing.
    done = subprocess.run([KEYSYNC, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=90)
    return Run(done.returncode, done.stdout, done.stderr)


def assert_one_error_line(run: Run) -> str:
    assert run.code == 1, str(run)
    assert "Traceback" not in run.stdout + run.stderr, str(run)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keysync: error: "), str(run)
    return lines[0]


def assert_no_leaks(run: Run, *secret_values: str) -> None:
    output = run.stdout + run.stderr
    assert TOKEN not in output, "the session token appears in keysync's output"
    leaked = [s for s in secret_values if s in output]
    assert not leaked, f"{len(leaked)} secret(s) appear in keysync's output"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "keysync.yaml").write_text("version: 1\nkeys:\n  - alpha\n")
    return tmp_path


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server_context(ca: trustme.CA, *hosts: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*hosts).configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "coder-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    yield path


def test_tls_is_verified_by_default(workdir: Path, ca: trustme.CA) -> None:
    with FakeCoder(tls=tls_server_context(ca, "127.0.0.1")) as coder:
        run = keysync(workdir, "apply", "--auto-approve", url=coder.url)
    line = assert_one_error_line(run)
    assert "certificate" in line.lower(), line
    assert coder.seen == [], "a request got through an unverified TLS connection"
    assert not (workdir / "secrets" / "ai-gateway-keys.json").exists()
    assert_no_leaks(run)


def test_tls_with_ca_cert_works(workdir: Path, ca: trustme.CA, ca_file: Path) -> None:
    with FakeCoder(tls=tls_server_context(ca, "127.0.0.1")) as coder:
        run = keysync(workdir, "apply", "--auto-approve", "--ca-cert", str(ca_file), url=coder.url)
        assert run.code == 0, str(run)
        plan = keysync(workdir, "plan", "--detailed-exitcode", "--ca-cert", str(ca_file), url=coder.url)
    assert plan.code == 0, str(plan)
    sink = json.loads((workdir / "secrets" / "ai-gateway-keys.json").read_text())
    assert sink["keys"]["alpha"]["key"] == coder.secrets[0]
    assert set(coder.tokens_seen()) == {TOKEN}
    assert_no_leaks(run, *coder.secrets)
    assert_no_leaks(plan, *coder.secrets)


def test_tls_certificate_for_another_host_is_refused(workdir: Path, ca: trustme.CA, ca_file: Path) -> None:
    """A trusted CA is not enough: the certificate must name the host keysync connects to."""
    with FakeCoder(tls=tls_server_context(ca, "coder.example.com")) as coder:
        run = keysync(workdir, "plan", "--ca-cert", str(ca_file), url=coder.url)
    line = assert_one_error_line(run)
    assert "certificate" in line.lower() or "hostname" in line.lower(), line
    assert coder.seen == []
    assert_no_leaks(run)


def test_an_expired_certificate_is_said_to_be_expired(workdir: Path, ca: trustme.CA, ca_file: Path) -> None:
    """--ca-cert cannot mend an expired certificate: the hint must not send the user there."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    expired = datetime.now(UTC) - timedelta(days=1)
    ca.issue_cert("127.0.0.1", not_before=expired - timedelta(days=30), not_after=expired).configure_cert(
        context
    )
    with FakeCoder(tls=context) as coder:
        run = keysync(workdir, "plan", "--ca-cert", str(ca_file), url=coder.url)
    line = assert_one_error_line(run)
    assert "expired" in line, line
    assert "--ca-cert" not in line, line
    assert coder.seen == []
    assert_no_leaks(run)


def test_an_untrusted_certificate_suggests_ca_cert(workdir: Path, ca: trustme.CA) -> None:
    with FakeCoder(tls=tls_server_context(ca, "127.0.0.1")) as coder:
        run = keysync(workdir, "plan", url=coder.url)
    line = assert_one_error_line(run)
    assert "not trusted" in line and "--ca-cert" in line, line


def test_a_certificate_for_another_host_says_so(workdir: Path, ca: trustme.CA, ca_file: Path) -> None:
    with FakeCoder(tls=tls_server_context(ca, "coder.example.com")) as coder:
        run = keysync(workdir, "plan", "--ca-cert", str(ca_file), url=coder.url)
    line = assert_one_error_line(run)
    assert "another host name" in line and "--ca-cert" not in line, line


# --- plain http ---------------------------------------------------------------------------

NOT_LOOPBACK = [
    "http://example.invalid",
    "http://10.0.0.1:7080",
    "http://127.0.0.1.example.invalid",
    "http://127.0.0.1@example.invalid/",
    "http://localhost.example.invalid:7080",
]


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_plain_http_to_another_host_is_refused_before_connecting(workdir: Path, url: str) -> None:
    run = keysync(workdir, "plan", url=url)
    line = assert_one_error_line(run)
    # Refused by keysync's own URL check, not by a failed lookup or connection.
    assert "plain http" in line or "carries credentials" in line, line
    assert_no_leaks(run)


@pytest.mark.parametrize("where", ["flag", "manifest"])
def test_plain_http_is_refused_wherever_the_url_comes_from(workdir: Path, where: str) -> None:
    if where == "flag":
        run = keysync(workdir, "apply", "--auto-approve", "--url", "http://example.invalid")
    else:
        (workdir / "keysync.yaml").write_text(
            "version: 1\ncoderd:\n  url: http://example.invalid\nkeys:\n  - alpha\n"
        )
        run = keysync(workdir, "apply", "--auto-approve")
    line = assert_one_error_line(run)
    assert "plain http" in line, line
    assert_no_leaks(run)


# --- the token goes to the configured host only -------------------------------------------


def _elsewhere_host() -> str:
    """Another loopback address if the system has it, else the same one on another port."""
    try:
        with ThreadingHTTPServer(("127.0.0.2", 0), BaseHTTPRequestHandler):
            return "127.0.0.2"
    except OSError:
        return "127.0.0.1"


@pytest.mark.parametrize(
    ("method", "status"),
    [("GET", 301), ("GET", 302), ("GET", 307), ("GET", 308), ("POST", 307), ("POST", 308)],
)
def test_redirects_are_not_followed_and_the_token_stays_home(workdir: Path, method: str, status: int) -> None:
    with FakeCoder(host=_elsewhere_host()) as elsewhere:
        redirect = {method: (status, elsewhere.url + COLLECTION)}
        with FakeCoder(redirect=redirect) as coder:
            run = keysync(workdir, "apply", "--auto-approve", url=coder.url)
    assert run.code == 1, str(run)
    assert "Traceback" not in run.stdout + run.stderr
    assert "redirect" in (run.stdout + run.stderr), str(run)
    assert set(coder.tokens_seen()) == {TOKEN}, "keysync did not send the token to Coder itself"
    assert elsewhere.seen == [], "keysync followed a redirect to another host"
    assert not any(TOKEN_HEADER.lower() in (h.lower() for h in s.headers) for s in elsewhere.seen)
    assert_no_leaks(run)


# --- where the token may come from ----------------------------------------------------------


def test_the_token_is_refused_as_a_flag(workdir: Path) -> None:
    """Command lines leak (ps, shell history, CI logs): there is no --token."""
    run = keysync(workdir, "plan", "--token", TOKEN, url="http://127.0.0.1:9", token_env=False)
    assert_one_error_line(run)
    assert_no_leaks(run)


def test_the_token_is_refused_in_the_manifest(workdir: Path) -> None:
    (workdir / "keysync.yaml").write_text(
        f"version: 1\ncoderd:\n  url: http://127.0.0.1:9\n  token: {TOKEN}\nkeys:\n  - alpha\n"
    )
    run = keysync(workdir, "validate", token_env=False)
    line = assert_one_error_line(run)
    assert "keysync.yaml:4" in line and "coderd.token" in line, line
    assert_no_leaks(run)


def test_the_token_file_is_read_and_its_token_sent_to_coder_only(workdir: Path) -> None:
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    with FakeCoder() as coder:
        run = keysync(
            workdir, "apply", "--auto-approve", "--token-file", "token", url=coder.url, token_env=False
        )
    assert run.code == 0, str(run)
    assert coder.tokens_seen() and set(coder.tokens_seen()) == {TOKEN}
    assert_no_leaks(run, *coder.secrets)
