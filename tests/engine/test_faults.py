"""Faults, crashes, interrupts and races: keysync keeps its promise when the world misbehaves.

Everything is real: `keysync dev-server` and `keysync apply` run as subprocesses talking HTTP on
127.0.0.1, the sink is a real file, and every secret is checked the way a gateway replica uses
it (`GET /api/v2/ai-gateway/serve`). What must hold after the dust settles (PRODUCT.md, "The
promise"): live keys equal the manifest, the sink holds a working secret for each of them, no
live key is left whose secret nobody holds, and no token or secret shows in any output.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from forkserver import Forked

from conftest import start_keysync
from quietserver import QuietServer
from replica import IN, gateway_status

TOKEN = "FaultTest0-0123456789abcdefABCDEF"
KEYSYNC = str(Path(sys.executable).with_name("keysync"))
COLLECTION = "/api/v2/ai-gateway/keys"
# The test's own requests bypass the rate limit so that they never eat keysync's quota.
UNLIMITED = {"Coder-Session-Token": TOKEN, "X-Coder-Bypass-Ratelimit": "true"}
SINK = Path("secrets/ai-gateway-keys.json")
# keysync starts with SIGINT at its default, as a user's shell would start it, even when this
# process inherited it ignored (a background job of a non-interactive shell does): exec keeps pids.


# --- the world: a dev server subprocess and the test's own view of it -----------------------


class DevServerProcess:
    """`keysync dev-server` in a subprocess; its request log goes to a file we can read."""

    def __init__(self, workdir: Path, *options: str) -> None:
        self.log_path = workdir / f"dev-server-{len(list(workdir.glob('dev-server-*')))}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [KEYSYNC, "dev-server", "--port", "0", "--token", TOKEN, "--api", "ai-gateway-keys", *options],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.url = self._listening_url()
        self._http = httpx.Client(
            base_url=self.url,
            headers=UNLIMITED,
            timeout=30,
        )

    def _listening_url(self) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=30):
                self.stop()
                pytest.fail("the dev server did not say where it listens within 30 s")
        line = self.process.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
        if match is None:
            self.stop()
            pytest.fail(f"unexpected first line from the dev server: {line!r}")
        return match.group(1)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def requests(self, method: str, outcome: str | None = None) -> list[str]:
        """Finished requests to the key collection, as the dev server logged them."""
        found = []
        for line in self.log_lines():
            parts = line.split()
            if (
                len(parts) >= 3
                and (parts[0], parts[1]) == (method, COLLECTION)
                and outcome in (None, parts[2])
            ):
                found.append(line)
        return found

    def _get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        for _ in range(100):  # --fail-rate answers any request 500 now and then
            response = self._http.get(path, headers=headers)
            if response.status_code != 500:
                return response
        pytest.fail(f"GET {path} answered 500 a hundred times in a row")

    def live(self) -> dict[str, dict[str, Any]]:
        response = self._get(COLLECTION)
        assert response.status_code == 200, response.text
        return {key["name"]: key for key in response.json()}

    def accepts(self, secret: str) -> bool:
        """Does a gateway replica presenting this secret get in?"""
        for _ in range(100):  # --fail-rate answers the handshake 500 now and then too
            status = gateway_status(self.url, secret, headers=UNLIMITED)
            if status != 500:
                assert status in (IN, 401), status
                return status == IN
        pytest.fail("the gateway handshake answered 500 a hundred times in a row")

    def accepts_all(self, secrets: list[str]) -> list[bool]:
        with ThreadPoolExecutor(20) as pool:
            return list(pool.map(self.accepts, secrets))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if hasattr(self, "_http"):
            self._http.close()
        self._log.close()


@dataclass
class Proc:
    """A keysync process running in the background, its output going to files."""

    args: list[str]
    process: subprocess.Popen[Any] | Forked
    out_path: Path
    err_path: Path
    code: int | None = None
    stdout: str = ""
    stderr: str = ""

    def finish(self, timeout: float = 90) -> Proc:
        try:
            self.code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"keysync {' '.join(self.args)} did not finish within {timeout:g} s")
        self.stdout = self.out_path.read_text()
        self.stderr = self.err_path.read_text()
        return self

    def __str__(self) -> str:
        head = f"keysync {' '.join(self.args)} -> {self.code}"
        return f"{head}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


@dataclass
class Workspace:
    """A directory with a manifest, the environment keysync runs in, and what it printed."""

    root: Path
    server: DevServerProcess
    outputs: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    procs: list[Proc] = field(default_factory=list)
    coderd_url: str | None = None  # another server than the dev server, when a test needs one

    @property
    def env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(NO_COLOR="1", CODER_URL=self.coderd_url or self.server.url, CODER_SESSION_TOKEN=TOKEN)
        return env

    def manifest(self, names: list[str], extra: str = "policy:\n  max_deletes: 100\n") -> None:
        keys = "".join(f"  - {name}\n" for name in names)
        (self.root / "keysync.yaml").write_text(f"version: 1\n{extra}keys:\n{keys}")

    def spawn(self, *args: str, umask: int = 0o022) -> Proc:
        n = len(self.procs)
        out_path, err_path = self.root / f".out.{n}", self.root / f".err.{n}"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = start_keysync(
                args, self.root, self.env, stdout=out, stderr=err, umask=umask, default_sigint=True
            )
        proc = Proc(list(args), process, out_path, err_path)
        self.procs.append(proc)
        return proc

    def finish(self, proc: Proc, timeout: float = 90) -> Proc:
        proc.finish(timeout)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def run(self, *args: str, timeout: float = 90, umask: int = 0o022) -> Proc:
        return self.finish(self.spawn(*args, umask=umask), timeout)

    def sink(self) -> dict[str, dict[str, str]]:
        """The file sink's records by name; every secret in it is remembered for the leak check."""
        path = self.root / SINK
        if not path.exists():
            return {}
        assert path.stat().st_mode & 0o777 == 0o600
        document = json.loads(path.read_text())
        assert document["version"] == 1
        assert document["coderd_url"] == self.server.url
        records: dict[str, dict[str, str]] = document["keys"]
        self.secrets.update(record["key"] for record in records.values())
        return records

    def assert_converged(self, names: list[str]) -> None:
        """Live keys equal the manifest and the sink holds a working secret for each one."""
        live = self.server.live()
        records = self.sink()
        assert sorted(live) == sorted(names), "live keys differ from the manifest"
        assert sorted(records) == sorted(names), "sink records differ from the manifest"
        for name, key in live.items():
            record = records[name]
            assert record["id"] == key["id"], f"{name}: the sink holds another key's record"
            assert record["key_prefix"] == key["key_prefix"] == record["key"][:11], name
        names_in_order = sorted(records)
        accepted = self.server.accepts_all([records[name]["key"] for name in names_in_order])
        rejected = [name for name, ok in zip(names_in_order, accepted, strict=True) if not ok]
        assert not rejected, f"the gateway refuses the sink's secret for {rejected}"

    def explain(self, proc: Proc) -> str:
        """A failed run, with the dev server's state: enough to tell whose fault it was."""
        state = "running" if self.server.process.poll() is None else f"exited {self.server.process.poll()}"
        tail = "\n".join(self.server.log_lines()[-15:])
        return f"{proc}--- dev server ({state}), last requests\n{tail}"

    def assert_no_leaks(self) -> None:
        """No token or secret in anything keysync (or the dev server) printed."""
        texts = [*self.outputs, *(p.read_text() for p in self.root.glob("dev-server-*.log"))]
        for text in texts:
            assert TOKEN not in text, "the session token appears in captured output"
            leaked = [secret for secret in self.secrets if secret in text]
            assert not leaked, f"{len(leaked)} secret(s) appear in captured output"

    def close(self) -> None:
        for proc in self.procs:
            if proc.process.poll() is None:
                proc.process.kill()
            proc.process.wait()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    """Makes a Workspace around a dev server started with the given options."""
    made: list[Workspace] = []

    def make(*server_options: str) -> Workspace:
        server = DevServerProcess(tmp_path, *server_options)
        workspace = Workspace(tmp_path, server)
        made.append(workspace)
        return workspace

    yield make
    for workspace in made:
        workspace.close()
        workspace.server.stop()


