"""The `vault` sink: one KV v2 entry per key, on HashiCorp Vault or OpenBao.

It speaks Vault's HTTP API through httpx rather than hvac, which drags in requests and reads
VAULT_* environment variables at import time, where keysync takes them from `SinkContext.env`.

An entry's data is the secret record; its non-secret fields are also the entry's
custom_metadata. Writes use check-and-set against the version this sink last saw, so a
concurrent writer is reported, never overwritten. Every failure is one `SinkError` line naming
the address and the path; the Vault token is a `Secret`, sent only in a header.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keysync.errors import SinkError, SinkRefusedError
from keysync.hosts import Endpoint, env_endpoint, pinned, require_allowed
from keysync.keys import SecretRecord, SinkView, StoredEntry
from keysync.loopback import is_loopback
from keysync.manifest.sinks import VaultAuthConfig, VaultSinkConfig
from keysync.names import name_problem
from keysync.secret import Secret, header_safe, mask, read_secret_file
from keysync.sinks.base import SinkContext
from keysync.sinks.durable import probe_record
from keysync.sinks.leasewatch import Keeper
from keysync.sinks.vault_leader import VaultLeaderLock
from keysync.sinks.vault_lock import LOCK_LEAF, VaultLock
from keysync.transport.answers import AnswerError, parse_json, read_body
from keysync.transport.deadline import bounded_client, deadline
from keysync.transport.tls import caused_by_tls

_READ_THREADS = 8
_MAX_ANSWER = 16 << 20  # decoded; Vault's biggest answer here, a LIST, is far smaller
_PROBE_NAME = "keysync-preflight"
_DATA_CAPABILITIES = ("create", "update", "read")
_METADATA_CAPABILITIES = ("update", "delete")


@dataclass(frozen=True)
class PathTemplate:
    """A path like `keysync/{name}`: a directory, then a last segment holding `{name}` once."""

    directory: str
    prefix: str
    suffix: str

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        segments = template.strip("/").split("/")
        *parents, last = segments
        head, found, tail = last.partition("{name}")
        fixed = [*parents, head, tail]
        if not found or not all(segments) or any("{" in part or "}" in part for part in fixed):
            raise SinkError(
                f"vault sink path {template!r}: {{name}} must appear once, in the last segment "
                "only (e.g. keysync/{name} or team/key-{name})"
            )
        return cls("/".join(parents), head, tail)

    def path(self, name: str) -> str:
        leaf = f"{self.prefix}{name}{self.suffix}"
        return f"{self.directory}/{leaf}" if self.directory else leaf

    def name_of(self, leaf: str) -> str | None:
        """The key name a listed entry stands for, or None when it is not one of ours."""
        if leaf.endswith("/") or not (leaf.startswith(self.prefix) and leaf.endswith(self.suffix)):
            return None
        name = leaf[len(self.prefix) : len(leaf) - len(self.suffix)]
        return name if name and name_problem(name) is None else None


@dataclass(frozen=True)
class Reply:
    """One answer from Vault: its status and the `data`, `errors` and `auth` of its body."""

    status: int
    data: dict[str, Any]
    errors: list[str]
    auth: dict[str, Any]


class VaultApi:
    """Vault's HTTP API: the token (static or from an AppRole login) and one error translation."""

    def __init__(self, config: VaultSinkConfig, context: SinkContext) -> None:
        env = context.env
        endpoint = _endpoint(config, env)
        if endpoint is None:
            raise SinkError("vault sink: no address: set sink.address or VAULT_ADDR")
        self.address = _address(endpoint.value)
        require_allowed(self.address, env, f"the vault sink's address, from {endpoint.source}")
        _require_pinned_for_files(config.auth, endpoint, env)
        ca_file, ca_warning = _ca_file(config, context)
        self.endpoint_warnings = [warning for warning in (endpoint.warning, ca_warning) if warning]
        namespace = config.namespace or env.get("VAULT_NAMESPACE")
        self.namespace = namespace.strip("/") if namespace else None
        self._timeout = context.timeout
        self._auth = config.auth
        self._token: Secret | None = _static_token(config.auth, context)
        self._secret_id_path = (
            context.resolve(config.auth.secret_id_file) if config.auth.secret_id_file else None
        )
        self._login_lock = threading.Lock()
        headers = {"X-Vault-Namespace": self.namespace} if self.namespace else {}
        self._client = bounded_client(  # every request held to the deadline, proxies included
            httpx.Client(
                base_url=f"{self.address}/v1/",
                headers=headers,
                timeout=context.timeout,
                verify=_tls_context(ca_file) if ca_file else True,
            )
        )

    def call(
        self,
        method: str,
        path: str,
        doing: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        allow: Sequence[int] = (),
        secrets: Sequence[Secret] = (),
    ) -> Reply:
        """Sends one request; raises SinkError unless it succeeds or answers a status in `allow`."""
        token = self._login() if path != self._login_path else None
        reply = self._send(method, path, doing, token, body, params, secrets)
        if reply.status >= 300 and reply.status not in allow:
            raise self.failure(doing, path, reply, secrets)
        return reply

    def failure(self, doing: str, path: str, reply: Reply, secrets: Sequence[Secret] = ()) -> SinkError:
        return self._error(doing, path, _reason(reply), secrets)

    def close(self) -> None:
        self._client.close()

    @property
    def _login_path(self) -> str:
        return f"auth/{self._auth.mount.strip('/')}/login"

    def _send(
        self,
        method: str,
        path: str,
        doing: str,
        token: Secret | None,
        body: dict[str, Any] | None,
        params: dict[str, str] | None,
        secrets: Sequence[Secret],
    ) -> Reply:
        headers = {"X-Vault-Token": token.reveal()} if token else {}
        try:
            with deadline(self._timeout):  # the whole request, however slowly its bytes arrive
                request = self._client.build_request(method, path, json=body, params=params, headers=headers)
                response = self._client.send(request, stream=True)
                try:
                    content = read_body(response, _MAX_ANSWER)
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            raise self._error(doing, path, self._transport_reason(exc), secrets) from None
        except AnswerError as exc:
            raise self._error(doing, path, f"Vault {exc}", secrets) from None
        return _reply(response.status_code, content)

    def _error(self, doing: str, path: str, reason: str, secrets: Sequence[Secret]) -> SinkError:
        where = f"vault {self.address}" + (f" (namespace {self.namespace})" if self.namespace else "")
        known = [s for s in (self._token, *secrets) if s is not None]
        return SinkError(mask(f"{where}: {doing} {path}: {reason}", known))

    def _transport_reason(self, exc: httpx.HTTPError) -> str:
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {self._timeout:g}s"
        if caused_by_tls(exc):
            return f"TLS failure ({exc}); set ca_cert (or VAULT_CACERT) to the CA that signed its certificate"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect ({exc}); is the address right and the server up?"
        return f"request failed ({exc})"

    def _login(self) -> Secret:
        with self._login_lock:
            if self._token is None:
                self._token = self._approle_login()
            return self._token

    def _approle_login(self) -> Secret:
        body: dict[str, Any] = {"role_id": self._auth.role_id}
        secret_id = self._read_secret_id()
        if secret_id is not None:
            body["secret_id"] = secret_id.reveal()
        known = [secret_id] if secret_id else []
        path = self._login_path
        reply = self.call("POST", path, "logging in with AppRole at", body=body, secrets=known)
        token = reply.auth.get("client_token")
        if not isinstance(token, str) or not token:
            raise self._error("logging in with AppRole at", path, "the answer holds no token", known)
        return Secret(token)

    def _read_secret_id(self) -> Secret | None:
        if self._secret_id_path is None:
            return None
        return _read_secret_file(self._secret_id_path, "auth.secret_id_file")


