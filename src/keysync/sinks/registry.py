"""Finds sinks by type name through the `keysync.sinks` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from keysync.errors import SinkError
from keysync.sinks.base import OneWriteAtATime, Sink, SinkContext

GROUP = "keysync.sinks"
_BUILTIN = {
    "file": "keysync.sinks.file:FileSink",
    "directory": "keysync.sinks.directory:DirectorySink",
    "vault": "keysync.sinks.vault:VaultSink",
    "exec": "keysync.sinks.exec:ExecSink",
    "kubernetes": "keysync.sinks.kubernetes:KubernetesSink",
}


def _entry_point(sink_type: str) -> EntryPoint | None:
    if sink_type in _BUILTIN:
        # Built-ins are registered under the same group; this spares start-up a metadata scan.
        return EntryPoint(sink_type, _BUILTIN[sink_type], GROUP)
    matches = entry_points(group=GROUP, name=sink_type)
    return next(iter(matches), None)


def sink_class(sink_type: str) -> type[Sink] | None:
    point = _entry_point(sink_type)
    if point is None:
        return None
    try:
        return cast(type[Sink], point.load())
    except Exception as exc:  # a broken plugin must not crash keysync
        raise SinkError(f"sink plugin {sink_type!r} failed to load: {exc}") from None


def plugin_config_model(sink_type: str) -> type[BaseModel] | None:
    cls = sink_class(sink_type)
    return None if cls is None else cls.config_model


def installed_types() -> list[str]:
    return sorted({*_BUILTIN, *(point.name for point in entry_points(group=GROUP))})


def open_sink(options: dict[str, Any], context: SinkContext) -> Sink:
    sink_type = str(options.get("type", "file"))
    cls = sink_class(sink_type)
    if cls is None:
        raise SinkError(f"unknown sink type {sink_type!r}; installed: {', '.join(installed_types())}")
    try:
        config = cls.config_model.model_validate(options)
    except ValidationError as exc:
        raise SinkError(f"sink settings: {exc.errors(include_input=False)[0]['msg']}") from None
    sink = cls(config, context)
    return sink if getattr(cls, "concurrent_writes", False) else OneWriteAtATime(sink)
