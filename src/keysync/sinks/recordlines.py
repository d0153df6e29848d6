"""A keysync JSON document kept as one encoded line per record, in name order.

A line is encoded when its record changes, and a flush hands the lines to the kernel as they are
(`os.writev`): rewriting a document of many keys costs the interpreter next to nothing, so group
commits stay cheap however many keys the sink holds.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping


class RecordLines:
    def __init__(self, records: Iterable[tuple[str, Mapping[str, object]]] = ()) -> None:
        self._names: list[str] = []
        self._lines: list[bytes] = []  # each ends in ",\n"; the last one's comma is cut at flush
        for name, fields in records:
            self.put(name, fields)

    def put(self, name: str, fields: Mapping[str, object]) -> None:
        line = f"    {json.dumps(name)}: {json.dumps(fields)},\n".encode()
        at = bisect.bisect_left(self._names, name)
        if at < len(self._names) and self._names[at] == name:
            self._lines[at] = line
        else:
            self._names.insert(at, name)
            self._lines.insert(at, line)

    def drop(self, name: str) -> None:
        at = bisect.bisect_left(self._names, name)
        if at < len(self._names) and self._names[at] == name:
            del self._names[at], self._lines[at]

    def document(self, coderd_url: str) -> list[bytes]:
        """`{"version": 1, "coderd_url": ..., "keys": {...}}`, in pieces to be written in order."""
        head = f'{{\n  "version": 1,\n  "coderd_url": {json.dumps(coderd_url)},\n  "keys": '.encode()
        if not self._lines:
            return [head + b"{}\n}\n"]
        return [head + b"{\n", *self._lines[:-1], self._lines[-1][:-2] + b"\n", b"  }\n}\n"]
