"""Loads a manifest file and reports every problem with its file, line and field."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from keysync.errors import ManifestError
from keysync.generations import generation_of
from keysync.manifest import yamlsource
from keysync.manifest.model import MAX_GLOBS, Manifest, Policy, glob_count
from keysync.manifest.sinks import BUILTIN_SINK_CONFIGS, env_name
from keysync.secret import looks_secret, redact_secret_like

Problem = tuple[yamlsource.Path, str]
_FRIENDLY = {
    "name": "not a valid key name: lowercase letters, digits and single hyphens, not at either end",
    "rotate_after": "not a duration: digits and a unit s, m, h, d or w, e.g. 90d or 1w2d",
    "overlap_grace": "not a duration: digits and a unit s, m, h, d or w, e.g. 15m",
}
_SECRET_FIELDS = {"token", "session_token", "secret", "secret_id", "password", "key"}


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    path: Path
    sha256: str

    @property
    def directory(self) -> Path:
        return self.path.absolute().parent


def load_manifest(path: Path) -> LoadedManifest:
    try:
        with path.open("rb") as file:
            raw = file.read(yamlsource.MAX_BYTES + 1)  # what is beyond the limit is never read
    except FileNotFoundError:
        raise ManifestError([f"{path}: no such file (pass -f/--manifest PATH)"]) from None
    except OSError as exc:
        raise ManifestError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_manifest(raw, path)


def parse_manifest(raw: bytes, path: Path) -> LoadedManifest:
    with _collector_paused():
        try:
            document = yamlsource.load(raw)
        except yamlsource.YamlError as exc:
            raise ManifestError([f"{path}:{exc.line}: {exc.message}"]) from None
        problems = list(_structure_problems(document.data))
        manifest = None
        if not problems:
            manifest, problems = _validate(document.data)
    if problems:
        lines = sorted({(document.line_of(loc), _field(loc), text) for loc, text in problems})
        raise ManifestError([f"{path}:{line}: {field}: {text}" for line, field, text in lines])
    assert manifest is not None
    return LoadedManifest(manifest, path, hashlib.sha256(raw).hexdigest())


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading makes a great many objects and frees almost none, so the garbage collector's
    passes over them, more frequent as they grow, find nothing and cost more than the loading."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _structure_problems(data: Any) -> Iterator[Problem]:
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        yield (), f"the manifest must be a mapping with `version` and `keys`, not {kind}"
        return
    if "version" in data and (type(data["version"]) is not int or data["version"] != 1):
        yield (
            ("version",),
            f"unsupported version {_quote(data['version'])}: this keysync reads version 1",
        )


def _validate(data: dict[str, Any]) -> tuple[Manifest | None, list[Problem]]:
    problems = _sink_problems(data.get("sink", {}))
    problems += _semantic_problems(data)
    problems += _env_collisions(data)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        return None, [_problem(error) for error in exc.errors()] + problems
    return manifest, problems


def _sink_problems(sink: Any) -> list[Problem]:
    if not isinstance(sink, dict) or not isinstance(sink.get("type", "file"), str):
        return []  # the model reports the wrong type
    sink_type = sink.get("type", "file")
    model = BUILTIN_SINK_CONFIGS.get(sink_type) or _plugin_config(sink_type)
    if model is None:
        return [(("sink", "type"), f"unknown sink type {_quote(sink_type)}")]
    try:
        model.model_validate(sink)
    except ValidationError as exc:
        return [_problem(error, prefix=("sink",)) for error in exc.errors()]
    return []


def _plugin_config(sink_type: str) -> type[BaseModel] | None:
    from keysync.sinks.registry import plugin_config_model

    return plugin_config_model(sink_type)


def _semantic_problems(data: dict[str, Any]) -> list[Problem]:
    """Rules across fields, checked on the raw data so that they show beside type errors."""
    keys = data.get("keys")
    if not isinstance(keys, list):
        return []
    raw_policy = data.get("policy")
    policy: dict[str, Any] = raw_policy if isinstance(raw_policy, dict) else {}
    raw_ignore = policy.get("ignore")
    ignore = [p for p in raw_ignore if isinstance(p, str)] if isinstance(raw_ignore, list) else []
    if glob_count(ignore) > MAX_GLOBS:
        ignore = []  # the model reports that; matching every key against them all would be slow
    names = {name for name in map(_raw_name, keys) if name is not None}
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    raw_manage = policy.get("manage")
    manage = [p for p in raw_manage if isinstance(p, str)] if isinstance(raw_manage, list) else []
    if glob_count(manage) > MAX_GLOBS:
        manage = []  # as for ignore
    ignoring = Policy.model_construct(ignore=ignore, manage=manage)
    rotation = policy.get("rotation")
    for index, item in enumerate(keys):  # once per key, so the common case tests as little as it can
        name = _raw_name(item)
        if name is None:
            continue
        if name in seen:
            problems.append((("keys", index), f"duplicate key name {name!r} (first at keys[{seen[name]}])"))
        else:
            seen[name] = index
        if ignore and ignoring.ignores(name):
            problems.append(
                (("keys", index), f"{name!r} matches policy.ignore, so keysync could never manage it")
            )
        if manage and ignoring.outside_manage(name):
            message = f"{name!r} matches no policy.manage pattern, so keysync never manages it"
            problems.append((("keys", index), message))
        generation = generation_of(name) if "-r" in name else None
        if generation and generation[0] in names:
            message = f"{name!r} is a rotation generation of {generation[0]!r}; rename one of them"
            problems.append((("keys", index), message))
        if (
            len(name) > 60
            and (item.get("rotation", rotation) if isinstance(item, dict) else rotation) == "overlap"
        ):
            message = f"{name!r} is too long for rotation: overlap (at most 60 characters)"
            problems.append((("keys", index), message))
    return problems


def _env_collisions(data: dict[str, Any]) -> list[Problem]:
    """An env-format file holds one variable per key: two names must not make the same one."""
    sink, keys = data.get("sink"), data.get("keys")
    if not isinstance(sink, dict) or sink.get("format") != "env" or not isinstance(keys, list):
        return []
    prefix = sink.get("prefix", "") if isinstance(sink.get("prefix", ""), str) else ""
    owners: dict[str, str] = {}
    problems: list[Problem] = []
    for index, item in enumerate(keys):
        spec = _raw_spec(item)
        if not spec or not spec["name"]:
            continue
        variable = env_name(spec["name"], prefix)
        first = owners.setdefault(variable, spec["name"])
        if first != spec["name"]:
            message = f"{spec['name']!r} and {first!r} would share the variable {variable} in the env file"
            problems.append((("keys", index), message))
    return problems


def _raw_name(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else None


def _raw_spec(item: Any) -> dict[str, Any] | None:
    if isinstance(item, str):
        return {"name": item}
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return item
    return None


def _problem(error: Any, prefix: yamlsource.Path = ()) -> Problem:
    loc = prefix + tuple(part for part in error["loc"] if not _is_union_tag(part))
    if error["type"] == "extra_forbidden":
        return loc, f"unknown field{_secret_hint(loc)}"
    message = error["msg"]
    if error["type"] == "string_pattern_mismatch":
        message = _FRIENDLY.get(str(loc[-1]), message)
    elif error["type"] in ("model_type", "model_attributes_type", "dict_type") and loc[:1] == ("keys",):
        message = "a key is a name, or a mapping with `name` (and optional rotate_after, rotation)"
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    if error["type"] != "missing" and repr(error.get("input")) not in message:
        message += f" (got {_quote(error.get('input'))})"
    return loc, message


def _secret_hint(loc: yamlsource.Path) -> str:
    if str(loc[-1]) not in _SECRET_FIELDS and "token" not in str(loc[-1]):
        return ""
    if loc[:1] == ("sink",):
        return ": secrets never live in the manifest; use VAULT_TOKEN or auth.token_file"
    return ": secrets never live in the manifest; use CODER_SESSION_TOKEN or --token-file"


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and (part.startswith(("literal[", "function-")) or part == "str")


def _quote(value: Any) -> str:
    text = repr(value)
    if looks_secret(text):
        return "<a value that looks like a secret, not shown>"
    return text if len(text) <= 60 else text[:57] + "..."


def _field(loc: yamlsource.Path) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return redact_secret_like(text) or "(manifest)"
