"""What a local sink reads back is bounded: the manifest (which a pull request may change) names
the path, so a device, a FIFO, a huge file or JSON nested past any sense is one clear error, never
a hang, a memory blow-up or a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from keysync.errors import SinkError
from keysync.sinks import durable

from conftest import Cli

FILE_SINK = "sink:\n  type: file\n  path: {path}\n"
DIRECTORY_SINK = "sink:\n  type: directory\n  path: {path}\n"


def manifest(sink: str, path: str) -> str:
    return "version: 1\nkeys:\n  - name: alpha\n" + sink.format(path=path)


def plant_device(path: Path) -> None:
    path.symlink_to("/dev/zero")


def plant_fifo(path: Path) -> None:
    os.mkfifo(path)


def plant_deep_json(path: Path) -> None:
    path.write_text("[" * 200_000)


def plant_directory(path: Path) -> None:
    path.mkdir()


PLANTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "device": (plant_device, "not a regular file"),
    "fifo": (plant_fifo, "not a regular file"),
    "deep-json": (plant_deep_json, "is not a keysync json document"),
    "directory": (plant_directory, "not a regular file"),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_file_sink_path_that_is_no_document_is_one_error_line(cli: Cli, plant: str) -> None:
    make, said = PLANTS[plant]
    make(cli.cwd / "keys.json")
    cli.write_manifest(manifest(FILE_SINK, "keys.json"))
    for command in (("plan",), ("apply", "--auto-approve"), ("status",)):
        run = cli(*command, timeout=30)
        assert run.code == 1, run
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], run
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr


def test_a_directory_sink_secret_file_that_is_a_device_is_refused(cli: Cli) -> None:
    cli.write_manifest(manifest(DIRECTORY_SINK, "keys"))
    assert cli("apply", "--auto-approve").code == 0
    secret = cli.cwd / "keys" / "alpha"
    secret.unlink()
    plant_device(secret)
    run = cli("plan", timeout=30)
    assert run.code == 1, run
    assert "not a regular file" in run.stderr and "Traceback" not in run.stderr


def test_a_directory_sink_sidecar_nested_too_deep_is_refused(cli: Cli) -> None:
    cli.write_manifest(manifest(DIRECTORY_SINK, "keys"))
    assert cli("apply", "--auto-approve").code == 0
    plant_deep_json(next((cli.cwd / "keys").glob(".keysync*.json")))
    run = cli("plan")
    assert run.code == 1, run
    assert "is not a keysync sidecar" in run.stderr and "Traceback" not in run.stderr


def test_a_document_over_the_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2048)
    with pytest.raises(SinkError, match="larger than 1 KiB"):
        durable.read_local_text(path, "sink file", limit=1024)
    assert durable.read_local_text(tmp_path / "absent.json", "sink file") is None
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(SinkError, match="not UTF-8"):
        durable.read_local_text(path, "sink file")
