"""Rotation without downtime, end to end: the installed `keysync` against the dev server.

The dev server's gateway endpoint plays the replicas: a replica is a thread that reads its
secret from the sink file once, presents it every ~50 ms, and re-reads the sink only when told
to restart. The kill trials run the dev server as a subprocess with latency, so that a
`kill -9` lands in the middle of an apply.

Nothing here asserts how long something takes: waits poll with deadlines, and the checks on
time compare the dev server's own timestamps.
"""

from __future__ import annotations

import json
import random
import re
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from keysync.devserver import DevServer

from conftest import KEYSYNC, OWNER_TOKEN, Cli, Run, base_env, start_keysync
from replica import IN, gateway_status

KEYS_PATH = "/api/v2/ai-gateway/keys"  # the generation current Coder serves, as the dev servers here do
SLOW_SERVER = [KEYSYNC, "dev-server", "--port", "0", "--token", OWNER_TOKEN, "--api", "ai-gateway-keys"]
SINK = Path("secrets/ai-gateway-keys.json")
GRACE = timedelta(seconds=2)
OVERLAP = """\
version: 1
policy:
  rotation: overlap
  overlap_grace: {grace}
  max_deletes: 100
{extra}keys:
  - gw
  - name: plain
    rotation: replace
"""


# --- the world seen from outside ----------------------------------------------------------------


