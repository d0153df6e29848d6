"""The file and directory sinks: formats, modes, atomic durable writes, URL refusal, lock, group commit."""

from __future__ import annotations

import itertools
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keysync.errors import LockHeldError, SinkError
from keysync.keys import SecretRecord, StoredEntry
from keysync.manifest.sinks import DirectorySinkConfig, FileSinkConfig
from keysync.secret import Secret
from keysync.sinks import durable
from keysync.sinks import file as file_module
from keysync.sinks.base import SinkContext
from keysync.sinks.directory import SIDECAR, DirectorySink
from keysync.sinks.durable import atomic_write, probe_writable
from keysync.sinks.file import FileSink
from keysync.sinks.groupcommit import GroupCommit

URL = "https://coder.example.com"
OTHER_URL = "https://other.example.com"
NAMES = ["gateway-us-east", "gateway-eu-west", "1st-key", "a"]


def secret_for(name: str, generation: int = 0) -> str:
    base = (name.replace("-", "") + f"G{generation}" + "Q" * 43)[:40]
    return base + "xyz"


def record(name: str, generation: int = 0, url: str = URL) -> SecretRecord:
    value = secret_for(name, generation)
    return SecretRecord(
        name=name,
        key=Secret(value),
        id=f"0000000{generation}-1111-2222-3333-{name.encode().hex()[:12]:0>12}",
        key_prefix=value[:11],
        created_at=f"2025-06-0{generation % 9 + 1}T10:00:00Z",
        coderd_url=url,
    )


def file_sink(tmp_path: Path, url: str = URL, **settings: Any) -> FileSink:
    config = FileSinkConfig.model_validate({"type": "file", "path": "secrets/keys.json", **settings})
    return FileSink(config, SinkContext(base_dir=tmp_path, coderd_url=url))


def directory_sink(tmp_path: Path, url: str = URL) -> DirectorySink:
    config = DirectorySinkConfig.model_validate({"type": "directory", "path": "secrets/keys"})
    return DirectorySink(config, SinkContext(base_dir=tmp_path, coderd_url=url))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name)


# --- the file sink -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "env"])
def test_file_sink_round_trips_records_through_a_new_instance(tmp_path: Path, fmt: str) -> None:
    records = [record(name, i) for i, name in enumerate(NAMES)]
    sink = file_sink(tmp_path, format=fmt)
    for r in records:
        sink.store(r)
    view = file_sink(tmp_path, format=fmt).read()
    assert view.readable
    assert view.entries == {r.name: StoredEntry.of(r) for r in records}


@pytest.mark.parametrize("fmt", ["json", "env"])
def test_file_sink_remove_is_durable(tmp_path: Path, fmt: str) -> None:
    sink = file_sink(tmp_path, format=fmt)
    for name in NAMES:
        sink.store(record(name))
    sink.remove("gateway-us-east")
    sink.remove("never-stored")
    assert sorted(file_sink(tmp_path, format=fmt).read().entries) == sorted(set(NAMES) - {"gateway-us-east"})
    assert secret_for("gateway-us-east") not in (tmp_path / "secrets/keys.json").read_text()


@pytest.mark.parametrize("fmt", ["json", "env"])
def test_storing_a_name_again_replaces_its_record(tmp_path: Path, fmt: str) -> None:
    sink = file_sink(tmp_path, format=fmt)
    sink.store(record("a", 1))
    sink.store(record("a", 2))
    assert file_sink(tmp_path, format=fmt).read().entries == {"a": StoredEntry.of(record("a", 2))}
    assert secret_for("a", 1) not in (tmp_path / "secrets/keys.json").read_text()


