"""keysync's Secrets in one namespace: listed by label, read back, written with resourceVersion
preconditions, and never a Secret keysync did not write unless --force adopts it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from keysync.errors import SinkRefusedError
from keysync.guards import Guard
from keysync.keys import SecretRecord, SinkView, StoredEntry
from keysync.sinks.kubernetes.api import KubeApi
from keysync.sinks.kubernetes.shape import ABSENT, MANAGED_BY, MANAGER, SELECTOR, Observed, SecretShape

_READ_THREADS = 8


@dataclass
class Review:
    """What the Secrets of a plan's keys mean for it."""

    guards: list[Guard] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Secrets:
    def __init__(
        self, api: KubeApi, namespace: str, shape: SecretShape, coderd_url: str, force: bool
    ) -> None:
        self._api = api
        self.namespace = namespace
        self._shape = shape
        self._url = coderd_url
        self._force = force
        self._seen: dict[str, Observed] = {}
        self._listed = False  # after read(), a Secret of keysync's it did not list is a newcomer
        self.entries: dict[str, StoredEntry] = {}
        self._guard = threading.Lock()

    def read(self) -> SinkView:
        reply = self._api.call(
            "GET",
            self._collection(),
            f"listing Secrets in namespace {self.namespace!r}",
            params={"labelSelector": SELECTOR},
        )
        entries: dict[str, StoredEntry] = {}
        seen: dict[str, Observed] = {}
        for obj in reply.body.get("items") or []:
            found = self._shape.entry(obj) if isinstance(obj, dict) else None
            if found is None:
                continue
            name, entry = found
            observed = Observed.of(obj)
            seen[name] = observed
            if entry is not None and observed.coderd_url == self._url:
                entries[name] = entry
        with self._guard:
            self._seen = seen
            self._listed = True
        self.entries = entries
        return SinkView(entries)

    def store(self, record: SecretRecord) -> None:
        seen = self.observe(record.name)
        problem = self.problem(record.name, seen)
        if problem and (seen.managed or not self._force):
            raise SinkRefusedError(str(self._api.error(problem)))
        body = self._shape.body(record, self.namespace, seen)
        doing = f"writing Secret {self._where(record.name)}"
        if seen.exists:
            reply = self._api.call(
                "PUT", self._item(record.name), doing, body=body, allow=(404, 409), secrets=[record.key]
            )
            if reply.status == 404:  # deleted since keysync read it: nothing to overwrite
                seen, body = ABSENT, self._shape.body(record, self.namespace, ABSENT)
        if not seen.exists:
            reply = self._api.call(
                "POST", self._collection(), doing, body=body, allow=(409,), secrets=[record.key]
            )
        if reply.status == 409:
            raise self._api.error(
                f"{doing}: {reply.message} ({reply.reason}): another writer changed it since keysync "
                "read it; nothing was overwritten: run keysync plan again"
            )
        self._remember(record.name, Observed.of(reply.body))

    def remove(self, name: str) -> None:
        seen = self.observe(name)
        if not seen.exists or not seen.managed or seen.coderd_url != self._url:
            return  # not keysync's, or another deployment's: left alone
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": seen.resource_version},
        }
        doing = f"deleting Secret {self._where(name)}"
        reply = self._api.call("DELETE", self._item(name), doing, body=options, allow=(404, 409))
        if reply.status == 409:
            raise self._api.error(
                f"{doing}: {reply.message} ({reply.reason}): it changed since keysync read it"
            )
        self._remember(name, ABSENT)

    def refusals(self, names: list[str]) -> dict[str, str]:
        """The keys whose Secret keysync may not write, and why (--force adopts foreign ones)."""
        refused = {}
        for name, seen in zip(names, self.observe_all(names), strict=True):
            problem = self.problem(name, seen)
            if problem and (seen.managed or not self._force):
                refused[name] = str(self._api.error(problem))
        return refused

    def review(self, names: list[str]) -> Review:
        """What plan says of the Secrets these keys would be written to: a Secret keysync did
        not write holds its key back until --force adopts it; another deployment's Secret is a
        failure, which nothing lifts."""
        review = Review()
        for name, seen in zip(names, self.observe_all(names), strict=True):
            problem = self.problem(name, seen)
            if problem is None:
                continue
            if seen.managed:
                review.failures.append(problem)
            elif self._force:
                review.notes.append(f"{problem} (adopted: --force)")
            else:
                review.guards.append(Guard("foreign-secret", problem, (name,)))
        return review

    def problem(self, name: str, seen: Observed) -> str | None:
        """Why the Secret of `name` is not keysync's to write, or None."""
        if not seen.exists:
            return None
        if not seen.managed:
            return (
                f"Secret {self._where(name)} exists and keysync did not write it (no {MANAGED_BY}="
                f"{MANAGER} label): apply leaves it alone unless --force adopts it for {name!r}"
            )
        if seen.coderd_url != self._url:
            return (
                f"Secret {self._where(name)} holds the key {name!r} of coderd {seen.coderd_url!r}, not "
                f"{self._url!r}: refusing to overwrite another deployment's secret; give this one its "
                "own secret_name"
            )
        return None

    def observe(self, name: str) -> Observed:
        """What the Secret of `name` is; the listing only shows keysync's, so others are fetched."""
        with self._guard:
            known = self._seen.get(name)
        if known is not None:
            return known
        reply = self._api.call("GET", self._item(name), f"reading Secret {self._where(name)}", allow=(404,))
        seen = ABSENT if reply.status == 404 else Observed.of(reply.body)
        if seen.managed and self._listed:
            # keysync's, yet not in the listing: another writer made it since. Writing as if it
            # were absent makes the create fail with AlreadyExists rather than overwrite it.
            seen = ABSENT
        self._remember(name, seen)
        return seen

    def observe_all(self, names: list[str]) -> list[Observed]:
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="keysync-kube-read") as pool:
            return list(pool.map(self.observe, names))

    def _remember(self, name: str, seen: Observed) -> None:
        with self._guard:
            self._seen[name] = seen

    def _collection(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets"

    def _item(self, name: str) -> str:
        return f"{self._collection()}/{self._shape.secret_name(name)}"

    def _where(self, name: str) -> str:
        return f"{self.namespace}/{self._shape.secret_name(name)}"