def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(0.01)


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(count)]


def report_counts(stdout: str) -> dict[str, int]:
    """The numbers in apply's summary line."""
    match = re.search(
        r"(\d+) created, (\d+) deleted, (\d+) replaced, (\d+) failed(?:, (\d+) not started)?", stdout
    )
    assert match is not None, stdout
    keys = ("create", "delete", "replace", "failed", "not_started")
    return {k: int(v or 0) for k, v in zip(keys, match.groups(), strict=True)}


# --- 1. crash anywhere --------------------------------------------------------------------

CRASH_SEED = 20240611
# Kills go on until both dangerous moments were hit (and at least MIN_KILLS landed), MAX_KILLS at most.
MIN_KILLS = 4
MAX_KILLS = 10


def test_sigkill_at_random_moments_then_next_apply_converges(world: Any) -> None:
    """SIGKILL lands mid-flight, also between a create and its sink write; the next apply heals."""
    rng = random.Random(CRASH_SEED)
    ws = world("--latency-ms", "100", "--seed", str(CRASH_SEED))
    keys = names("crash", 20)
    # Replaces count against max_deletes; every round replaces up to 20 keys.
    ws.manifest(keys)
    mid_flight = orphan_rounds = missing_rounds = 0
    for round_number in range(3 * MAX_KILLS):
        if mid_flight >= MAX_KILLS or (mid_flight >= MIN_KILLS and orphan_rounds and missing_rounds):
            break
        # Round 0 creates everything; later rounds replace a random subset (delete, create, write).
        replace = [] if round_number == 0 else sorted(rng.sample(keys, rng.randint(8, 20)))
        logged = len(ws.server.log_lines())
        proc = ws.spawn("apply", "--auto-approve", "--parallelism", "5", *_replace_flags(replace))
        # Kill at a random moment after the plan's list came back, i.e. while actions run.
        wait_for(lambda: len(ws.server.log_lines()) > logged, "keysync's first request")  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.7))
        mid_flight += proc.process.poll() is None
        proc.process.send_signal(signal.SIGKILL)
        ws.finish(proc)
        _settle(ws)
        orphans, missing = _damage(ws)
        orphan_rounds += bool(orphans)
        missing_rounds += bool(missing)

        healed = ws.run("apply", "--auto-approve")
        assert healed.code == 0, ws.explain(healed)
        ws.assert_converged(keys)

    assert mid_flight >= MIN_KILLS, f"only {mid_flight} kills landed while apply was running"
    # The point of the exercise: some kills left a created key whose secret never reached the sink.
    assert orphan_rounds >= 1, "no kill landed between a create and its sink write"
    assert missing_rounds >= 1, "no kill landed between a replace's delete and its create"
    final = ws.run("plan", "--detailed-exitcode")
    assert final.code == 0, ws.explain(final)
    assert "No changes" in final.stdout
    ws.assert_no_leaks()


