"""Builds what a command needs from its options: the manifest, the Coder client, the sink."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from keysync.errors import UsageError
from keysync.hosts import require_allowed
from keysync.secret import Secret, header_safe, read_secret_file

DEFAULT_TOKEN_ENV = "CODER_SESSION_TOKEN"

if TYPE_CHECKING:
    from keysync.coder.client import CoderClient
    from keysync.manifest.load import LoadedManifest
    from keysync.manifest.model import Manifest
    from keysync.plan import Plan, PlanRequest
    from keysync.plandoc import World
    from keysync.sinks.base import Sink


@dataclass(frozen=True)
class Options:
    manifest: Path = Path("keysync.yaml")
    url: str | None = None
    token_file: Path | None = None
    api: str | None = None
    ca_cert: Path | None = None
    timeout: float = 30.0
    format: str = "text"
    no_color: bool = False
    verbose: bool = False
    bypass_rate_limit: bool = False
    parallelism: int = 10
    url_source: str = "--url"  # or "CODER_URL": which one gave `url`
    force: bool = False  # apply --force, which sinks see in their context


@dataclass(frozen=True)
class Snapshot:
    """One reading of the world and the plan made from it."""

    plan: Plan
    world: World
    now: datetime


class Session:
    def __init__(self, options: Options) -> None:
        self.options = options
        self._client: CoderClient | None = None
        self._sink: Sink | None = None

    @cached_property
    def loaded(self) -> LoadedManifest:
        from keysync.manifest.load import load_manifest

        return load_manifest(self.options.manifest)

    @cached_property
    def coderd_url(self) -> str:
        from keysync.coder.client import check_url

        manifest = self.manifest_if_present()
        url = self.options.url or (manifest.coderd.url if manifest else None)
        if not url:
            raise UsageError("no coderd URL: pass --url, set CODER_URL, or set coderd.url in the manifest")
        checked = check_url(url)
        require_allowed(checked, os.environ, f"the Coder URL, from {self.url_source}")
        return checked

    @property
    def url_source(self) -> str:
        """Where `coderd_url` came from, for the plan's first line."""
        return self.options.url_source if self.options.url else "the manifest's coderd.url"

    def url_warnings(self) -> list[str]:
        """When --url or CODER_URL sends the plan somewhere other than the manifest's coderd.url."""
        manifest = self.manifest_if_present()
        named = manifest.coderd.url if manifest else None
        if not self.options.url or not named or named.rstrip("/") == self.coderd_url:
            return []
        return [
            f"{self.options.url_source} ({self.coderd_url}) overrides the manifest's coderd.url "
            f"({named}): this plan is for {self.coderd_url}"
        ]

    def endpoint_warnings(self) -> list[str]:
        """Every endpoint the environment chose over the manifest's: Coder's, then the sink's."""
        return [*self.url_warnings(), *getattr(self.sink, "endpoint_warnings", [])]

    def manifest_if_present(self) -> Manifest | None:
        """The manifest, or None when its file does not exist or is empty (export works without
        one, and `keysync export > keysync.yaml` has emptied it before export starts)."""
        path = self.options.manifest
        return self.loaded.manifest if path.exists() and path.stat().st_size > 0 else None

    def _manifest_api(self) -> str:
        manifest = self.manifest_if_present()
        return manifest.coderd.api if manifest else "auto"

    def _token_env(self) -> str:
        manifest = self.manifest_if_present()
        return manifest.coderd.token_env if manifest else DEFAULT_TOKEN_ENV

    @property
    def client(self) -> CoderClient:
        if self._client is None:
            from keysync.coder.client import ClientSettings, CoderClient

            settings = ClientSettings(
                url=self.coderd_url,
                token=read_token(self.options.token_file, self._token_env()),
                api=self.options.api or self._manifest_api(),
                ca_cert=self.options.ca_cert,
                timeout=self.options.timeout,
                bypass_rate_limit=self.options.bypass_rate_limit,
            )
            self._client = CoderClient(settings)
        return self._client

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            from keysync.sinks.base import SinkContext
            from keysync.sinks.registry import open_sink

            context = SinkContext(
                self.loaded.directory,
                self.coderd_url,
                dict(os.environ),
                self.options.timeout,
                force=self.options.force,
            )
            self._sink = open_sink(self.loaded.manifest.sink.options(), context)
        return self._sink

    def snapshot(self, request: PlanRequest) -> Snapshot:
        from keysync.plan import build_plan
        from keysync.plandoc import World

        manifest = self.loaded.manifest
        sink = self.sink  # opened first: it refuses an endpoint before anything connects
        live = self.client.list_keys()
        view = sink.read()
        now = datetime.now(UTC)
        plan = build_plan(manifest, live, view, now, self.coderd_url, request)
        review = getattr(self.sink, "review_plan", None)  # what only the sink knows (optional)
        if review is not None:
            plan = review(plan, live)
        managed = [key for key in live if manifest.policy.manages(key.name)]
        world = World.of(self.coderd_url, self.client.api, self.loaded.sha256, managed, view)
        return Snapshot(plan, world, now)

    def close(self) -> None:
        """Closes the sink even when closing the client fails: a sink left open keeps its flusher
        thread, and with it the round's secrets (watch opens a session every round)."""
        try:
            if self._client is not None:
                self._client.close()
        finally:
            if self._sink is not None:
                self._sink.close()


def read_token(token_file: Path | None, token_env: str = DEFAULT_TOKEN_ENV) -> Secret:
    if token_file is not None:
        try:
            token = read_secret_file(token_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--token-file {token_file}: cannot read: {exc}") from None
        if not token:
            raise UsageError(f"--token-file {token_file} is empty")
        return _checked_token(token, f"--token-file {token_file}")
    token = os.environ.get(token_env, "").strip()
    if not token:
        named = "" if token_env == DEFAULT_TOKEN_ENV else " (the manifest's coderd.token_env)"
        raise UsageError(f"no session token: set {token_env}{named} or pass --token-file PATH")
    return _checked_token(token, token_env)


def _checked_token(token: str, where: str) -> Secret:
    if not header_safe(token):
        raise UsageError(f"{where}: the token holds spaces, line breaks or non-ASCII characters")
    return Secret(token)
