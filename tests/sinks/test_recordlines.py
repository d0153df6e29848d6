"""The file sink's and the directory sidecar's JSON: kept as lines, written as pieces."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from keysync.sinks.durable import atomic_write
from keysync.sinks.recordlines import RecordLines

URL = "http://127.0.0.1:7080"
names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=12)
fields = st.dictionaries(st.sampled_from(["id", "key_prefix", "created_at"]), st.text(max_size=8))


@given(st.lists(st.tuples(st.booleans(), names, fields), max_size=40))
def test_the_document_is_the_json_of_what_was_put_and_not_dropped(
    changes: list[tuple[bool, str, dict[str, str]]],
) -> None:
    lines = RecordLines()
    expected: dict[str, dict[str, str]] = {}
    for keep, name, record in changes:
        if keep:
            lines.put(name, record)
            expected[name] = record
        else:
            lines.drop(name)
            expected.pop(name, None)

    text = b"".join(lines.document(URL)).decode()

    document = json.loads(text)
    assert document == {"version": 1, "coderd_url": URL, "keys": expected}
    assert list(document["keys"]) == sorted(expected)  # one order, whatever the history


def test_the_layout_is_one_record_a_line() -> None:
    lines = RecordLines([("beta", {"id": "2"}), ("alpha", {"id": "1"})])

    assert b"".join(lines.document(URL)).decode() == (
        '{\n  "version": 1,\n  "coderd_url": "http://127.0.0.1:7080",\n  "keys": {\n'
        '    "alpha": {"id": "1"},\n    "beta": {"id": "2"}\n  }\n}\n'
    )
    assert b"".join(RecordLines().document(URL)).decode() == (
        '{\n  "version": 1,\n  "coderd_url": "http://127.0.0.1:7080",\n  "keys": {}\n}\n'
    )


def test_atomic_write_writes_many_pieces_in_order(tmp_path: Path) -> None:
    pieces = [f"{i:05d}\n".encode() for i in range(5000)]  # several gathered writes' worth
    target = tmp_path / "doc.txt"

    atomic_write(target, pieces)

    assert target.read_bytes() == b"".join(pieces)
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["doc.txt"]