def _replace_flags(names_to_replace: list[str]) -> list[str]:
    return [arg for name in names_to_replace for arg in ("--replace", name)]


def _settle(ws: Workspace) -> None:
    """Waits until the server has finished what the dead process had in flight, as Coder would.

    The dev server handles a request half its latency after it arrived, so a list that starts after
    the kill sees what those requests did; two equal lists in a row say nothing more is coming.
    """
    time.sleep(0.1)
    before = ws.server.live()
    while (now := ws.server.live()) != before:
        before = now


def _damage(ws: Workspace) -> tuple[list[str], list[str]]:
    """After a kill: live keys whose secret the sink lacks, and manifest keys gone from Coder."""
    live = ws.server.live()
    records = ws.sink()
    orphans = [n for n, k in live.items() if records.get(n, {}).get("key_prefix") != k["key_prefix"]]
    missing = [n for n in records if n not in live]
    return orphans, missing


# --- 1b. the sink fails at a random moment ----------------------------------------------------

FILL_SEED = 20261201
FILL_TRIALS = 3
FULL = 1000  # bytes: less than the sink document, so from that moment on no write of it succeeds
IN_FLIGHT_AT_PARALLELISM_2 = 6  # 2 holding a request, 4 more waiting for their secret's write


def test_a_sink_failing_at_random_moments_loses_at_most_what_was_in_flight(world: Any) -> None:
    """The disk fills mid-rotation (the file size limit of the running apply drops below the
    sink document's size): the apply stops, the keys it had not started keep working, every live
    key's secret is in the sink, and the next apply heals."""
    rng = random.Random(FILL_SEED)
    ws = world("--latency-ms", "50", "--seed", str(FILL_SEED))
    keys = names("fill", 12)
    ws.manifest(keys)
    assert ws.run("apply", "--auto-approve").code == 0
    stopped = 0
    for _ in range(FILL_TRIALS):
        replace = sorted(rng.sample(keys, rng.randint(9, 12)))
        before = ws.server.live()
        code, report = _apply_filling_the_disk_after(ws, rng.uniform(0.0, 0.15), replace)
        assert code in (0, 1), report
        assert "Traceback" not in report
        orphans, _ = _damage(ws)
        assert not orphans, f"live keys whose secret the sink lacks: {orphans}\n{report}"
        failed = re.findall(r"^  ! failed to replace (\S+):", report, re.MULTILINE)
        not_started = re.findall(r"^  \. not started: replace (\S+)$", report, re.MULTILINE)
        live = ws.server.live()
        assert sorted(n for n in keys if n not in live) == sorted(failed), report
        assert len(failed) <= IN_FLIGHT_AT_PARALLELISM_2, report
        assert all(live[n]["id"] == before[n]["id"] for n in not_started), "a key not started changed"
        stopped += bool(not_started)

        healed = ws.run("apply", "--auto-approve")
        assert healed.code == 0, ws.explain(healed)
        ws.assert_converged(keys)
    assert stopped >= 1, "the sink never failed while actions were left to start: nothing was tested"
    ws.assert_no_leaks()


