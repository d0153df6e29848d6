"""The Applier in-process, against the dev server over HTTP and a real file sink.

Its worker threads take actions themselves and report each outcome where it finishes; these tests
pin what that must never change: parallelism is a bound, every action gets exactly one answer,
a bug fails one action, an interrupt starts nothing new, and a failing report callback surfaces
in the caller rather than dying in a thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysync.coder.client import ClientSettings, CoderClient
from keysync.devserver import DevServer, DevServerConfig
from keysync.engine.applier import Applier
from keysync.errors import SinkError
from keysync.keys import CreatedKey, LiveKey, SecretRecord
from keysync.manifest.sinks import FileSinkConfig
from keysync.outcomes import Outcome
from keysync.plan import Action, Plan
from keysync.secret import Secret
from keysync.sinks.base import SinkContext
from keysync.sinks.file import FileSink

from conftest import OWNER_TOKEN


@pytest.fixture
def slow_server() -> Iterator[DevServer]:
    config = DevServerConfig(port=0, token=OWNER_TOKEN, seed=7, latency_ms=20, api="ai-gateway-keys")
    with DevServer(config) as server:
        yield server


@pytest.fixture
def client(slow_server: DevServer) -> Iterator[CoderClient]:
    settings = ClientSettings(url=slow_server.url, token=Secret(OWNER_TOKEN), api="ai-gateway-keys")
    client = CoderClient(settings)
    yield client
    client.close()


def sink_at(tmp_path: Path, url: str) -> FileSink:
    return FileSink(FileSinkConfig(path="secrets.json"), SinkContext(base_dir=tmp_path, coderd_url=url))


def creates(count: int) -> Plan:
    return Plan([Action("create", f"key-{i:03d}", "missing") for i in range(count)])


def stored_names(tmp_path: Path) -> set[str]:
    return set(json.loads((tmp_path / "secrets.json").read_text())["keys"])


class CountingApi:
    """The real client, counting how many creates are in flight at once."""

    def __init__(self, client: CoderClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def list_keys(self) -> list[LiveKey]:
        return self._client.list_keys()

    def create_key(self, name: str) -> CreatedKey:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self._client.create_key(name)
        finally:
            with self._lock:
                self.now -= 1

    def delete_key(self, key_id: str) -> bool:
        return self._client.delete_key(key_id)


def test_every_action_is_answered_once_and_parallelism_bounds_requests(
    tmp_path: Path, client: CoderClient
) -> None:
    api = CountingApi(client)
    seen: list[str] = []
    applier = Applier(
        api,
        sink_at(tmp_path, client.url),
        client.url,
        parallelism=4,
        on_outcome=lambda o: seen.append(o.action.name),
    )

    report = applier.apply(creates(30))

    assert report.succeeded and not report.not_started
    assert (
        sorted(seen) == sorted(o.action.name for o in report.outcomes) == [f"key-{i:03d}" for i in range(30)]
    )
    assert 1 < api.most <= 4
    assert stored_names(tmp_path) == set(seen)
    assert {key.name for key in client.list_keys()} == set(seen)


class BuggySink:
    """A sink with a bug for one name: the rest of the apply must not notice."""

    def __init__(self, inner: FileSink, broken: str) -> None:
        self._inner = inner
        self._broken = broken

    def store(self, record: SecretRecord) -> None:
        if record.name == self._broken:
            raise RuntimeError("a bug")
        self._inner.store(record)

    def remove(self, name: str, key_id: str = "") -> None:
        self._inner.remove(name, key_id)


def test_a_bug_in_one_action_fails_that_action_only(tmp_path: Path, client: CoderClient) -> None:
    sink = BuggySink(sink_at(tmp_path, client.url), broken="key-003")
    applier = Applier(client, sink, client.url, parallelism=3)

    report = applier.apply(creates(8))

    [failed] = report.failed
    assert failed.action.name == "key-003"
    assert failed.error == "internal error (a bug, please report it): RuntimeError"
    assert len(report.outcomes) == 8 and not report.not_started
    assert stored_names(tmp_path) == {f"key-{i:03d}" for i in range(8)} - {"key-003"}


class FillingSink:
    """The file sink on a disk that fills after `room` secrets: every store after that fails."""

    def __init__(self, inner: FileSink, room: int) -> None:
        self._inner = inner
        self._room = room
        self._lock = threading.Lock()

    def store(self, record: SecretRecord) -> None:
        with self._lock:
            self._room -= 1
            full = self._room < 0
        if full:
            raise SinkError("cannot write secrets.json: No space left on device")
        self._inner.store(record)

    def remove(self, name: str, key_id: str = "") -> None:
        self._inner.remove(name, key_id)


def test_the_first_failed_sink_write_starts_nothing_more_and_undoes_the_creates_in_flight(
    tmp_path: Path, client: CoderClient
) -> None:
    sink = FillingSink(sink_at(tmp_path, client.url), room=3)
    applier = Applier(client, sink, client.url, parallelism=1)

    report = applier.apply(creates(20))

    assert report.sink_failure == "cannot write secrets.json: No space left on device"
    assert not report.interrupted and not report.succeeded
    created = {o.action.name for o in report.outcomes if o.ok}
    failed = {o.action.name for o in report.failed}
    assert len(created) == 3 and 1 <= len(failed) <= 5  # 1 holding the request, 4 waiting to store
    assert all("was deleted again" in o.error for o in report.failed if o.error)
    assert len(report.not_started) == 20 - len(created) - len(failed)
    assert {key.name for key in client.list_keys()} == created == stored_names(tmp_path)


def test_a_refused_key_fails_alone_and_untouched(tmp_path: Path, client: CoderClient) -> None:
    class Refusing(BuggySink):
        def prepare(self, actions: list[Action]) -> dict[str, str]:
            return {"key-001": "key-001 is someone else's file"}

    applier = Applier(client, Refusing(sink_at(tmp_path, client.url), broken=""), client.url, parallelism=2)

    report = applier.apply(creates(4))

    assert [(o.action.name, o.error) for o in report.failed] == [
        ("key-001", "key-001 is someone else's file")
    ]
    assert report.sink_failure is None and not report.not_started
    assert {key.name for key in client.list_keys()} == {"key-000", "key-002", "key-003"}


def test_an_interrupt_starts_nothing_new_and_accounts_for_every_action(
    tmp_path: Path, client: CoderClient
) -> None:
    stop = threading.Event()

    def interrupt_at_the_third(outcome: Outcome) -> None:
        if len(done) == 2:
            stop.set()
        done.append(outcome)

    done: list[Outcome] = []
    applier = Applier(client, sink_at(tmp_path, client.url), client.url, 1, stop, interrupt_at_the_third)

    report = applier.apply(creates(10))

    assert report.interrupted
    # The third outcome stops the apply; actions already under way then finish.
    assert 3 <= len(report.outcomes) < 10 and all(o.ok for o in report.outcomes)
    names = [o.action.name for o in report.outcomes] + [a.name for a in report.not_started]
    assert sorted(names) == [f"key-{i:03d}" for i in range(10)]
    assert stored_names(tmp_path) == {o.action.name for o in report.outcomes}
    assert len(client.list_keys()) == len(report.outcomes)


def test_a_failing_outcome_callback_is_raised_in_the_caller(tmp_path: Path, client: CoderClient) -> None:
    def broken_pipe(outcome: Outcome) -> None:
        raise BrokenPipeError("stdout went away")

    applier = Applier(client, sink_at(tmp_path, client.url), client.url, 4, on_outcome=broken_pipe)

    with pytest.raises(BrokenPipeError):
        applier.apply(creates(12))
    # Actions already under way finish and keep their secrets; nothing new starts.
    assert stored_names(tmp_path) == {key.name for key in client.list_keys()}
    assert len(stored_names(tmp_path)) < 12


def test_a_thread_that_cannot_start_stops_the_others_before_apply_raises(
    tmp_path: Path, client: CoderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the system refuses another thread: nothing may go on creating keys behind the error."""
    started: list[threading.Thread] = []

    start = threading.Thread.start

    def refuse_the_third_worker(thread: threading.Thread) -> None:
        if thread.name.startswith("keysync-apply-"):  # the dev server's threads start as usual
            if len(started) == 2:
                raise RuntimeError("can't start new thread")
            started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_the_third_worker)
    applier = Applier(client, sink_at(tmp_path, client.url), client.url, parallelism=4)

    with pytest.raises(RuntimeError):
        applier.apply(creates(50))

    assert not any(thread.is_alive() for thread in started)
    live = {key.name for key in client.list_keys()}
    assert live == stored_names(tmp_path) and len(live) <= 2