def test_file_sink_json_layout(tmp_path: Path) -> None:
    r = record("gateway-us-east", 3)
    file_sink(tmp_path).store(r)
    document = json.loads((tmp_path / "secrets/keys.json").read_text())
    assert document == {"version": 1, "coderd_url": URL, "keys": {"gateway-us-east": r.document()}}
    assert set(document["keys"]["gateway-us-east"]) == {
        "name",
        "key",
        "id",
        "key_prefix",
        "created_at",
        "coderd_url",
    }
    assert document["keys"]["gateway-us-east"]["key"] == secret_for("gateway-us-east", 3)


def test_file_sink_env_layout(tmp_path: Path) -> None:
    sink = file_sink(tmp_path, format="env")
    sink.store(record("gateway-us-east"))
    sink.store(record("1st-key"))
    lines = (tmp_path / "secrets/keys.json").read_text().splitlines()
    assert lines[0] == f"# keysync coderd_url={URL}"
    assert f"GATEWAY_US_EAST={secret_for('gateway-us-east')}" in lines
    assert f"KEY_1ST_KEY={secret_for('1st-key')}" in lines
    assert all(line.startswith("#") or "=" in line for line in lines)


def test_file_sink_env_prefix(tmp_path: Path) -> None:
    sink = file_sink(tmp_path, format="env", prefix="AIGW_")
    sink.store(record("gateway-us-east"))
    sink.store(record("1st-key"))
    text = (tmp_path / "secrets/keys.json").read_text()
    assert f"\nAIGW_GATEWAY_US_EAST={secret_for('gateway-us-east')}\n" in text
    assert f"\nAIGW_1ST_KEY={secret_for('1st-key')}\n" in text
    reread = file_sink(tmp_path, format="env", prefix="AIGW_").read().entries
    assert reread == {r.name: StoredEntry.of(r) for r in (record("gateway-us-east"), record("1st-key"))}


def test_file_sink_is_mode_0600_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "secrets/keys.json"
    path.parent.mkdir()
    path.write_text("")
    path.chmod(0o644)
    sink = file_sink(tmp_path)
    sink.store(record("a"))
    assert mode_of(path) == 0o600
    sink.store(record("gateway-eu-west"))
    sink.remove("a")
    assert mode_of(path) == 0o600
    with sink.lock(None):
        for lock in path.parent.glob("*.lock"):
            assert mode_of(lock) & 0o077 == 0, f"{lock} is readable by others"


def test_file_sink_creates_its_directory_private(tmp_path: Path, open_umask: None) -> None:
    file_sink(tmp_path).store(record("a"))
    assert mode_of(tmp_path / "secrets") & 0o077 == 0


def test_file_sink_leaves_no_temporary_files(tmp_path: Path) -> None:
    sink = file_sink(tmp_path)
    for i in range(5):
        sink.store(record("a", i))
    sink.remove("a")
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["keys.json"]


@pytest.mark.parametrize("fmt", ["json", "env"])
def test_file_made_for_another_coderd_is_refused(tmp_path: Path, fmt: str) -> None:
    file_sink(tmp_path, url=OTHER_URL, format=fmt).store(record("a", url=OTHER_URL))
    path = tmp_path / "secrets/keys.json"
    before = path.read_bytes()
    sink = file_sink(tmp_path, url=URL, format=fmt)
    with pytest.raises(SinkError) as caught:
        sink.read()
    assert OTHER_URL in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(SinkError):
        file_sink(tmp_path, url=URL, format=fmt).store(record("b"))
    with pytest.raises(SinkError):
        file_sink(tmp_path, url=URL, format=fmt).check_writable()
    assert path.read_bytes() == before
    assert secret_for("a") not in str(caught.value)


def test_a_file_that_is_not_a_keysync_document_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets/keys.json"
    path.parent.mkdir()
    path.write_text("somebody else's notes\n")
    with pytest.raises(SinkError) as caught:
        file_sink(tmp_path).read()
    assert str(path) in str(caught.value)
    assert path.read_text() == "somebody else's notes\n"


def test_a_missing_file_is_an_empty_sink(tmp_path: Path) -> None:
    sink = file_sink(tmp_path)
    assert sink.read().entries == {}
    sink.check_writable()
    assert not (tmp_path / "secrets/keys.json").exists()