def _apply_filling_the_disk_after(ws: Workspace, seconds: float, replace: list[str]) -> tuple[int, str]:
    """`apply --replace ...` whose files may not grow beyond FULL bytes from `seconds` after its
    first delete on; its output goes to pipes, which the limit does not cover."""
    args = ["apply", "--auto-approve", "--parallelism", "2", *_replace_flags(replace)]
    process = start_keysync(args, ws.root, ws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deletes = _deletes(ws)
    wait_for(lambda: _deletes(ws) > deletes or process.poll() is not None, "the first delete")
    time.sleep(seconds)  # after the first action began: the preflight has passed
    if process.poll() is None:
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (FULL, FULL))
    stdout, stderr = process.communicate(timeout=90)
    ws.outputs += [stdout, stderr]
    return process.wait(), stdout + stderr


def _deletes(ws: Workspace) -> int:
    return sum(line.startswith("DELETE ") for line in ws.server.log_lines())


# --- 2. lost answers ----------------------------------------------------------------------


def test_lost_create_answers_converge_within_a_few_applies(world: Any) -> None:
    ws = world("--lose-response-rate", "0.3", "--seed", "5")
    keys = names("lost", 20)
    ws.manifest(keys)
    runs = _apply_until_success(ws, attempts=5)
    assert runs[-1].code == 0, "\n\n".join(map(ws.explain, runs))
    assert ws.server.requests("POST", "dropped"), "the dev server lost no answer: nothing was tested"

    plan = ws.run("plan", "--detailed-exitcode")
    assert plan.code == 0, ws.explain(plan)
    assert "No changes" in plan.stdout
    ws.assert_converged(keys)
    ws.assert_no_leaks()


