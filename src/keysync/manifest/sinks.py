"""Settings of the built-in sinks, as written under `sink:` in the manifest."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keysync.manifest.model import Duration
from keysync.names import kubernetes_name


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FileSinkConfig(_Settings):
    type: Literal["file"] = "file"
    path: str = "secrets/ai-gateway-keys.json"
    format: Literal["json", "env"] = "json"
    prefix: str = Field("", pattern=r"^[A-Z_][A-Z0-9_]*$|^$")


class DirectorySinkConfig(_Settings):
    type: Literal["directory"] = "directory"
    path: str = "secrets/ai-gateway-keys"


class VaultAuthConfig(_Settings):
    method: Literal["token", "approle"] = "token"
    token_file: str | None = None
    role_id: str | None = None
    secret_id_file: str | None = None
    mount: str = "approle"

    @model_validator(mode="after")
    def _approle_needs_role_id(self) -> VaultAuthConfig:
        if self.method == "approle" and not self.role_id:
            raise ValueError("method approle needs role_id")
        return self


class VaultSinkConfig(_Settings):
    type: Literal["vault"] = "vault"
    address: str | None = None
    mount: str = "secret"
    path: str = Field("keysync/{name}", pattern=r"\{name\}")
    namespace: str | None = None
    ca_cert: str | None = None
    auth: VaultAuthConfig = VaultAuthConfig()


class ExecSinkConfig(_Settings):
    type: Literal["exec"] = "exec"
    command: list[str] = Field(min_length=1)
    remove_command: list[str] | None = Field(None, min_length=1)


class KubernetesSinkConfig(_Settings):
    """One Secret per key, in the shape the ai-gateway Helm chart mounts."""

    type: Literal["kubernetes"] = "kubernetes"
    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    secret_name: str = Field("{name}", pattern=r"\{name\}", max_length=253)
    data_key: str = Field("key", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)
    context: str | None = None
    kubeconfig: str | None = None
    labels: dict[str, str] = {}
    restart: list[Annotated[str, Field(pattern=r"^(deployment|statefulset|daemonset)/[-a-z0-9.{}]+$")]] = []
    # Checked at load like every duration (one line, file:line), not when the sink opens.
    rollout_timeout: Annotated[Duration, Field(json_schema_extra={"examples": ["5m", "90s"]})] = "5m"

    @field_validator("secret_name")
    @classmethod
    def _a_secret_name_kubernetes_accepts(cls, value: str) -> str:
        """A DNS-1123 subdomain once a key name (itself one) takes the place of {name}."""
        if not kubernetes_name(value.replace("{name}", "a-1")):
            raise ValueError(
                "with {name} filled in, it must be a Kubernetes name: lower-case letters, digits, "
                "'-' and '.', starting and ending with a letter or digit"
            )
        return value


def env_name(name: str, prefix: str) -> str:
    """The variable an env-format file sink uses for a key: upper case, `-` as `_`."""
    variable = prefix + name.upper().replace("-", "_")
    return "KEY_" + variable if variable[0].isdigit() else variable


class PluginSinkConfig(BaseModel):
    """A third-party sink: its own package validates the rest."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


BUILTIN_SINK_CONFIGS: dict[str, type[BaseModel]] = {
    "file": FileSinkConfig,
    "directory": DirectorySinkConfig,
    "vault": VaultSinkConfig,
    "exec": ExecSinkConfig,
    "kubernetes": KubernetesSinkConfig,
}
