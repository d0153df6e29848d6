"""Loads a manifest file and reports every problem with its file, line and field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from keysync import yamlsource
from keysync.errors import ManifestError
from keysync.manifest import Manifest
from keysync.sinkconfig import BUILTIN_SINK_CONFIGS

Problem = tuple[yamlsource.Path, str]
_TOKEN_LIKE = re.compile(r"^[A-Za-z0-9]{10}-[A-Za-z0-9]{22}$")
_SECRET_FIELDS = {"token", "session_token", "secret", "secret_id", "password", "key"}


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    path: Path
    sha256: str

    @property
    def directory(self) -> Path:
        return self.path.parent


def load_manifest(path: Path) -> LoadedManifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError([f"{path}: no such file (pass -f/--manifest PATH)"]) from None
    except OSError as exc:
        raise ManifestError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_manifest(raw, path)


def parse_manifest(raw: bytes, path: Path) -> LoadedManifest:
    try:
        document = yamlsource.load(raw)
    except yamlsource.YamlError as exc:
        raise ManifestError([f"{path}:{exc.line}: {exc.message}"]) from None
    problems = list(_structure_problems(document.data))
    manifest = None
    if not problems:
        manifest, problems = _validate(document.data)
    if manifest is not None and not problems:
        problems = list(_semantic_problems(manifest))
    if problems:
        lines = sorted({(document.line_of(loc), _field(loc), text) for loc, text in problems})
        raise ManifestError([f"{path}:{line}: {field}: {text}" for line, field, text in lines])
    assert manifest is not None
    return LoadedManifest(manifest, path, hashlib.sha256(raw).hexdigest())


def _structure_problems(data: Any) -> Iterator[Problem]:
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        yield (), f"the manifest must be a mapping with `version` and `keys`, not {kind}"
        return
    if "version" in data and data["version"] != 1:
        yield (
            ("version",),
            f"unsupported version {_quote(data['version'])}: this keysync reads version 1",
        )


def _validate(data: dict[str, Any]) -> tuple[Manifest | None, list[Problem]]:
    problems: list[Problem] = []
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        return None, [_problem(error) for error in exc.errors()]
    config_model = BUILTIN_SINK_CONFIGS.get(manifest.sink.type) or _plugin_config(manifest.sink.type)
    if config_model is None:
        problems.append((("sink", "type"), f"unknown sink type {manifest.sink.type!r}"))
    else:
        problems.extend(_sink_problems(config_model, manifest.sink.options()))
    return manifest, problems


def _plugin_config(sink_type: str) -> type[BaseModel] | None:
    from keysync.sinks.registry import plugin_config_model

    return plugin_config_model(sink_type)


def _sink_problems(model: type[BaseModel], options: dict[str, Any]) -> list[Problem]:
    try:
        model.model_validate(options)
    except ValidationError as exc:
        return [_problem(error, prefix=("sink",)) for error in exc.errors()]
    return []


def _semantic_problems(manifest: Manifest) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    names = set(manifest.names())
    for index, spec in enumerate(manifest.keys):
        loc: yamlsource.Path = ("keys", index)
        if spec.name in seen:
            yield loc, f"duplicate key name {spec.name!r} (first at keys[{seen[spec.name]}])"
        seen.setdefault(spec.name, index)
        if manifest.policy.ignores(spec.name):
            yield loc, f"{spec.name!r} matches policy.ignore, so keysync could never manage it"
        base = _generation_base(spec.name)
        if base in names:
            yield loc, f"{spec.name!r} is a rotation generation of {base!r}; rename one of them"
        rotation = spec.rotation or manifest.policy.rotation
        if rotation == "overlap" and len(spec.name) > 60:
            yield loc, f"{spec.name!r} is too long for rotation: overlap (at most 60 characters)"


def _generation_base(name: str) -> str | None:
    match = re.match(r"^(.+)-r(\d+)$", name)
    return match.group(1) if match and int(match.group(2)) >= 2 else None


def _problem(error: Any, prefix: yamlsource.Path = ()) -> Problem:
    loc = prefix + tuple(part for part in error["loc"] if not _is_union_tag(part))
    if error["type"] == "extra_forbidden":
        hint = ""
        if str(loc[-1]) in _SECRET_FIELDS or "token" in str(loc[-1]):
            hint = ": secrets never live in the manifest; use CODER_SESSION_TOKEN or --token-file"
        return loc, f"unknown field{hint}"
    message = error["msg"]
    if error["type"] != "missing":
        message += f" (got {_quote(error.get('input'))})"
    return loc, message


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and (part.startswith(("literal[", "function-")) or part == "str")


def _quote(value: Any) -> str:
    text = repr(value)
    if isinstance(value, str) and _TOKEN_LIKE.match(value):
        return "'<redacted token-like value>'"
    return text if len(text) <= 60 else text[:57] + "..."


def _field(loc: yamlsource.Path) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(manifest)"