class VaultSink:
    concurrent_writes = True
    config_model = VaultSinkConfig

    def __init__(self, config: VaultSinkConfig, context: SinkContext) -> None:
        self._url = context.coderd_url
        self._template = PathTemplate.parse(config.path)
        self._mount = config.mount.strip("/")
        if not self._mount:
            raise SinkError("vault sink: mount must not be empty")
        self._api = VaultApi(config, context)
        self.endpoint_warnings = self._api.endpoint_warnings  # plan shows them
        self._path_text = config.path.strip("/")
        self._seen: dict[str, _Seen] = {}
        self._listed = False  # after read(), a name it did not see is known to be absent
        self._guard = threading.Lock()
        self._keeper: Keeper | None = None  # while apply holds the sink's lock

    def describe(self) -> str:
        where = f" namespace {self._api.namespace}" if self._api.namespace else ""
        return f"vault {self._api.address}{where} {self._mount}/{self._path_text}"

    def local_paths(self) -> list[Path]:
        return []

    def lock(self, timeout: float | None) -> AbstractContextManager[object]:
        """Check-and-set keeps each write safe; the lock keeps two applies from interleaving."""
        self.check_ready()  # a token that may not write says so, rather than failing on the lock
        return self._locked(timeout)

    @contextmanager
    def _locked(self, timeout: float | None) -> Iterator[Keeper]:
        with VaultLock(self._api, self._lock_path).held(timeout) as keeper:
            self._keeper = keeper
            try:
                yield keeper
            finally:
                self._keeper = None

    def _still_locked(self) -> None:
        """A lock lost mid-apply (not renewed in time, or taken over) stops the writes: another
        apply may hold it by now. The failed write stops the apply from starting more."""
        if self._keeper is not None:
            self._keeper.raise_if_lost(f"vault {self._api.address}: the sink's lock {self._lock_path}")

    def leader_lock(self, duration: float, on_lost: Callable[[], None]) -> VaultLeaderLock:
        """The same KV entry, held across the rounds of `watch --leader-elect` by the leader."""
        return VaultLeaderLock(VaultLock(self._api, self._lock_path, duration), duration, on_lost)

    @property
    def _lock_path(self) -> str:
        directory = self._template.directory
        return self._data(f"{directory}/{LOCK_LEAF}" if directory else LOCK_LEAF)

    def read(self) -> SinkView:
        names = [name for leaf in self._list() if (name := self._template.name_of(leaf))]
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="keysync-vault") as pool:
            found = list(pool.map(self._read_entry, names))
        with self._guard:
            self._seen = {name: seen for name, (seen, _) in zip(names, found, strict=True)}
            self._listed = True
        return SinkView({entry.name: entry for _, entry in found if entry is not None})

    def check_writable(self) -> None:
        self.check_ready()
        # Capabilities do not prove Vault takes a write (sealed, full storage, a quota): a record
        # of real size is written at the probe path and removed, before anything is destroyed.
        path = self._template.path(_PROBE_NAME)
        body = {"data": probe_record(self._url).document()}
        self._api.call("POST", self._data(path), "writing the preflight probe at", body=body)
        self._api.call("DELETE", self._metadata(path), "deleting the preflight probe at", allow=(404,))

    def check_ready(self) -> None:
        self._check_token()
        self._check_mount()
        path = self._template.path(_PROBE_NAME)
        data_path, metadata_path = self._data(path), self._metadata(path)
        reply = self._api.call(
            "POST",
            "sys/capabilities-self",
            "checking capabilities at",
            body={"paths": [data_path, metadata_path]},
        )
        missing = [
            f"{', '.join(lacking)} on {target}"
            for target, needed in ((data_path, _DATA_CAPABILITIES), (metadata_path, _METADATA_CAPABILITIES))
            if (lacking := _lacking(reply.data.get(target), needed))
        ]
        if missing:
            raise SinkError(
                f"vault {self._api.address}: the token may not store keysync's secrets: it lacks "
                f"{'; '.join(missing)}; grant these capabilities in its policy"
            )

    def store(self, record: SecretRecord) -> None:
        self._still_locked()
        path = self._template.path(record.name)
        seen = self._seen_or_fetch(record.name, path)
        if self._foreign(seen):  # this key only: the other keys' paths may well be fine
            raise SinkRefusedError(
                f"vault {self._api.address}: {self._data(path)} holds the key {record.name!r} of "
                f"coderd {seen.coderd_url!r}, not {self._url!r}; refusing to overwrite another "
                "deployment's secret: give this one its own path"
            )
        version = self._write(path, record, seen.version)
        self._remember(record.name, _Seen(version, self._url))
        self._api.call(
            "POST",
            self._metadata(path),
            "writing custom_metadata of",
            body={"custom_metadata": record.public()},
            secrets=[record.key],
        )

    def remove(self, name: str, key_id: str = "") -> None:
        self._still_locked()
        path = self._template.path(name)
        if self._foreign(self._seen_or_fetch(name, path)):
            return  # another deployment's record: not ours to delete
        self._api.call("DELETE", self._metadata(path), "deleting", allow=(404,))
        self._remember(name, _Seen(0, None))

    def close(self) -> None:
        self._api.close()

    def _data(self, path: str) -> str:
        return f"{self._mount}/data/{path}"

    def _metadata(self, path: str) -> str:
        return f"{self._mount}/metadata/{path}"

    def _list(self) -> list[str]:
        directory = self._template.directory
        target = self._metadata(directory) if directory else f"{self._mount}/metadata/"
        reply = self._api.call("GET", target, "listing", params={"list": "true"}, allow=(404,))
        keys = reply.data.get("keys") if reply.status == 200 else None
        return [key for key in keys if isinstance(key, str)] if isinstance(keys, list) else []

    def _read_entry(self, name: str) -> tuple[_Seen, StoredEntry | None]:
        path = self._data(self._template.path(name))
        reply = self._api.call("GET", path, "reading", allow=(404,))
        metadata = reply.data.get("metadata")
        version = metadata.get("version") if isinstance(metadata, dict) else None
        seen_version = version if isinstance(version, int) else 0
        fields = reply.data.get("data") if reply.status == 200 else None
        if not isinstance(fields, dict):
            return _Seen(seen_version, None), None
        url = fields.get("coderd_url")
        seen = _Seen(seen_version, url if isinstance(url, str) else None)
        secret = fields.get("key")
        if url != self._url or not isinstance(secret, str) or not secret:
            return seen, None
        entry = StoredEntry(
            name, str(fields.get("id", "")), str(fields.get("key_prefix", "")), secret[:11], url
        )
        return seen, entry

    def _seen_or_fetch(self, name: str, path: str) -> _Seen:
        with self._guard:
            seen = self._seen.get(name)
            if seen is not None:
                return seen
            if self._listed:
                return _Seen(0, None)
        return self._read_entry(name)[0]

    def _remember(self, name: str, seen: _Seen) -> None:
        with self._guard:
            self._seen[name] = seen

    def _foreign(self, seen: _Seen) -> bool:
        return seen.coderd_url is not None and seen.coderd_url != self._url

    def _write(self, path: str, record: SecretRecord, version: int) -> int:
        target = self._data(path)
        body = {"options": {"cas": version}, "data": record.document()}
        reply = self._api.call("POST", target, "writing", body=body, allow=(400,), secrets=[record.key])
        if reply.status == 400:
            if not any("check-and-set" in error for error in reply.errors):
                raise self._api.failure("writing", target, reply, [record.key])
            raise SinkError(
                f"vault {self._api.address}: {target} changed since keysync read it (check-and-set "
                f"expected version {version}): another writer stored {record.name!r} meanwhile; "
                "run keysync plan again"
            )
        new_version = reply.data.get("version")
        return new_version if isinstance(new_version, int) else version + 1

    def _check_mount(self) -> None:
        """The mount must exist and be KV version 2: check-and-set and metadata deletes need it."""
        reply = self._api.call(
            "GET", f"sys/internal/ui/mounts/{self._mount}", "looking up the mount at", allow=(400, 403, 404)
        )
        options = reply.data.get("options") if reply.status == 200 else None
        version = options.get("version") if isinstance(options, dict) else None
        if reply.status != 200 or reply.data.get("type") not in ("kv", "generic") or version != "2":
            found = (
                "no such mount"
                if reply.status != 200
                else f"type {reply.data.get('type')!r}, version {version!r}"
            )
            raise SinkError(
                f"vault {self._api.address}: mount {self._mount!r} is not a KV version 2 secrets engine "
                f"({found}); enable one with `vault secrets enable -path={self._mount} kv-v2`"
            )

    def _check_token(self) -> None:
        reply = self._api.call("GET", "auth/token/lookup-self", "looking up the token at", allow=(403,))
        if reply.status == 403:
            raise SinkError(
                f"vault {self._api.address}: the Vault token was refused (403 on "
                "auth/token/lookup-self): it is invalid or has expired"
            )


