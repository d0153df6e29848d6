"""One pull-request comment per manifest, found again by a hidden marker and updated in place.

Standard library only: the action runs this before anything but keysync is installed.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

API_VERSION = "2022-11-28"
PAGE_SIZE = 100
NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')


class GitHubError(Exception):
    """The GitHub API refused or could not be reached; the message names the request, never the token."""


@dataclass(frozen=True)
class GitHub:
    api_url: str
    repository: str
    token: str

    def __repr__(self) -> str:
        return f"GitHub({self.api_url!r}, {self.repository!r})"

    def comments(self, number: int) -> list[dict[str, Any]]:
        url: str | None = self._url(f"/repos/{self.repository}/issues/{number}/comments?per_page={PAGE_SIZE}")
        found: list[dict[str, Any]] = []
        while url:
            page, links = self._call("GET", url)
            found += page
            url = next(iter(NEXT_LINK.findall(links)), None)
        return found

    def create(self, number: int, body: str) -> None:
        self._call("POST", self._url(f"/repos/{self.repository}/issues/{number}/comments"), {"body": body})

    def update(self, comment_id: int, body: str) -> None:
        self._call(
            "PATCH", self._url(f"/repos/{self.repository}/issues/comments/{comment_id}"), {"body": body}
        )

    def _url(self, path: str) -> str:
        return self.api_url.rstrip("/") + path

    def _call(self, method: str, url: str, body: dict[str, str] | None = None) -> tuple[Any, str]:
        request = urllib.request.Request(url, method=method, headers=self._headers())
        if body is not None:
            request.data = json.dumps(body).encode()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response), response.headers.get("Link", "")
        except urllib.error.HTTPError as exc:
            message = _message(exc)
            raise GitHubError(f"GitHub API: {method} {url} answered {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise GitHubError(f"GitHub API: {method} {url} failed: {exc}") from None

    def _headers(self) -> dict[str, str]:
        return {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "User-Agent": "keysync-action",
            "X-GitHub-Api-Version": API_VERSION,
        }


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(exc).get("message", exc.reason))
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)


def marker(manifest: str) -> str:
    """Hidden in the rendered comment; the path is quoted so no manifest name can close it early."""
    return f"<!-- keysync-plan manifest={quote(manifest, safe='/._')} -->"


def find(comments: list[dict[str, Any]], manifest: str) -> dict[str, Any] | None:
    # A reply quoting our comment carries the marker too, but not at its start.
    head = marker(manifest)
    return next((c for c in comments if str(c.get("body") or "").startswith(head)), None)


def sync(github: GitHub, number: int, manifest: str, body: str | None, quiet: str) -> str:
    """Keeps this manifest's comment equal to `body`; with no body (nothing pending) posts nothing
    new, but turns an earlier comment into `quiet`. Returns what it did."""
    existing = find(github.comments(number), manifest)
    if body is None and existing is None:
        return "none"
    text = f"{marker(manifest)}\n{quiet if body is None else body}"
    if existing is None:
        github.create(number, text)
        return "created"
    if existing.get("body") == text:
        return "unchanged"
    github.update(int(existing["id"]), text)
    return "updated"