def _apply_until_success(ws: Workspace, attempts: int, *flags: str) -> list[Proc]:
    runs = []
    for _ in range(attempts):
        runs.append(ws.run("apply", "--auto-approve", *flags))
        assert runs[-1].code in (0, 1), ws.explain(runs[-1])
        assert "Traceback" not in runs[-1].stderr, ws.explain(runs[-1])
        if runs[-1].code == 0:
            break
    return runs


# --- 3. server errors and rate limits -----------------------------------------------------


def test_server_errors_an_apply_succeeds_within_a_few_runs(world: Any) -> None:
    ws = world("--fail-rate", "0.2", "--seed", "3")
    keys = names("flaky", 20)
    ws.manifest(keys)
    runs = _apply_until_success(ws, attempts=4)
    assert runs[-1].code == 0, "\n\n".join(map(ws.explain, runs))
    assert any(" 500 " in line for line in ws.server.log_lines()), "no 500 was injected"

    plan = ws.run("plan", "--detailed-exitcode")
    assert plan.code == 0, ws.explain(plan)
    ws.assert_converged(keys)
    ws.assert_no_leaks()


def test_rate_limit_is_waited_out_by_one_apply(world: Any) -> None:
    """40 creates against 30 a window: the 31st cannot pass before the window slides on.

    The window is two seconds rather than Coder's minute: the wait is the behaviour under test,
    its length is not, and Retry-After says the window's length whatever it is.
    """
    ws = world("--rate-limit", "30", "--rate-window", "2s", "--seed", "8")
    keys = names("paced", 40)
    ws.manifest(keys)
    applied = ws.run("apply", "--auto-approve")
    assert applied.code == 0, ws.explain(applied)
    assert report_counts(applied.stdout)["create"] == 40
    created = ws.server.requests("POST", "201")
    assert len(created) == 40  # each create went through once: no 429 was taken for a failure
    ws.assert_converged(keys)
    ws.assert_no_leaks()


def test_bypass_rate_limit_sends_the_header(world: Any) -> None:
    """20 creates against 5 a minute would take four minutes; with the header they all pass."""
    ws = world("--rate-limit", "5", "--seed", "9")
    keys = names("owner", 20)
    ws.manifest(keys)
    proc = ws.spawn("apply", "--auto-approve", "--bypass-rate-limit")
    # Without the header the limit allows 5 requests a minute on the collection: 21 need 4 more
    # windows, far past this deadline. The deadline only bounds a hang; it measures nothing.
    applied = ws.finish(proc, timeout=75)
    assert applied.code == 0, ws.explain(applied)
    assert not any(" 429 " in line for line in ws.server.log_lines()), "the dev server refused requests"
    assert len(ws.server.requests("POST", "201")) == 20
    ws.assert_converged(keys)
    ws.assert_no_leaks()


# --- 4. failed delivery -------------------------------------------------------------------

STORE_PY = """\
import json, sys

record = json.load(sys.stdin)
if record["name"] == "refused-key":
    with open("rejected.json", "w") as out:
        json.dump(record, out)
    # A careless sink command echoes what it got: keysync must mask it.
    sys.stderr.write(f"vault said no to {record['key']}\\n")
    sys.exit(3)
with open("records.jsonl", "a") as out:
    out.write(json.dumps(record) + "\\n")
"""


def test_failed_delivery_deletes_the_key_again_and_names_it(world: Any) -> None:
    ws = world("--seed", "4")
    (ws.root / "store.py").write_text(STORE_PY)
    keys = ["good-a", "good-b", "refused-key", "good-c"]
    sink = f"sink:\n  type: exec\n  command: [{json.dumps(sys.executable)}, store.py]\n"
    ws.manifest(keys, extra=sink)

    applied = ws.run("apply", "--auto-approve")
    assert applied.code == 1, ws.explain(applied)
    assert "Traceback" not in applied.stderr
    failure = [line for line in (applied.stdout + applied.stderr).splitlines() if "refused-key" in line]
    assert failure, "the failed key is not named"
    assert "Apply failed" in applied.stdout
    # The command's stderr is shown (so the leak check below means something), the secret masked.
    assert "vault said no to" in applied.stdout + applied.stderr

    live = ws.server.live()
    assert sorted(live) == ["good-a", "good-b", "good-c"], "the undelivered key still exists in Coder"
    rejected = json.loads((ws.root / "rejected.json").read_text())
    ws.secrets.add(rejected["key"])
    assert not ws.server.accepts(rejected["key"])

    stored = [json.loads(line) for line in (ws.root / "records.jsonl").read_text().splitlines()]
    by_name = {record["name"]: record for record in stored}
    assert sorted(by_name) == ["good-a", "good-b", "good-c"]
    ws.secrets.update(record["key"] for record in stored)
    for name, record in by_name.items():
        assert record["id"] == live[name]["id"]
        assert record["coderd_url"] == ws.server.url
    assert all(ws.server.accepts_all([by_name[n]["key"] for n in sorted(by_name)]))
    ws.assert_no_leaks()