@dataclass(frozen=True)
class _Seen:
    """What the sink knows of one path: its current version (0: none) and whose record it holds."""

    version: int
    coderd_url: str | None


def _endpoint(config: VaultSinkConfig, env: Mapping[str, str]) -> Endpoint | None:
    """VAULT_ADDR, when set, beats sink.address: a pull request must not pick where the token goes."""
    named = (env.get("VAULT_ADDR") or config.address or "").strip()
    purpose = f"the Vault token and the secrets go to {named}"
    return env_endpoint(env, "VAULT_ADDR", "sink.address", config.address, purpose)


def _ca_file(config: VaultSinkConfig, context: SinkContext) -> tuple[Path | None, str | None]:
    """VAULT_CACERT, when set, beats sink.ca_cert: the CA decides which server is trusted with the
    token, so a pull request must not choose it where the environment has. A relative
    VAULT_CACERT is the working directory's, as Vault's own CLI reads it."""
    purpose = "the Vault server's certificate is checked against the CA VAULT_CACERT names"
    found = env_endpoint(context.env, "VAULT_CACERT", "sink.ca_cert", config.ca_cert, purpose)
    if found is None:
        return None, None
    if not found.from_environment:
        return context.resolve(found.value), None
    chosen = Path(found.value).expanduser().absolute()
    same = config.ca_cert is not None and context.resolve(config.ca_cert).resolve() == chosen.resolve()
    return chosen, None if same else found.warning