def live_keys(url: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(url + KEYS_PATH, headers={"Coder-Session-Token": OWNER_TOKEN})
    assert response.status_code == 200, response.text
    return {key["name"]: key for key in response.json()}


def serve(url: str, secret: str) -> int:
    return gateway_status(url, secret)


def sink_records(cwd: Path) -> dict[str, dict[str, str]]:
    path = cwd / SINK
    if not path.exists():
        return {}
    records: dict[str, dict[str, str]] = json.loads(path.read_text())["keys"]
    return records


def drop_sink_record(cwd: Path, name: str) -> None:
    """As if someone lost the secret: the record goes, the rest of the sink file stays."""
    path = cwd / SINK
    document = json.loads(path.read_text())
    del document["keys"][name]
    path.write_text(json.dumps(document))


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ok(run: Run) -> Run:
    assert run.code == 0, run
    return run


def plan_json(cli: Cli, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ok(cli("plan", "--format", "json", *args)).stdout)
    return document


def actions(document: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    """(action, name, reason, generation or live_name) of each planned or applied action."""
    return sorted(
        (a["action"], a["name"], a["reason"], a.get("generation") or a.get("live_name"))
        for a in document["actions"]
    )


def poll(check: Callable[[], bool], what: str, deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


# --- a gateway replica --------------------------------------------------------------------------


@dataclass
class Hit:
    at: datetime
    prefix: str
    status: int


@dataclass
class Replica:
    """Presents the secret it read from the sink to /serve every ~50 ms, like a gateway replica
    that reads its key file at start; `restart()` makes it read the sink again."""

    url: str
    sink: Path
    name: str
    hits: list[Hit] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _restart: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Replica:
        self._thread = threading.Thread(target=self._run, name=f"replica-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def restart(self) -> None:
        self._restart.set()

    def _read_secret(self) -> str:
        secret: str = json.loads(self.sink.read_text())["keys"][self.name]["key"]
        return secret

    def _run(self) -> None:
        try:
            secret = self._read_secret()
            while not self._stop.is_set():
                if self._restart.is_set():
                    secret = self._read_secret()
                    self._restart.clear()
                status = gateway_status(self.url, secret)
                self.hits.append(Hit(datetime.now(UTC), secret[:11], status))
                self._stop.wait(0.05)
        except Exception as exc:  # reported by the test, not lost in a thread
            self.errors.append(repr(exc))

    def hits_with(self, prefix: str, since: datetime | None = None) -> list[Hit]:
        return [h for h in list(self.hits) if h.prefix == prefix and (since is None or h.at >= since)]


# --- rotation with a replica in use -------------------------------------------------------------


def test_a_key_in_use_rotates_without_a_single_failed_request(cli: Cli, dev_server: DevServer) -> None:
    url = dev_server.url
    cli.write_manifest(OVERLAP.format(grace="2s", extra=""))
    ok(cli("apply", "--auto-approve"))
    first = sink_records(cli.cwd)["gw"]
    old = live_keys(url)["gw"]
    assert first["id"] == old["id"] and first.get("live_name", "gw") == "gw"

    with Replica(url, cli.cwd / SINK, "gw") as replica:
        poll(lambda: len(replica.hits_with(old["key_prefix"])) >= 3, "the replica to start")
        assert live_keys(url)["gw"].get("last_heartbeat_at"), "the replica's heartbeats mark the key used"

        # Step 1: rotate. The new generation's secret goes to the sink under the logical name.
        planned = plan_json(cli, "--replace", "gw")
        assert planned["actions"] == [
            {"action": "rotate", "name": "gw", "generation": "gw-r2", "reason": "requested"}
        ]
        rotated = ok(cli("apply", "--auto-approve", "--replace", "gw", "--format", "json"))
        rotated_at = datetime.now(UTC)
        report = json.loads(rotated.stdout)
        assert actions(report) == [("rotate", "gw", "requested", "gw-r2")]
        live = live_keys(url)
        assert set(live) == {"gw", "gw-r2", "plain"}
        assert live["gw"]["id"] == old["id"]  # the old generation keeps working
        record = sink_records(cli.cwd)["gw"]
        new = live["gw-r2"]
        assert record["name"] == "gw" and record["live_name"] == "gw-r2"
        assert record["id"] == new["id"] == report["actions"][0]["new_id"]
        assert record["key"][:11] == record["key_prefix"] == new["key_prefix"]

        # The replica has not restarted: it keeps presenting the old secret, and Coder accepts it.
        poll(lambda: len(replica.hits_with(old["key_prefix"], since=rotated_at)) >= 5, "old-secret uses")

        # Until it is retired, plan shows the old generation waiting, with its last use.
        document = plan_json(cli)
        assert document["actions"] == []
        (waiting,) = document["waiting"]
        assert {k: waiting[k] for k in ("name", "id")} == {"name": "gw", "id": old["id"]}
        assert waiting["last_heartbeat_at"] is not None
        bound = max(when(waiting["last_heartbeat_at"]), when(new["created_at"]))
        assert when(waiting["retire_after"]) == bound + GRACE
        text = ok(cli("plan")).stdout
        assert re.search(r"waiting gw: previous generation gw .*last heartbeat", text), text
        markdown = ok(cli("plan", "--format", "markdown")).stdout
        assert re.search(r"waiting.*gw.*last heartbeat", markdown), markdown

        # An apply while the replica uses the old secret retires nothing.
        assert "No changes" in ok(cli("apply", "--auto-approve")).stdout
        assert "gw" in live_keys(url)

        status = ok(cli("status")).stdout
        assert re.search(r"^gw\s+gw\s+\S+\s+.*\bprevious\b", status, re.M), status
        assert re.search(r"^gw-r2\s+gw\s+\S+\s+.*\bheld\b", status, re.M), status
        rows = {r["name"]: r for r in json.loads(ok(cli("status", "--format", "json")).stdout)["keys"]}
        assert (rows["gw"]["logical_name"], rows["gw"]["sink"]) == ("gw", "previous")
        assert (rows["gw-r2"]["logical_name"], rows["gw-r2"]["sink"]) == ("gw", "held")

        # The replica restarts and reads the new secret from the sink.
        replica.restart()
        poll(lambda: bool(replica.hits_with(new["key_prefix"])), "the replica to switch")
        stopped_using = when(live_keys(url)["gw"]["last_heartbeat_at"])  # frozen from now on

        # Step 2: retire, once no replica used the old generation for overlap_grace.
        audit = cli.cwd / "audit.jsonl"
        ended: list[datetime] = []

        def retired() -> bool:
            ok(cli("apply", "--auto-approve", "--audit-log", str(audit)))
            ended.append(datetime.now(UTC))
            return "gw" not in live_keys(url)

        poll(retired, "the old generation to be retired")
        assert ended[-1] >= stopped_using + GRACE
        assert ended[-1] >= when(new["created_at"]) + GRACE
        (entry,) = [json.loads(line) for line in audit.read_text().splitlines()]
        assert (entry["action"], entry["reason"], entry["name"]) == ("retire", "superseded", "gw")
        assert entry["old_id"] == old["id"]
        poll(lambda: len(replica.hits_with(new["key_prefix"])) >= 3, "new-secret uses")

    assert replica.errors == []
    assert [h for h in replica.hits if h.status != IN] == [], "the replica saw a failed request"
    assert {h.prefix for h in replica.hits} == {old["key_prefix"], new["key_prefix"]}
    switch = min(h.at for h in replica.hits if h.prefix == new["key_prefix"])
    assert max(h.at for h in replica.hits if h.prefix == old["key_prefix"]) < switch
    assert set(live_keys(url)) == {"gw-r2", "plain"}
    assert serve(url, first["key"]) == 401
    assert serve(url, sink_records(cli.cwd)["gw"]["key"]) == IN
    final = plan_json(cli)
    assert final["actions"] == [] and final["waiting"] == []


# --- when a rotation may start, and --force ---------------------------------------------------


def test_a_due_rotation_rotates_a_key_in_use_and_waits_for_the_previous_generation(
    cli: Cli, dev_server: DevServer
) -> None:
    url = dev_server.url
    cli.write_manifest(OVERLAP.format(grace="1h", extra="  rotate_after: 1s\n"))
    ok(cli("apply", "--auto-approve"))
    secret = sink_records(cli.cwd)["gw"]["key"]
    assert serve(url, secret) == IN  # gw is in use: the in-use guard must not hold a rotate back

    wait_until_due(live_keys(url)["gw"])
    assert ("rotate", "gw", "rotation-due", "gw-r2") in actions(plan_json(cli))
    ok(cli("apply", "--auto-approve"))  # no --force
    assert {"gw", "gw-r2"} <= set(live_keys(url))

    # gw-r2 falls due in its turn, but must wait until gw, waiting out its hour, is retired.
    wait_until_due(live_keys(url)["gw-r2"])
    document = plan_json(cli)
    assert any("gw" in w and "wait" in w and "rotation-due" in w for w in document["warnings"]), document
    assert [a for a in document["actions"] if a["name"] == "gw"] == []
    assert [w["id"] for w in document["waiting"]] == [live_keys(url)["gw"]["id"]]
    ok(cli("apply", "--auto-approve"))
    assert {"gw", "gw-r2"} <= set(live_keys(url))
    assert serve(url, secret) == IN

    # --force retires the waiting generation early; then the next rotation may go.
    forced = json.loads(ok(cli("apply", "--auto-approve", "--force", "--format", "json")).stdout)
    assert ("retire", "gw", "superseded", "gw") in actions(forced)
    assert not any(a["action"] == "rotate" and a["name"] == "gw" for a in forced["actions"])
    assert "gw" not in live_keys(url)
    assert serve(url, secret) == 401
    assert ("rotate", "gw", "rotation-due", "gw-r3") in actions(plan_json(cli))


def wait_until_due(key: dict[str, Any], rotate_after: timedelta = timedelta(seconds=1)) -> None:
    """On the clock alone (the dev server's and keysync's are this machine's): no plan per poll."""
    due = when(key["created_at"]) + rotate_after
    poll(lambda: datetime.now(UTC) > due, f"{key['name']} to fall due", deadline=10)


def test_a_lost_secret_rotates_at_once_while_the_previous_generation_waits(
    cli: Cli, dev_server: DevServer
) -> None:
    url = dev_server.url
    cli.write_manifest(OVERLAP.format(grace="1h", extra=""))
    ok(cli("apply", "--auto-approve"))
    ok(cli("apply", "--auto-approve", "--replace", "gw"))
    assert {"gw", "gw-r2"} <= set(live_keys(url))
    drop_sink_record(cli.cwd, "gw")

    document = plan_json(cli)
    assert [a for a in actions(document) if a[1] == "gw"] == [("rotate", "gw", "secret-missing", "gw-r3")]
    assert [w["name"] for w in document["waiting"]] == ["gw"]
    ok(cli("apply", "--auto-approve"))

    record = sink_records(cli.cwd)["gw"]
    live = live_keys(url)
    assert record["live_name"] == "gw-r3" and record["id"] == live["gw-r3"]["id"]
    assert serve(url, record["key"]) == IN
    # --force converges to the one generation the sink holds.
    ok(cli("apply", "--auto-approve", "--force"))
    assert set(live_keys(url)) == {"gw-r3", "plain"}
    assert not ok(cli("plan", "--detailed-exitcode")).code


# --- a crash between create and delivery ---------------------------------------------------------


def test_a_generation_whose_secret_never_reached_the_sink_is_retired_as_orphaned(
    cli: Cli, dev_server: DevServer
) -> None:
    url = dev_server.url
    cli.write_manifest(OVERLAP.format(grace="1h", extra=""))
    ok(cli("apply", "--auto-approve"))
    held = sink_records(cli.cwd)["gw"]
    # What an apply killed between the create and the sink write leaves behind.
    response = httpx.post(
        url + KEYS_PATH, headers={"Coder-Session-Token": OWNER_TOKEN}, json={"name": "gw-r2"}
    )
    assert response.status_code == 201
    orphan = response.json()

    for args in ((), ("--replace", "gw")):
        document = plan_json(cli, *args)
        assert document["actions"] == [
            {
                "action": "retire",
                "name": "gw",
                "id": orphan["id"],
                "key_prefix": orphan["key_prefix"],
                "live_name": "gw-r2",
                "reason": "orphaned",
            }
        ]
        assert document["waiting"] == []
    status = {r["name"]: r for r in json.loads(ok(cli("status", "--format", "json")).stdout)["keys"]}
    assert status["gw"]["sink"] == "held"

    ok(cli("apply", "--auto-approve"))
    assert set(live_keys(url)) == {"gw", "plain"}
    assert sink_records(cli.cwd)["gw"] == held
    assert serve(url, held["key"]) == IN

    # The rotation the crash interrupted can now happen.
    ok(cli("apply", "--auto-approve", "--replace", "gw"))
    assert {"gw", "gw-r2"} <= set(live_keys(url))
    assert serve(url, sink_records(cli.cwd)["gw"]["key"]) == IN


# --- plain replace keys behave as before ----------------------------------------------------------


def test_a_replace_key_is_deleted_and_created_again_under_the_same_name(
    cli: Cli, dev_server: DevServer
) -> None:
    url = dev_server.url
    cli.write_manifest(OVERLAP.format(grace="1h", extra=""))
    ok(cli("apply", "--auto-approve"))
    before = live_keys(url)["plain"]
    old_secret = sink_records(cli.cwd)["plain"]["key"]

    document = plan_json(cli, "--replace", "plain")
    assert document["actions"] == [
        {
            "action": "replace",
            "name": "plain",
            "id": before["id"],
            "key_prefix": before["key_prefix"],
            "live_name": "plain",
            "reason": "requested",
        }
    ]
    ok(cli("apply", "--auto-approve", "--replace", "plain"))

    live = live_keys(url)
    assert set(live) == {"gw", "plain"}
    assert live["plain"]["id"] != before["id"]
    record = sink_records(cli.cwd)["plain"]
    assert "live_name" not in record and record["id"] == live["plain"]["id"]
    assert serve(url, old_secret) == 401
    assert serve(url, record["key"]) == IN
    assert plan_json(cli)["waiting"] == []


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "policy", "problem"),
    [
        ("  - gw\n  - gw-r2\n", "", "rotation generation"),
        ("  - gw-r3\n  - gw\n", "", "rotation generation"),
        (f"  - {'a' * 61}\n", "  rotation: overlap\n", "60"),
        (f"  - name: {'a' * 61}\n    rotation: overlap\n", "", "60"),
    ],
)
def test_validation_refuses_generation_names_and_overlap_names_too_long(
    cli: Cli, keys: str, policy: str, problem: str
) -> None:
    cli.write_manifest(f"version: 1\npolicy:\n  max_deletes: 5\n{policy}keys:\n{keys}")
    run = cli("validate")
    assert run.code == 1, run
    assert problem in run.stderr and "keysync.yaml:" in run.stderr, run


def test_validation_accepts_overlap_names_up_to_60_characters_and_long_replace_names(cli: Cli) -> None:
    cli.write_manifest(
        f"version: 1\nkeys:\n  - name: {'a' * 60}\n    rotation: overlap\n  - {'b' * 64}\n  - gw-r1\n"
    )
    ok(cli("validate"))


# --- kill -9 across both steps ------------------------------------------------------------------


@pytest.fixture
def slow_server() -> Iterator[str]:
    """`keysync dev-server` as a subprocess, slow enough that a kill lands mid-apply."""
    process = subprocess.Popen(
        [*SLOW_SERVER, "--latency-ms", "80", "--seed", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=20), "the dev server did not start"
        line = process.stdout.readline()
        assert line.startswith("listening on http://"), line
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


OVERLAP_KEYS = ("k1", "k2", "k3", "k4")
KILLS = 8  # kills that landed while an apply ran; each one is checked, then all converge
KILL_MANIFEST = (
    "version: 1\npolicy:\n  rotation: overlap\n  overlap_grace: 1h\n  max_deletes: 100\nkeys:\n"
    + "".join(f"  - {k}\n" for k in OVERLAP_KEYS)
    + "  - name: plain\n    rotation: replace\n"
)


def generations(url: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name in live_keys(url):
        found.setdefault(re.sub(r"-r\d+$", "", name), []).append(name)
    return found


def kill_during_apply(command: list[str], cwd: Path, env: dict[str, str], after: int, delay: float) -> str:
    """Starts an apply, waits for `after` finished actions (its progress lines on stderr) and
    `delay` seconds more, then kills it with SIGKILL. Returns the last progress line seen, and
    "" when the apply had already exited by itself."""
    process = start_keysync(command, cwd, env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    last = "(no action finished)"
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stderr, selectors.EVENT_READ)
            end = time.monotonic() + 30
            seen = 0
            while seen < after and time.monotonic() < end:
                if not selector.select(timeout=end - time.monotonic()):
                    break
                line = process.stderr.readline()
                if not line:
                    break
                if line.startswith("["):
                    seen, last = seen + 1, line.strip()
        time.sleep(delay)
        if process.poll() is not None:
            return ""
        process.kill()
        return last
    finally:
        process.wait(timeout=30)
        process.stderr.close()


def test_kill_9_during_rotate_and_retire_converges(tmp_path: Path, slow_server: str) -> None:
    url = slow_server
    env = {**base_env(), "CODER_URL": url, "CODER_SESSION_TOKEN": OWNER_TOKEN}
    cli = Cli(tmp_path, env)
    cli.write_manifest(KILL_MANIFEST)
    rng = random.Random(20240611)
    # Each apply rotates the overlap keys that have one generation, retires (--force) the previous
    # generation of those that have two, and replaces `plain`: one action at a time, each request
    # slowed by the dev server, so that a kill lands inside an action as often as between two.
    replace = [arg for name in (*OVERLAP_KEYS, "plain") for arg in ("--replace", name)]
    command = ["apply", "--auto-approve", "--force", "--parallelism", "1", *replace]
    kill_points: list[str] = []
    for trial in range(40):
        if len(kill_points) >= KILLS:
            break
        after = rng.randrange(5)
        delay = rng.uniform(0.3, 0.9) if after == 0 else rng.uniform(0.0, 0.2)
        landed = kill_during_apply(command, tmp_path, env, after, delay)
        if landed:
            kill_points.append(f"trial {trial}: after {landed!r} +{delay:.2f}s")
        time.sleep(0.2)  # a request in flight at the kill reaches the server all the same
        # Never two unretired extra generations; a replace key never has a second one.
        for base, names in generations(url).items():
            assert base in (*OVERLAP_KEYS, "plain"), names
            assert len(names) <= (1 if base == "plain" else 2), (names, kill_points)
    assert len(kill_points) >= KILLS, kill_points

    for _ in range(6):
        ok(cli("apply", "--auto-approve", "--force"))
        if cli("plan", "--detailed-exitcode").code == 0:
            break
    document = plan_json(cli)
    assert document["actions"] == [] and document["waiting"] == [], (document, kill_points)
    assert not document["warnings"], document

    live = live_keys(url)
    records = sink_records(tmp_path)
    assert set(records) == {*OVERLAP_KEYS, "plain"}
    by_base = generations(url)
    assert sorted(by_base) == sorted(records)
    for name, record in records.items():
        (live_name,) = by_base[name]  # exactly one generation per manifest key...
        key = live[live_name]
        # ... whose secret is the one in the sink, and valid at the gateway.
        assert record.get("live_name", name) == live_name
        assert record["id"] == key["id"]
        assert record["key"][:11] == record["key_prefix"] == key["key_prefix"]
        assert serve(url, record["key"]) == IN
    assert by_base["plain"] == ["plain"]