# --- 5. interrupt -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_finishes_in_flight_creates_and_exits_130(world: Any, signum: signal.Signals) -> None:
    ws = world("--latency-ms", "150", "--seed", "6")
    keys = names("stop", 20)
    ws.manifest(keys)
    proc = ws.spawn("apply", "--auto-approve", "--parallelism", "4")
    wait_for(lambda: ws.server.requests("POST"), "the first create")
    proc.process.send_signal(signum)
    ws.finish(proc)

    assert proc.code == 130, ws.explain(proc)
    assert "Traceback" not in proc.stderr
    assert "interrupted" in proc.stdout.lower()
    counts = report_counts(proc.stdout)
    live = ws.server.live()
    records = ws.sink()
    # In-flight creates finished and were delivered; no new ones started.
    assert 0 < len(live) < len(keys)
    assert counts["not_started"] > 0
    assert counts["create"] == len(live) == len(ws.server.requests("POST", "201"))
    assert counts["create"] + counts["failed"] + counts["not_started"] == len(keys)
    assert sorted(records) == sorted(live), "a created key's secret is missing from the sink"
    for name, key in live.items():
        assert records[name]["id"] == key["id"]
    assert all(ws.server.accepts_all([records[n]["key"] for n in sorted(records)]))

    resumed = ws.run("apply", "--auto-approve")
    assert resumed.code == 0, ws.explain(resumed)
    ws.assert_converged(keys)
    ws.assert_no_leaks()


