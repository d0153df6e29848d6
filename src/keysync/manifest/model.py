"""The manifest: which keys should exist, where their secrets go, and the rules for changes."""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from keysync.duration import parse_duration
from keysync.generations import logical_name
from keysync.names import MAX_NAME_LENGTH, NAME_PATTERN

ApiGeneration = Literal["coderd-keys", "aibridge-keys", "ai-gateway-keys"]
Rotation = Literal["replace", "overlap"]
OnMissingSecret = Literal["replace", "keep", "fail"]
DURATION_PATTERN = r"^(\d+[smhdw])+$"


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

    def ignores(self, name: str) -> bool:
        """Whether a key, or the logical key a generation `name-rK` belongs to, is ignored."""
        return _covers(name, self.ignore)

    def protects(self, name: str) -> bool:
        return _covers(name, self.protect)

    def outside_manage(self, name: str) -> bool:
        """Whether `manage` leaves the key to other manifests (an empty `manage` takes every key)."""
        return bool(self.manage) and not _covers(name, self.manage)

    def manages(self, name: str) -> bool:
        """Whether a live key is this manifest's to plan: within `manage` and not ignored."""
        return not self.outside_manage(name) and not self.ignores(name)


class KeySpec(_Strict):
    name: KeyName
    rotate_after: Duration | None = None
    rotation: Rotation | None = None
    overlap_grace: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_plain_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class Manifest(_Strict):
    version: Literal[1]
    coderd: CoderdSettings = CoderdSettings()
    sink: SinkSettings = SinkSettings()
    policy: Policy = Policy()
    keys: list[KeySpec] = []

    def names(self) -> list[str]:
        return [spec.name for spec in self.keys]

    def overlap_grace(self, spec: KeySpec) -> timedelta:
        return parse_duration(spec.overlap_grace or self.policy.overlap_grace)

    def rotate_after(self, spec: KeySpec) -> timedelta | None:
        text = spec.rotate_after or self.policy.rotate_after
        return parse_duration(text) if text else None


def _covers(name: str, patterns: list[str]) -> bool:
    """Whether a pattern matches the key or the logical key a generation `name-rK` belongs to."""
    return bool(patterns) and (_matches(name, patterns) or _matches(logical_name(name), patterns))


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