def _require_pinned_for_files(auth: VaultAuthConfig, endpoint: Endpoint, env: Mapping[str, str]) -> None:
    """A credential file named by the manifest is read only when the environment chose where it
    goes: else a pull request could name any file on the machine and a server of its own."""
    setting = "auth.token_file" if auth.token_file else "auth.secret_id_file" if auth.secret_id_file else None
    if setting is None or endpoint.from_environment or pinned(env):
        return
    raise SinkError(
        f"vault sink: {setting} is read only when the environment names the Vault server: set "
        "VAULT_ADDR (or KEYSYNC_ALLOWED_HOSTS), so that the manifest alone cannot choose both a "
        "file to read and where to send it"
    )


def _address(text: str) -> str:
    address = text.strip().rstrip("/")
    if not address:
        raise SinkError("vault sink: no address: set sink.address or VAULT_ADDR")
    if not address.startswith(("https://", "http://")):
        raise SinkError(f"vault sink: address {address!r} must start with https:// or http://")
    try:
        host = httpx.URL(address).host
    except httpx.InvalidURL:
        raise SinkError(f"vault sink: address {address!r} is not a valid URL") from None
    if address.startswith("http://") and not is_loopback(host):
        raise SinkError(
            f"vault sink: address {address!r}: plain http:// would send the Vault token in clear "
            "text; use https:// (plain http is allowed only for loopback)"
        )
    return address


