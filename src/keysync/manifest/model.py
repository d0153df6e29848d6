"""The manifest: which keys should exist, where their secrets go, and the rules for changes."""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from keysync.duration import parse_duration
from keysync.generations import logical_name
from keysync.names import MAX_NAME_LENGTH, NAME_PATTERN

Rotation = Literal["replace", "overlap"]
OnMissingSecret = Literal["replace", "keep", "fail"]
DURATION_PATTERN = r"^(\d+[smhdw])+$"
MAX_GLOBS = 100  # per list: every key is matched against them all


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, json_schema_extra={"examples": ["90d", "1w2d"]}),
    AfterValidator(_check_duration),
]
KeyName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CoderdSettings(_Strict):
    url: str | None = Field(None, description="Coder's URL; --url and CODER_URL override it.")
    api: Literal["auto", "coderd-keys", "aibridge-keys", "ai-gateway-keys"] = "auto"
    # CODER_..._TOKEN only: a manifest from a pull request must not send another credential
    # of the pipeline (VAULT_TOKEN, GITHUB_TOKEN) to Coder as its session token.
    token_env: str = Field(
        "CODER_SESSION_TOKEN",
        pattern=r"^CODER_[A-Z0-9_]*TOKEN$",
        description="The variable holding this deployment's session token; --token-file beats it.",
    )


class SinkSettings(BaseModel):
    """Where secrets go; the chosen sink type validates the other fields."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str = "file"

    def options(self) -> dict[str, Any]:
        return self.model_dump()


class Policy(_Strict):
    prune: bool = True
    max_deletes: int = Field(5, ge=0)
    manage: list[str] = Field(
        [], description="Globs of the live keys this manifest manages (default: every key)."
    )
    ignore: list[str] = []
    protect: list[str] = []
    rotate_after: Duration | None = None
    rotation: Rotation = "replace"
    overlap_grace: Duration = "15m"
    on_missing_secret: OnMissingSecret = "replace"

    @field_validator("manage", "ignore", "protect")
    @classmethod
    def _few_globs(cls, patterns: list[str]) -> list[str]:
        count = glob_count(patterns)
        if count > MAX_GLOBS:
            raise ValueError(
                f"{count} glob patterns, at most {MAX_GLOBS} (plain names, without * ? or [, do not count)"
            )
        return patterns

    @cached_property
    def ignore_globs(self) -> Globs:
        return Globs(self.ignore)

    @cached_property
    def protect_globs(self) -> Globs:
        return Globs(self.protect)

    @cached_property
    def manage_globs(self) -> Globs:
        return Globs(self.manage)

    def ignores(self, name: str) -> bool:
        """Whether a key, or the logical key a generation `name-rK` belongs to, is ignored."""
        return self.ignore_globs.covers(name)

    def protects(self, name: str) -> bool:
        return self.protect_globs.covers(name)

    def outside_manage(self, name: str) -> bool:
        """Whether `manage` leaves the key to other manifests (an empty `manage` takes every key)."""
        return bool(self.manage) and not self.manage_globs.covers(name)

    def manages(self, name: str) -> bool:
        """Whether a live key is this manifest's to plan: within `manage` and not ignored."""
        return not self.outside_manage(name) and not self.ignores(name)


class KeySpec(_Strict):
    name: KeyName
    rotate_after: Duration | None = None
    rotation: Rotation | None = None
    overlap_grace: Duration | None = None


class Manifest(_Strict):
    version: Literal[1]
    coderd: CoderdSettings = CoderdSettings()
    sink: SinkSettings = SinkSettings()
    policy: Policy = Policy()
    keys: list[KeySpec] = []

    @model_validator(mode="before")
    @classmethod
    def _keys_from_plain_names(cls, data: Any) -> Any:
        """`- gw` is `- name: gw`: converted here in one pass rather than by a validator per key."""
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list):
            return data
        return {**data, "keys": [{"name": key} if isinstance(key, str) else key for key in keys]}

    def names(self) -> list[str]:
        return [spec.name for spec in self.keys]

    def overlap_grace(self, spec: KeySpec) -> timedelta:
        return parse_duration(spec.overlap_grace or self.policy.overlap_grace)

    def rotate_after(self, spec: KeySpec) -> timedelta | None:
        text = spec.rotate_after or self.policy.rotate_after
        return parse_duration(text) if text else None


def glob_count(patterns: list[str]) -> int:
    return sum(1 for pattern in patterns if _is_glob(pattern))


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


class Globs:
    """fnmatch patterns matched all at once: plain names in a set, the globs in one regex, so
    that matching many keys against many patterns does not cost keys times patterns."""

    def __init__(self, patterns: list[str]) -> None:
        self._any = bool(patterns)
        self._names = frozenset(pattern for pattern in patterns if not _is_glob(pattern))
        globs = [fnmatch.translate(pattern) for pattern in patterns if _is_glob(pattern)]
        self._regex = re.compile("|".join(globs)) if globs else None

    def covers(self, name: str) -> bool:
        """Whether a pattern matches the key or the logical key a generation `name-rK` belongs to."""
        return self._any and (self._matches(name) or self._matches(logical_name(name)))

    def _matches(self, name: str) -> bool:
        return name in self._names or (self._regex is not None and self._regex.match(name) is not None)
