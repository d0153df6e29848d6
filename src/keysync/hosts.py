"""Where credentials may go: the environment's endpoints win over the manifest's, and
`KEYSYNC_ALLOWED_HOSTS` pins the hosts any credential may reach.

A pull request can change the manifest, and CI plans it with the pipeline's credentials, so a
manifest must never choose where those credentials are sent when the environment has said it.
Every adapter that sends a credential (Coder, Vault, Kubernetes) calls `require_allowed` with
the URL before it connects, and resolves an endpoint the environment may name with
`env_endpoint`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from keysync.errors import HostNotAllowedError, UsageError

ALLOWED_HOSTS = "KEYSYNC_ALLOWED_HOSTS"
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Endpoint:
    """An endpoint and where it came from; `warning` says when the manifest named another."""

    value: str
    source: str
    warning: str | None = None

    @property
    def from_environment(self) -> bool:
        return not self.source.startswith("the manifest")


def env_endpoint(
    env: Mapping[str, str], variable: str, setting: str, manifest_value: str | None, purpose: str
) -> Endpoint | None:
    """The endpoint the environment names in `variable`, else the manifest's `setting`.

    `purpose` ends the warning, e.g. "secrets and the Vault token go to https://vault:8200".
    None when neither names one.
    """
    named = (env.get(variable) or "").strip()
    written = (manifest_value or "").strip()
    if not named:
        return Endpoint(written, f"the manifest's {setting}") if written else None
    warning = None
    if written and _normal(written) != _normal(named):
        warning = f"{variable} ({named}) overrides the manifest's {setting} ({written}): {purpose}"
    return Endpoint(named, variable, warning)


def _normal(value: str) -> str:
    return value.rstrip("/")


@dataclass(frozen=True)
class _Entry:
    host: str
    port: int | None  # None: any port
    wildcard: bool  # `*.example.com`: any name under example.com, not example.com itself

    def allows(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return host.endswith("." + self.host) if self.wildcard else host == self.host


def allowed_hosts(env: Mapping[str, str]) -> list[_Entry] | None:
    """The parsed `KEYSYNC_ALLOWED_HOSTS`, or None when it is unset or blank (no pinning)."""
    text = env.get(ALLOWED_HOSTS, "")
    if not text.strip():
        return None
    return [_parse_entry(item.strip()) for item in text.split(",") if item.strip()]


def pinned(env: Mapping[str, str]) -> bool:
    """Whether `KEYSYNC_ALLOWED_HOSTS` restricts where credentials go."""
    return allowed_hosts(env) is not None


def require_allowed(url: str, env: Mapping[str, str], what: str) -> None:
    """Raises HostNotAllowedError, before any connection, when `url`'s host is not allowed."""
    host, port = host_and_port(url)
    entries = allowed_hosts(env)
    if entries is not None and not any(entry.allows(host, port) for entry in entries):
        shown = f"[{host}]" if ":" in host else host
        raise HostNotAllowedError(
            f"{ALLOWED_HOSTS} does not allow {shown}:{port} ({what}): refusing to send "
            "credentials there; add the host to it if it is yours"
        )


def host_and_port(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UsageError(f"{url!r} is not a valid URL") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UsageError(f"{url!r} names no host")
    if not _resolvable_name(host):
        raise UsageError(f"{url[:80]!r}: {host[:80]!r} is not a valid host name")
    return host, port if port is not None else _DEFAULT_PORTS.get(parts.scheme.lower(), 443)


def _resolvable_name(host: str) -> bool:
    """Whether the resolver, and httpx before it, can encode the name (no empty label, none
    over 63 characters, valid punycode): else the request fails deep inside a connection."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        host.encode("idna")
        if not host.isascii() or "xn--" in host:
            import idna  # httpx's own encoder, stricter than the codec; only for such names

            idna.encode(host)
    except UnicodeError:  # idna.IDNAError is one
        return False
    return True


def _parse_entry(item: str) -> _Entry:
    host, port_text = _split_port(item)
    wildcard = host.startswith("*.")
    name = (host[2:] if wildcard else host).strip("[]").rstrip(".").lower()
    if not name or "*" in name or "/" in name or (port_text is not None and not _is_port(port_text)):
        raise UsageError(
            f"{ALLOWED_HOSTS}: {item!r} is not host or host:port (e.g. coder.example.com, "
            "vault.example.com:8200, *.example.com)"
        )
    return _Entry(name, int(port_text) if port_text is not None else None, wildcard)


def _split_port(item: str) -> tuple[str, str | None]:
    if item.startswith("["):  # [::1] or [::1]:8200
        host, _, rest = item.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else (rest or None)
    if item.count(":") == 1:
        host, _, port = item.partition(":")
        return host, port
    return item, None  # a name, or a bare IPv6 address


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) <= 65535