def test_a_failed_write_is_not_persisted_by_a_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = file_sink(tmp_path)
    sink.store(record("a"))
    real = atomic_write

    def failing(path: Path, data: bytes, sync_directory: bool = True) -> None:
        raise SinkError(f"cannot write {path}: disk full")

    monkeypatch.setattr(file_module, "atomic_write", failing)
    with pytest.raises(SinkError):
        sink.store(record("b"))
    monkeypatch.setattr(file_module, "atomic_write", real)
    sink.store(record("gateway-eu-west"))
    assert sorted(file_sink(tmp_path).read().entries) == ["a", "gateway-eu-west"]
    assert secret_for("b") not in (tmp_path / "secrets/keys.json").read_text()


# --- atomic writes -----------------------------------------------------------------------------


def test_atomic_write_replaces_whole_content_with_mode_0600(tmp_path: Path, open_umask: None) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old content that is longer than the new one")
    target.chmod(0o666)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(SinkError) as caught:
        atomic_write(target, b"new secret")
    monkeypatch.undo()
    assert str(target) in str(caught.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def test_atomic_write_onto_a_directory_fails_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(SinkError):
        atomic_write(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


# --- the directory sink ------------------------------------------------------------------------


def test_directory_sink_writes_just_the_secret_and_a_sidecar(tmp_path: Path, open_umask: None) -> None:
    r = record("gateway-us-east", 2)
    sink = directory_sink(tmp_path)
    sink.check_writable()  # as apply does before its first create
    sink.store(r)
    root = tmp_path / "secrets/keys"
    assert (root / "gateway-us-east").read_bytes() == secret_for("gateway-us-east", 2).encode()
    assert mode_of(root / "gateway-us-east") == 0o600
    assert mode_of(root / SIDECAR) == 0o600
    assert mode_of(root) & 0o077 == 0
    sidecar = json.loads((root / SIDECAR).read_text())
    assert sidecar["coderd_url"] == URL
    assert sidecar["keys"]["gateway-us-east"] == r.public()
    assert secret_for("gateway-us-east", 2) not in (root / SIDECAR).read_text()
    assert leftovers(tmp_path) == []


def test_directory_sink_round_trips_and_removes(tmp_path: Path) -> None:
    sink = directory_sink(tmp_path)
    sink.check_writable()
    records = [record(name, i) for i, name in enumerate(NAMES)]
    for r in records:
        sink.store(r)
    sink.remove("a")
    view = directory_sink(tmp_path).read()
    assert view.entries == {r.name: StoredEntry.of(r) for r in records if r.name != "a"}
    assert not (tmp_path / "secrets/keys/a").exists()
    assert "a" not in json.loads((tmp_path / "secrets/keys" / SIDECAR).read_text())["keys"]


def test_directory_sink_store_creates_its_directory_like_the_file_sink(tmp_path: Path) -> None:
    directory_sink(tmp_path).store(record("a"))
    assert (tmp_path / "secrets/keys/a").read_text() == secret_for("a")


def test_directory_made_for_another_coderd_is_refused(tmp_path: Path) -> None:
    other = directory_sink(tmp_path, url=OTHER_URL)
    other.check_writable()
    other.store(record("a", url=OTHER_URL))
    with pytest.raises(SinkError) as caught:
        directory_sink(tmp_path, url=URL).read()
    assert OTHER_URL in str(caught.value)
    with pytest.raises(SinkError):
        directory_sink(tmp_path, url=URL).store(record("b"))
    assert not (tmp_path / "secrets/keys/b").exists()


# --- the lock ----------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from keysync.sinks.base import SinkContext
    from keysync.manifest.sinks import FileSinkConfig, DirectorySinkConfig
    from keysync.sinks.file import FileSink
    from keysync.sinks.directory import DirectorySink

    kind, base, hold_after_release_request = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    context = SinkContext(base_dir=base, coderd_url="https://coder.example.com")
    if kind == "file":
        sink = FileSink(FileSinkConfig(path="secrets/keys.json"), context)
    else:
        sink = DirectorySink(DirectorySinkConfig(path="secrets/keys"), context)
    with sink.lock(None):
        print("locked", flush=True)
        sys.stdin.readline()
        time.sleep(hold_after_release_request)
    """
)


class Holder:
    """Another process holding a sink's lock until told to let go."""

    def __init__(self, kind: str, base: Path, linger: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, kind, str(base), str(linger)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.release()
        self.process.wait(timeout=10)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.stdout.close()


SINKS: dict[str, Callable[[Path], FileSink | DirectorySink]] = {
    "file": file_sink,
    "directory": directory_sink,
}


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_second_lock_fails_at_once_naming_the_holder(tmp_path: Path, kind: str) -> None:
    holder = Holder(kind, tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(LockHeldError) as caught, SINKS[kind](tmp_path).lock(None):
            pass
        assert time.monotonic() - started < 1.0
        message = str(caught.value)
        assert str(holder.process.pid) in message
        assert socket.gethostname() in message
    finally:
        holder.stop()


def test_a_lock_in_another_thread_of_this_process_also_excludes(tmp_path: Path) -> None:
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with file_sink(tmp_path).lock(None):
            held.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(LockHeldError) as caught, file_sink(tmp_path).lock(None):
            pass
        assert str(os.getpid()) in str(caught.value)
    finally:
        done.set()
        thread.join(10)


def test_with_a_timeout_the_lock_waits_for_the_holder(tmp_path: Path) -> None:
    holder = Holder("file", tmp_path, linger=0.4)
    try:
        holder.release()
        started = time.monotonic()
        with file_sink(tmp_path).lock(10.0):
            waited = time.monotonic() - started
        assert 0.1 < waited < 5.0
    finally:
        holder.stop()


def test_a_timeout_that_runs_out_fails_naming_the_holder(tmp_path: Path) -> None:
    holder = Holder("file", tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(LockHeldError) as caught, file_sink(tmp_path).lock(0.3):
            pass
        assert time.monotonic() - started >= 0.3
        assert str(holder.process.pid) in str(caught.value)
    finally:
        holder.stop()


def test_the_lock_is_free_again_after_release(tmp_path: Path) -> None:
    sink = file_sink(tmp_path)
    with sink.lock(None):
        pass
    with file_sink(tmp_path).lock(None):
        pass
    holder = Holder("file", tmp_path)
    holder.stop()
    with file_sink(tmp_path).lock(None):
        pass


# --- group commit ------------------------------------------------------------------------------


def test_concurrent_stores_are_all_durable_with_fewer_flushes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = atomic_write
    flushes: list[int] = []

    def counting(path: Path, data: bytes, sync_directory: bool = True) -> None:
        flushes.append(len(data))
        time.sleep(0.02)  # a slow disk: stores pile up behind the flush in progress
        real(path, data, sync_directory)

    monkeypatch.setattr(file_module, "atomic_write", counting)
    sink = file_sink(tmp_path)
    path = tmp_path / "secrets/keys.json"
    count = 32
    barrier = threading.Barrier(count)
    problems: list[str] = []

    def store(i: int) -> None:
        r = record(f"key-{i}", i)
        barrier.wait()
        try:
            sink.store(r)
            on_disk = json.loads(path.read_text())["keys"]
            if on_disk.get(r.name, {}).get("key") != r.key.reveal():
                problems.append(f"{r.name} returned before its record was on disk")
        except Exception as exc:  # collected: an exception in a thread would be lost
            problems.append(f"{r.name}: {exc!r}")

    threads = [threading.Thread(target=store, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert problems == []
    assert len(file_sink(tmp_path).read().entries) == count
    assert 1 <= len(flushes) < count


def test_group_commit_returns_only_after_a_flush_covering_the_update() -> None:
    state: list[int] = []
    flushed: list[list[int]] = []
    lock = threading.Lock()

    def snapshot() -> bytes:
        return json.dumps(state).encode()

    def flush(data: bytes) -> None:
        time.sleep(0.01)
        with lock:
            flushed.append(json.loads(data))

    commit = GroupCommit(snapshot, flush)
    problems: list[int] = []

    def worker(i: int) -> None:
        commit.commit(lambda: state.append(i))
        with lock:
            if not any(i in batch for batch in flushed):
                problems.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert problems == []
    assert sorted(flushed[-1]) == list(range(20))
    assert len(flushed) < 20


def test_group_commit_reports_a_failed_flush_and_recovers() -> None:
    failing = [True]

    def flush(data: bytes) -> None:
        if failing[0]:
            raise OSError(28, "No space left on device")

    commit = GroupCommit(lambda: b"", flush)
    with pytest.raises(SinkError) as caught:
        commit.commit(lambda: None)
    assert "No space left" in str(caught.value)
    failing[0] = False
    commit.commit(lambda: None)


def new_flushers(before: set[threading.Thread]) -> list[threading.Thread]:
    """Flusher threads alive now that were not before (other tests' sinks may leave theirs)."""
    return [t for t in threading.enumerate() if t.name == "keysync-sink-flush" and t not in before]


def test_closing_a_group_commit_ends_its_thread_and_a_later_commit_starts_another() -> None:
    before = set(threading.enumerate())
    flushed: list[bytes] = []
    state = [b""]
    commit = GroupCommit(lambda: state[0], flushed.append)
    commit.commit(lambda: state.__setitem__(0, b"one"))
    assert len(new_flushers(before)) == 1

    commit.close()
    assert new_flushers(before) == []
    commit.close()  # twice is fine
    commit.commit(lambda: state.__setitem__(0, b"two"))
    assert flushed == [b"one", b"two"]
    commit.close()
    assert new_flushers(before) == []


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_closing_a_sink_ends_its_flusher_and_drops_its_records(tmp_path: Path, kind: str) -> None:
    before = set(threading.enumerate())
    sink = file_sink(tmp_path) if kind == "file" else directory_sink(tmp_path)
    sink.store(record("alpha"))
    sink.close()
    assert new_flushers(before) == []
    assert (sink._records if isinstance(sink, FileSink) else sink._meta) is None
    assert sorted(sink.read().entries) == ["alpha"]  # a closed sink reads its files afresh
    sink.close()


def test_probes_and_temporary_files_never_follow_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "doc.json"
    monkeypatch.setattr(durable, "_counter", itertools.count(7))
    (tmp_path / f".doc.json.{os.getpid()}.7.tmp").symlink_to(victim)  # the next temporary's name

    with pytest.raises(SinkError, match="cannot write"):
        atomic_write(target, b"{}")
    atomic_write(target, b"{}")  # the next name is free
    probe_writable(tmp_path, 4096)  # a probe's name is random: nobody can plant it in advance

    assert victim.read_text() == "precious"
    assert target.read_bytes() == b"{}"
    assert (tmp_path / f".doc.json.{os.getpid()}.7.tmp").is_symlink()


@pytest.mark.parametrize("sink_type", ["file", "directory", "exec"])
def test_built_in_sinks_take_parallel_writes_unwrapped(tmp_path: Path, sink_type: str) -> None:
    from keysync.sinks.base import OneWriteAtATime
    from keysync.sinks.registry import open_sink

    options = (
        {"type": sink_type, "path": "out"} if sink_type != "exec" else {"type": "exec", "command": ["true"]}
    )
    sink = open_sink(options, SinkContext(base_dir=tmp_path, coderd_url=URL))

    assert not isinstance(sink, OneWriteAtATime)
    assert type(sink).concurrent_writes is True  # type: ignore[attr-defined]