def _static_token(auth: VaultAuthConfig, context: SinkContext) -> Secret | None:
    if auth.method == "approle":
        if not auth.role_id:
            raise SinkError("vault sink: auth.method approle needs auth.role_id")
        return None
    if auth.token_file:
        return _read_secret_file(context.resolve(auth.token_file), "auth.token_file")
    token = context.env.get("VAULT_TOKEN", "").strip()
    if not token:
        raise SinkError("vault sink: no Vault token: set VAULT_TOKEN, or auth.token_file, or use approle")
    return _header_safe(token, "VAULT_TOKEN")


def _read_secret_file(path: Path, setting: str) -> Secret:
    try:
        value = read_secret_file(path)
    except (OSError, ValueError) as exc:
        raise SinkError(f"vault sink: {setting} {path}: cannot read: {exc}") from None
    if not value:
        raise SinkError(f"vault sink: {setting} {path} is empty")
    return _header_safe(value, f"{setting} {path}")


def _header_safe(value: str, where: str) -> Secret:
    if not header_safe(value):
        raise SinkError(f"vault sink: {where}: holds spaces, line breaks or non-ASCII characters")
    return Secret(value)


def _tls_context(ca_cert: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise SinkError(f"vault sink: ca_cert {ca_cert}: cannot load: {exc}") from None


def _reply(status: int, content: bytes) -> Reply:
    try:
        document = parse_json(content)  # bounded in nesting: never a RecursionError
    except AnswerError:
        document = None
    if not isinstance(document, dict):
        document = {}
    data, errors, auth = document.get("data"), document.get("errors"), document.get("auth")
    return Reply(
        status,
        data if isinstance(data, dict) else {},
        [" ".join(str(error).split()) for error in errors] if isinstance(errors, list) else [],
        auth if isinstance(auth, dict) else {},
    )


def _reason(reply: Reply) -> str:
    said = "; ".join(error for error in reply.errors if error) or "no details"
    if reply.status == 403:
        return f"permission denied (403): the token's policies do not allow this ({said})"
    if reply.status == 404:
        return f"not found (404): is the mount right and a KV v2 engine? ({said})"
    if reply.status == 503:
        return f"Vault is sealed or unavailable (503: {said})"
    return f"answered {reply.status}: {said}"


def _lacking(granted: Any, needed: Sequence[str]) -> list[str]:
    capabilities = set(granted) if isinstance(granted, list) else set()
    if "root" in capabilities:
        return []
    return [capability for capability in needed if capability not in capabilities]
