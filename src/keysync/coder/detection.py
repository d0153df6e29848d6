"""`api: auto`: which generation of the keys API a server serves, found in one round trip.

The three collections are asked at once. Only a 200 with a JSON array is a generation's list;
a 404, or any answer that is not JSON (another generation's path falls into a catch-all route
on real servers and gets `400 text/plain`), means "not this one"; a JSON error from a keys
route (401, 403, 5xx) is that error, as Coder said it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from keysync import errors as e
from keysync.coder.fields import shown

Exchange = tuple[httpx.Response, bytes]


@dataclass(frozen=True)
class Probe:
    api: str
    path: str
    answer: Exchange | None = None
    failure: e.ApiError | None = None

    @property
    def is_key_list(self) -> bool:
        return self._json(200) and self.answer is not None and self.answer[1].lstrip()[:1] == b"["

    @property
    def is_coder_error(self) -> bool:
        status = self.answer[0].status_code if self.answer else 0
        return status >= 300 and status != 404 and self._json(status)

    @property
    def is_redirect(self) -> bool:
        """A redirect says more about the URL than about the generation: it is reported."""
        return self.answer is not None and 300 <= self.answer[0].status_code < 400

    def _json(self, status: int) -> bool:
        return self.answer is not None and self.answer[0].status_code == status and is_json(self.answer[0])

    def said(self) -> str:
        """What this path answered, in a few words."""
        if self.failure is not None:
            return f"failed ({self.failure})"
        assert self.answer is not None
        response, body = self.answer
        status, kind = response.status_code, content_type(response)
        if status == 404:
            return "404"
        if not is_json(response):  # coderd's catch-all says why in plain text: worth quoting
            text = body[:60].decode("utf-8", "replace").strip() if kind == "text/plain" else ""
            return f"{status} {kind or 'without a content type'}" + (f" ({shown(text)})" if text else "")
        return f"{status} with JSON that is not a list of keys"


def content_type(response: httpx.Response) -> str:
    header: str = response.headers.get("content-type", "")
    return header.split(";")[0].strip().lower()


def is_json(response: httpx.Response) -> bool:
    return content_type(response) == "application/json"


def probe_all(collections: Mapping[str, str], send: Callable[[str], Exchange]) -> list[Probe]:
    """Asks every collection at once, the newest from this thread (whose connection then
    carries on), the others from threads of their own; in the order given."""
    probes: dict[str, Probe] = {}

    def ask(api: str, path: str) -> None:
        try:
            probes[api] = Probe(api, path, answer=send(path))
        except e.ApiError as failure:
            probes[api] = Probe(api, path, failure=failure)

    (first, first_path), *others = collections.items()
    threads = [threading.Thread(target=ask, args=item, daemon=True) for item in others]
    for thread in threads:
        thread.start()
    ask(first, first_path)
    for thread in threads:
        thread.join()
    return [probes[api] for api in collections]


def choose(probes: list[Probe], url: str, error: Callable[[Probe], e.ApiError]) -> Probe:
    """The probe that found the generation, newest first; else the error to raise."""
    for probe in probes:
        if probe.is_key_list:
            return probe
    for probe in probes:
        if probe.is_coder_error or probe.is_redirect:
            raise error(probe)
    for probe in probes:
        if probe.failure is not None and not isinstance(probe.failure, e.MalformedResponseError):
            raise probe.failure
    answers = ", ".join(f"{probe.path} answered {probe.said()}" for probe in probes)
    only_404 = all(p.answer is not None and p.answer[0].status_code == 404 for p in probes)
    cls = e.NotFoundError if only_404 else e.MalformedResponseError
    raise cls(
        f"{url} serves none of the AI Gateway keys APIs: {answers}; if it serves one of them, "
        f"set coderd.api (or --api) to {', '.join(p.api for p in probes[:-1])} or {probes[-1].api}",
        status=404 if cls is e.NotFoundError else None,
    )