class StalledCoder:
    """Answers the key list only when told to, so a signal can land while keysync plans."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.methods: list[str] = []
        stalled = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stalled.methods.append(self.command)
                stalled.arrived.set()
                stalled.release.wait(30)
                body = b"[]"
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._httpd.serve_in_background()

    def close(self) -> None:
        self.release.set()
        self._httpd.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_while_planning_changes_nothing_and_exits_130(world: Any, signum: signal.Signals) -> None:
    ws = world()
    ws.manifest(["never-made"])
    stalled = StalledCoder()
    try:
        ws.coderd_url = stalled.url
        proc = ws.spawn("apply", "--auto-approve")
        if not stalled.arrived.wait(30):
            pytest.fail("keysync never asked for the key list")
        proc.process.send_signal(signum)
        ws.finish(proc)
    finally:
        stalled.close()
    assert proc.code == 130, ws.explain(proc)
    assert "interrupted" in proc.stderr, ws.explain(proc)
    assert "Traceback" not in proc.stderr
    # Only reads (api: auto sends its probes together): nothing was created or deleted.
    assert set(stalled.methods) == {"GET"}, "keysync went on after the interrupt"
    ws.assert_no_leaks()


# --- 6. races -----------------------------------------------------------------------------


def test_concurrent_applies_wait_or_fail_fast_naming_the_holder(world: Any) -> None:
    # Slow enough (ten waves of 150 ms) that the four processes surely overlap.
    ws = world("--latency-ms", "150", "--seed", "10")
    keys = names("race", 20)
    ws.manifest(keys)
    slow = ("apply", "--auto-approve", "--parallelism", "2")
    waiting = [ws.spawn(*slow, "--lock-timeout", "60s") for _ in range(2)]
    hasty = [ws.spawn(*slow) for _ in range(2)]
    everyone = waiting + hasty
    for proc in everyone:
        ws.finish(proc)
    pids = {proc.process.pid for proc in everyone}

    for proc in waiting:
        assert proc.code == 0, ws.explain(proc)
    for proc in everyone:
        assert "Traceback" not in proc.stderr, ws.explain(proc)
        if proc.code == 0:
            continue
        assert proc.code == 1, ws.explain(proc)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("keysync: error:")]
        assert len(errors) == 1 and "lock" in errors[0], ws.explain(proc)
        holder = re.search(r"held by process (\d+) on \S+ since \S+", errors[0])
        assert holder is not None, f"the holder is not named: {errors[0]}"
        assert int(holder.group(1)) in pids - {proc.process.pid}
    assert any(proc.code == 1 for proc in hasty), "no apply met a held lock: nothing was tested"
    succeeded = [proc for proc in everyone if proc.code == 0]
    assert sum(report_counts(p.stdout)["create"] for p in succeeded if "Apply" in p.stdout) == 20
    assert len(ws.server.requests("POST", "201")) == 20, "a key was created twice"

    again = ws.run("apply", "--auto-approve")
    assert again.code == 0, ws.explain(again)
    assert "No changes" in again.stdout
    ws.assert_converged(keys)
    ws.assert_no_leaks()


# --- 7. hostile manifests through the CLI -------------------------------------------------


def _alias_bomb() -> str:
    """Nine levels of nine aliases each: 9**9 strings once expanded."""
    lines = ["version: 1", 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for previous, this in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{this}: &{this} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join([*lines, "keys: *i", ""])


ALIAS_BOMB = _alias_bomb()

PYTHON_TAGS = {
    "object-apply": 'version: 1\nkeys: !!python/object/apply:os.system ["touch pwned"]\n',
    "object-new": "version: 1\nkeys:\n  - !!python/object/new:subprocess.Popen [[touch, pwned]]\n",
    "name": "version: 1\nsink: !!python/name:os.system\nkeys: [a]\n",
}


@pytest.mark.parametrize("text", [ALIAS_BOMB, *PYTHON_TAGS.values()], ids=["alias-bomb", *PYTHON_TAGS])
def test_hostile_manifest_is_refused_with_one_line(world: Any, text: str) -> None:
    ws = world()
    (ws.root / "keysync.yaml").write_text(text)
    # The timeout only guards against a hang (an expanding bomb); nothing is measured.
    refused = ws.run("apply", "--auto-approve", timeout=30)
    assert refused.code == 1, ws.explain(refused)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keysync: error: keysync.yaml:"), ws.explain(refused)
    assert "Traceback" not in refused.stdout + refused.stderr
    assert not (ws.root / "pwned").exists(), "the manifest ran a command"
    assert ws.server.log_lines() == [], "keysync talked to Coder before validating the manifest"
    ws.assert_no_leaks()


# --- 8. what is left on disk ----------------------------------------------------------------


def test_sink_files_and_the_directories_keysync_creates_are_private_whatever_the_umask(
    world: Any,
) -> None:
    """0600 files and 0700 directories, even under umask 000: nobody else may read or swap them."""
    ws = world("--seed", "12")
    ws.manifest(["private"], extra="sink:\n  type: file\n  path: vault/deeper/keys.json\n")
    applied = ws.run("apply", "--auto-approve", umask=0)
    assert applied.code == 0, ws.explain(applied)
    created = [ws.root / "vault", ws.root / "vault" / "deeper"]
    modes = {str(path.relative_to(ws.root)): oct(path.stat().st_mode & 0o777) for path in created}
    assert modes == dict.fromkeys(modes, "0o700"), f"directories keysync created: {modes}"
    files = sorted((ws.root / "vault" / "deeper").iterdir())
    assert [f.name for f in files] == ["keys.json", "keys.json.lock"]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    record = json.loads(files[0].read_text())["keys"]["private"]
    ws.secrets.add(record["key"])
    assert ws.server.accepts(record["key"])
    ws.assert_no_leaks()
