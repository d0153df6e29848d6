"""The dev server answers like Coder (shared/coderd-api.md), over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from keysync.devserver import DevServer, DevServerConfig, DevServerError, run
from keysync.devserver.gouuid import parse_uuid

from replica import IN, SERVE, gateway_status

OWNER = "OwnerTokn0-0123456789abcdefghijkl"
MEMBER = "MemberTok1-abcdefghijklmnopqrstuv"
DEFAULT_API = "ai-gateway-keys"  # what a dev server serves unless told otherwise, as current Coder does
COLLECTIONS = {
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
}
REQUEST_TYPES = {
    "coderd-keys": "CreateAIGatewayCoderdKeyRequest",
    "aibridge-keys": "CreateAIGatewayKeyRequest",
    "ai-gateway-keys": "CreateAIGatewayKeyRequest",
}
JSON_TYPE = "application/json; charset=utf-8"
UNKNOWN_ID = "3f1c8f0e-6a4e-4c36-9d8e-2b1f0c7a5e11"
INJECTED = "injected by the dev server (fail_rate)"

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
NO_TOKEN = {
    "message": SIGNED_OUT,
    "detail": 'Cookie "coder_session_token" or query parameter must be provided.',
}
FORBIDDEN = {
    "message": "Forbidden.",
    "detail": "You don't have permission to view this content. If you believe this is a mistake, "
    "please contact your administrator or try signing in with different credentials.",
}
ROUTE_NOT_FOUND = {"message": "Route not found."}
NOT_FOUND = {"message": "Resource not found or you do not have access to this resource"}
NAME_REQUIRED = {
    "message": "Validation failed.",
    "validations": [{"field": "name", "detail": 'Validation failed for tag "required" with value: ""'}],
}
INVALID_NAME = {
    "message": "Invalid key name.",
    "validations": [
        {
            "field": "name",
            "detail": "Must be 64 characters or fewer, lowercase letters, numbers, and non-consecutive "
            "hyphens, cannot start or end with a hyphen.",
        }
    ],
}
NAME_TAKEN = {
    "message": "Key name must be unique.",
    "validations": [{"field": "name", "detail": "A key with this name already exists."}],
}
PREMIUM = {
    "coderd-keys": {"message": "AI Bridge is a Premium feature. Contact sales!"},
    "aibridge-keys": {"message": "AI Bridge is a Premium feature. Contact sales!"},
    "ai-gateway-keys": {"message": "AI Gateway is a Premium feature. Contact sales!"},
}
# Plain HTTP on loopback; one shared TLS context spares every client loading the CA bundle.
TLS = ssl.create_default_context()
GO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
SECRET = re.compile(r"[0-9A-Za-z]{43}")


@dataclass
class Api:
    """One server, one generation, and a client that speaks as the owner unless told otherwise."""

    server: DevServer
    client: httpx.Client
    generation: str

    @property
    def collection(self) -> str:
        return COLLECTIONS[self.generation]

    def item(self, key_id: str) -> str:
        return f"{self.collection}/{key_id}"

    def call(self, method: str, path: str, token: str | None = OWNER, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Coder-Session-Token"] = token
        return self.client.request(method, path, headers=headers, **kwargs)

    def create(self, name: str, token: str | None = OWNER) -> httpx.Response:
        return self.call("POST", self.collection, token, json={"name": name})

    def created(self, name: str) -> dict[str, Any]:
        response = self.create(name)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def listed(self) -> list[dict[str, Any]]:
        response = self.call("GET", self.collection)
        assert response.status_code == 200, response.text
        keys: list[dict[str, Any]] = response.json()
        return keys


def assert_answer(response: httpx.Response, status: int, body: object) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON_TYPE
    assert response.json() == body


def assert_text(response: httpx.Response, status: int, text: str) -> None:
    """A plain-text answer, as Go's http.Error writes one."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.text == text + "\n"


@pytest.fixture
def start() -> Iterator[Callable[..., DevServer]]:
    servers: list[DevServer] = []

    def _start(**settings: Any) -> DevServer:
        config = DevServerConfig(**{"port": 0, "token": OWNER, "member_token": MEMBER, **settings})
        server = DevServer(config)
        server.start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture
def connect(start: Callable[..., DevServer]) -> Iterator[Callable[..., Api]]:
    clients: list[httpx.Client] = []

    def _connect(generation: str = "coderd-keys", **settings: Any) -> Api:
        server = start(api=generation, **settings)
        client = httpx.Client(verify=TLS, base_url=server.url, timeout=10)
        clients.append(client)
        return Api(server, client, generation)

    yield _connect
    for client in clients:
        client.close()


@pytest.fixture(params=list(COLLECTIONS))
def generation(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def api(connect: Callable[..., Api], generation: str) -> Api:
    return connect(generation)


# Routes


def test_only_the_configured_generation_is_served(api: Api) -> None:
    for other, path in COLLECTIONS.items():
        if other == api.generation:
            continue
        for response in (api.call("GET", path), api.call("DELETE", f"{path}/{UNKNOWN_ID}")):
            if path.startswith("/api/v2/aibridge/"):  # another generation's path, in the catch-all
                assert_text(response, 400, "no authentication key provided")
            else:
                assert_answer(response, 404, ROUTE_NOT_FOUND)


def catch_all_paths(generation: str) -> list[str]:
    """Paths that fall into the AI Bridge data plane on a server of this generation."""
    paths = ["/api/v2/aibridge", "/api/v2/aibridge/", "/api/v2/aibridge/v1/messages"]
    paths += [path for other, path in COLLECTIONS.items() if other != generation and "/aibridge/" in path]
    if generation == "ai-gateway-keys":
        paths += ["/api/v2/ai-gateway", "/api/v2/ai-gateway/other", "/api/v2/ai-gateway/openai/v1/chat"]
    return paths


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_the_catch_all_wants_its_own_credential_not_a_session_token(api: Api, method: str) -> None:
    for path in catch_all_paths(api.generation):
        assert_text(api.call(method, path), 400, "no authentication key provided")
        assert_text(api.call(method, path, token=None), 400, "no authentication key provided")


def test_the_catch_all_reads_bearer_and_api_key_headers(api: Api) -> None:
    path = catch_all_paths(api.generation)[-1]
    for header in ("Authorization", "X-Api-Key", "X-Coder-Token"):
        value = f"Bearer {OWNER}" if header == "Authorization" else OWNER
        assert_text(api.call("POST", path, token=None, headers={header: value}), 404, "404 page not found")
        wrong = value.replace(OWNER, "AbCdEfGhIj-0123456789abcdefghijkl")
        assert_text(api.call("POST", path, token=None, headers={header: wrong}), 403, "unauthorized")


@pytest.mark.parametrize("token", [OWNER, None])
def test_the_catch_all_checks_the_feature_first(
    connect: Callable[..., Api], generation: str, token: str | None
) -> None:
    api = connect(generation, feature_disabled=True)
    for path in catch_all_paths(generation):
        assert_answer(api.call("GET", path, token=token), 403, PREMIUM[generation])


def test_static_routes_win_over_the_catch_all(api: Api) -> None:
    assert_answer(api.call("GET", api.collection), 200, [])
    assert_answer(api.call("DELETE", api.item(UNKNOWN_ID)), 404, NOT_FOUND)
    assert_answer(api.call("GET", api.item(UNKNOWN_ID) + "/extra"), 404, ROUTE_NOT_FOUND)
    assert_answer(api.call("GET", SERVE + "/extra", token=None), 404, ROUTE_NOT_FOUND)
    assert api.call("GET", SERVE, token=None).status_code == 401  # the gateway's, never the catch-all


@pytest.mark.parametrize("path", ["/api/v2/unknown", "/api/v2/aibridgex", "/api/v3/keys", "/", "/x"])
def test_unknown_paths_are_404_even_without_a_token(api: Api, path: str) -> None:
    assert_answer(api.call("GET", path, token=None), 404, ROUTE_NOT_FOUND)


@pytest.mark.parametrize("generation", ["coderd-keys", "aibridge-keys"])
def test_older_servers_have_no_catch_all_under_ai_gateway(
    connect: Callable[..., Api], generation: str
) -> None:
    api = connect(generation)
    for path in ("/api/v2/ai-gateway/other", "/api/v2/ai-gateway/keys", "/api/v2/ai-gateway"):
        assert_answer(api.call("GET", path), 404, ROUTE_NOT_FOUND)


def test_the_collection_answers_with_a_trailing_slash(api: Api) -> None:
    made = api.call("POST", api.collection + "/", json={"name": "slashed"})
    assert made.status_code == 201, made.text
    assert [key["name"] for key in api.call("GET", api.collection + "/").json()] == ["slashed"]
    assert_answer(api.call("DELETE", api.item(made.json()["id"]) + "/"), 404, ROUTE_NOT_FOUND)
    assert_answer(api.call("DELETE", api.collection + "//"), 404, ROUTE_NOT_FOUND)
    assert api.call("DELETE", api.item(made.json()["id"])).status_code == 204


def test_paths_below_an_item_are_404(api: Api) -> None:
    response = api.call("DELETE", f"{api.item(UNKNOWN_ID)}/extra")
    assert_answer(response, 404, ROUTE_NOT_FOUND)


@pytest.mark.parametrize(("method", "target"), [("PUT", "collection"), ("GET", "item"), ("POST", "serve")])
def test_unsupported_methods_are_405(api: Api, method: str, target: str) -> None:
    path = {"collection": api.collection, "item": api.item(UNKNOWN_ID), "serve": SERVE}[target]
    assert_answer(api.call(method, path, token=None), 405, {"message": "Method not allowed."})


# Auth


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_missing_token_is_401(api: Api, method: str) -> None:
    path = api.item(UNKNOWN_ID) if method == "DELETE" else api.collection
    assert_answer(api.call(method, path, token=None, json={"name": "a"}), 401, NO_TOKEN)


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        ("nope", "Invalid API key format: incorrect amount of API key parts, expected 2 got 1"),
        ("a-b-c", "Invalid API key format: incorrect amount of API key parts, expected 2 got 3"),
        (
            "short-0123456789abcdefghijkl",
            "Invalid API key format: invalid API key ID length, expected 10 got 5",
        ),
        (OWNER + "x", "Invalid API key format: invalid API key secret length, expected 22 got 23"),
        ("AbCdEfGhIj-0123456789abcdefghijkl", "API key is invalid."),
        (OWNER[:11] + "x" * 22, "API key secret is invalid."),
        (MEMBER[:11] + "y" * 22, "API key secret is invalid."),
    ],
)
def test_refused_tokens_get_coders_401_detail(api: Api, token: str, detail: str) -> None:
    response = api.call("GET", api.collection, token=token)
    assert_answer(response, 401, {"message": SIGNED_OUT, "detail": detail})
    assert token not in response.text


@pytest.mark.parametrize("token", [None, "nope"])
def test_a_401_carries_coders_bearer_challenge(api: Api, token: str | None) -> None:
    response = api.call("GET", api.collection, token=token)
    assert response.status_code == 401
    metadata = f"{api.server.url}/.well-known/oauth-protected-resource"
    assert response.headers["www-authenticate"] == (
        'Bearer realm="coder", error="invalid_token", error_description="The access token is invalid", '
        f'resource_metadata="{metadata}"'
    )


def test_the_token_is_read_where_coder_reads_it(api: Api) -> None:
    for where in (
        {"headers": {"Cookie": f"coder_session_token={OWNER}"}},
        {"params": {"coder_session_token": OWNER}},
        {"params": {"access_token": OWNER}},
        {"headers": {"Authorization": f"bearer {OWNER}"}},
    ):
        assert_answer(api.call("GET", api.collection, token=None, **where), 200, [])
    # The query parameter comes before the header.
    response = api.call("GET", api.collection, params={"coder_session_token": "nope"})
    assert response.status_code == 401


def test_bearer_token_is_accepted(api: Api) -> None:
    response = api.call("GET", api.collection, token=None, headers={"Authorization": f"Bearer {OWNER}"})
    assert_answer(response, 200, [])
    response = api.call("GET", api.collection, token=None, headers={"Authorization": f"Bearer {OWNER[:-1]}z"})
    assert_answer(response, 401, {"message": SIGNED_OUT, "detail": "API key secret is invalid."})


def test_generated_token_has_coders_shape(start: Callable[..., DevServer]) -> None:
    server = start(token=None)
    assert re.fullmatch(r"[0-9A-Za-z]{10}-[0-9A-Za-z]{22}", server.token)
    with httpx.Client(
        verify=TLS, base_url=server.url, headers={"Coder-Session-Token": server.token}
    ) as client:
        assert client.get(COLLECTIONS[DEFAULT_API]).status_code == 200


@pytest.mark.parametrize("token", [OWNER, MEMBER])
def test_feature_disabled_is_403_after_the_token_check(
    connect: Callable[..., Api], generation: str, token: str
) -> None:
    api = connect(generation, feature_disabled=True)
    assert_answer(api.call("GET", api.collection, token=None), 401, NO_TOKEN)
    assert_answer(api.call("GET", api.collection, token=token), 403, PREMIUM[generation])
    assert_answer(api.create("ok", token=token), 403, PREMIUM[generation])
    assert_answer(api.call("DELETE", api.item("bad"), token=token), 403, PREMIUM[generation])


def test_member_is_forbidden(api: Api) -> None:
    assert_answer(api.call("GET", api.collection, token=MEMBER), 403, FORBIDDEN)
    assert_answer(api.create("fine", token=MEMBER), 403, FORBIDDEN)
    key = api.created("mine")
    assert_answer(api.call("DELETE", api.item(key["id"]), token=MEMBER), 403, FORBIDDEN)
    assert [k["name"] for k in api.listed()] == ["mine"]


def test_member_gets_400_for_what_is_read_before_the_owner_check(api: Api) -> None:
    response = api.call("POST", api.collection, token=MEMBER, content=b"{")
    assert_answer(response, 400, {"message": "Request body must be valid JSON.", "detail": "unexpected EOF"})
    assert_answer(api.create("", token=MEMBER), 400, NAME_REQUIRED)
    response = api.call("DELETE", api.item("not-a-uuid"), token=MEMBER)
    assert_answer(response, 400, {"message": "Invalid key ID.", "detail": "invalid UUID length: 10"})


def test_member_gets_403_for_what_is_checked_after_the_owner_check(api: Api) -> None:
    api.created("taken")
    assert_answer(api.create("Not Valid", token=MEMBER), 403, FORBIDDEN)
    assert_answer(api.create("taken", token=MEMBER), 403, FORBIDDEN)
    assert_answer(api.call("DELETE", api.item(UNKNOWN_ID), token=MEMBER), 403, FORBIDDEN)


# List


def test_list_is_an_empty_array_at_first(api: Api) -> None:
    assert_answer(api.call("GET", api.collection), 200, [])


def test_list_is_oldest_first_and_never_carries_a_secret(api: Api) -> None:
    created = [api.created(name) for name in ("zeta", "alpha", "mid")]
    listed = api.listed()
    assert [key["name"] for key in listed] == ["zeta", "alpha", "mid"]
    for key, made in zip(listed, created, strict=True):
        assert key == {k: made[k] for k in ("id", "name", "key_prefix", "created_at")}
    assert [key["created_at"] for key in listed] == sorted(key["created_at"] for key in listed)
    assert all(made["key"] not in api.call("GET", api.collection).text for made in created)


# Create


def test_create_returns_the_key_once(api: Api) -> None:
    response = api.create("ci-runner")
    assert response.status_code == 201
    assert response.headers["content-type"] == JSON_TYPE
    body = response.json()
    assert list(body) == ["id", "name", "key", "key_prefix", "created_at"]
    assert uuid.UUID(body["id"]).version == 4
    assert body["name"] == "ci-runner"
    assert SECRET.fullmatch(body["key"])
    assert body["key_prefix"] == body["key"][:11]
    assert GO_TIME.fullmatch(body["created_at"])
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "EOF"),
        (b"  \n", "EOF"),
        (b"{", "unexpected EOF"),
        (b'{"name": "a', "unexpected EOF"),
        (b"name=a", "invalid character 'n' looking for beginning of value"),
        (b'{"name":"a",}', "invalid character '}' looking for beginning of object key string"),
        (b'{"name" "a"}', "invalid character '\"' after object key"),
        (b'{"name":"a" "x":1}', "invalid character '\"' after object key:value pair"),
        (b'{"x":[1 2]}', "invalid character '2' after array element"),
        (b'{"name":"a\nb"}', "invalid character '\\n' in string literal"),
        (b'{"name":"\\q"}', "invalid character 'q' in string escape code"),
        (b'{"name":NaN}', "invalid character 'N' looking for beginning of value"),
    ],
)
def test_malformed_json_is_400_with_the_decoder_error(api: Api, body: bytes, detail: str) -> None:
    response = api.call("POST", api.collection, content=body)
    assert_answer(response, 400, {"message": "Request body must be valid JSON.", "detail": detail})


@pytest.mark.parametrize(("body", "kind"), [(b'"a"', "string"), (b"[]", "array"), (b"7", "number")])
def test_a_body_that_is_not_an_object_is_400(api: Api, body: bytes, kind: str) -> None:
    detail = f"json: cannot unmarshal {kind} into Go value of type codersdk.{REQUEST_TYPES[api.generation]}"
    response = api.call("POST", api.collection, content=body)
    assert_answer(response, 400, {"message": "Request body must be valid JSON.", "detail": detail})


@pytest.mark.parametrize(("name", "kind"), [(5, "number"), (["a"], "array"), (True, "bool"), ({}, "object")])
def test_a_name_that_is_not_a_string_is_400(api: Api, name: object, kind: str) -> None:
    detail = (
        f"json: cannot unmarshal {kind} into Go struct field "
        f"{REQUEST_TYPES[api.generation]}.name of type string"
    )
    response = api.call("POST", api.collection, json={"name": name})
    assert_answer(response, 400, {"message": "Request body must be valid JSON.", "detail": detail})


def test_unknown_fields_are_ignored_and_names_match_like_go(api: Api) -> None:
    response = api.call("POST", api.collection, json={"name": "extra", "expires": 3, "owner": {}})
    assert response.status_code == 201
    response = api.call("POST", api.collection, content=b'{"NAME":"folded"} trailing')
    assert response.status_code == 201
    assert response.json()["name"] == "folded"


@pytest.mark.parametrize("body", [b"{}", b'{"name":""}', b"null", b'{"name":null}', b'{"other":"x"}'])
def test_missing_or_empty_name_fails_validation(api: Api, body: bytes) -> None:
    assert_answer(api.call("POST", api.collection, content=body), 400, NAME_REQUIRED)


@pytest.mark.parametrize(
    "name", ["Upper", "-lead", "trail-", "dou--ble", "under_score", "sp ace", "a\n", "é", "a" * 65]
)
def test_invalid_names_are_400(api: Api, name: str) -> None:
    assert_answer(api.create(name), 400, INVALID_NAME)
    assert api.listed() == []


@pytest.mark.parametrize("name", ["a", "0", "a-b-c", "gateway-01", "a" * 64])
def test_valid_names_are_accepted(api: Api, name: str) -> None:
    assert api.created(name)["name"] == name


def test_names_are_unique(api: Api) -> None:
    api.created("shared")
    assert_answer(api.create("shared"), 400, NAME_TAKEN)
    assert len(api.listed()) == 1


# Delete


def test_delete_is_204_then_404(api: Api) -> None:
    key = api.created("doomed")
    response = api.call("DELETE", api.item(key["id"]))
    assert response.status_code == 204
    assert response.content == b""
    assert_answer(api.call("DELETE", api.item(key["id"])), 404, NOT_FOUND)
    assert api.listed() == []


def test_delete_of_an_unknown_uuid_is_404(api: Api) -> None:
    assert_answer(api.call("DELETE", api.item(UNKNOWN_ID)), 404, NOT_FOUND)


@pytest.mark.parametrize(
    ("segment", "detail"),
    [
        ("not-a-uuid", "invalid UUID length: 10"),
        ("1", "invalid UUID length: 1"),
        ("z" * 36, "invalid UUID format"),
        ("g" * 32, "invalid UUID format"),
    ],
)
def test_delete_of_a_malformed_id_is_400(api: Api, segment: str, detail: str) -> None:
    response = api.call("DELETE", api.item(segment))
    assert_answer(response, 400, {"message": "Invalid key ID.", "detail": detail})


def test_delete_accepts_the_other_uuid_spellings(api: Api) -> None:
    first, second = api.created("one"), api.created("two")
    assert api.call("DELETE", api.item(first["id"].upper())).status_code == 204
    assert api.call("DELETE", api.item(second["id"].replace("-", ""))).status_code == 204


def test_uuid_parsing_follows_google_uuid() -> None:
    canonical = "3f1c8f0e-6a4e-4c36-9d8e-2b1f0c7a5e11"
    assert parse_uuid(f"urn:uuid:{canonical}") == canonical
    assert parse_uuid(f"{{{canonical.upper()}}}") == canonical
    with pytest.raises(ValueError, match='invalid urn prefix: "urn:uuix:"'):
        parse_uuid(f"urn:uuix:{canonical}")
    with pytest.raises(ValueError, match="invalid UUID format"):
        parse_uuid(canonical.replace("-", "+"))


# Rate limits (the sliding window's arithmetic is in test_ratelimit.py)

LONG_WINDOW = 3600.0  # so long that a window turning over mid-test changes nothing the tests see


def test_rate_limit_answers_429_with_headers(connect: Callable[..., Api], generation: str) -> None:
    api = connect(generation, rate_limit=3, rate_window=LONG_WINDOW)
    started = time.time()
    for remaining in (2, 1, 0):
        response = api.call("GET", api.collection)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "3"
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
        assert "retry-after" not in response.headers
    response = api.call("POST", api.collection, json={"name": "late"})  # the list's bucket
    message = "You've been rate limited for sending more than 3 requests in 1h0m0s."
    assert_answer(response, 429, {"message": message})
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["retry-after"] == "3600"  # the window's length, not the time left
    reset = int(response.headers["x-ratelimit-reset"])
    assert reset % 3600 == 0  # windows start at multiples of their length
    assert started < reset <= started + 3600 + 1
    bypass = {"X-Coder-Bypass-Ratelimit": "true"}
    assert api.call("GET", api.collection, headers=bypass).json() == []  # the refused create made nothing


def test_rate_limit_is_per_user_and_per_path(connect: Callable[..., Api]) -> None:
    api = connect("ai-gateway-keys", rate_limit=1, rate_window=LONG_WINDOW)
    assert api.call("GET", api.collection).status_code == 200
    assert api.call("GET", api.collection).status_code == 429
    assert api.call("DELETE", api.item(UNKNOWN_ID)).status_code == 404  # its own path
    assert api.call("DELETE", api.item(UNKNOWN_ID)).status_code == 429
    assert api.call("GET", api.collection, token=MEMBER).status_code == 403  # its own user
    assert api.call("GET", api.collection + "/").status_code == 200  # its own path, as Coder keys it


def test_rate_limit_runs_before_routing(connect: Callable[..., Api]) -> None:
    api = connect("coderd-keys", rate_limit=1, rate_window=LONG_WINDOW)
    for path in ("/api/v2/unknown", "/api/v2/aibridge/keys", SERVE):
        first = api.call("GET", path, token=None)
        assert first.status_code in (400, 401, 404), first.text
        assert first.headers["x-ratelimit-remaining"] == "0"
        assert api.call("GET", path, token=None).status_code == 429
    outside = api.call("GET", "/x")  # the site, not the API: never limited
    assert "x-ratelimit-limit" not in outside.headers
    assert api.call("GET", "/x").status_code == 404


def test_a_short_window_gives_the_budget_back_gradually(connect: Callable[..., Api]) -> None:
    api = connect("ai-gateway-keys", rate_limit=4, rate_window=1.0)
    if time.time() % 1 > 0.8:  # four requests must land in one window
        time.sleep(1 - time.time() % 1)
    statuses = [api.call("GET", api.collection).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    time.sleep(1.5 - time.time() % 1)  # halfway through the next window: half the old count still weighs
    statuses = [api.call("GET", api.collection).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_rate_limit_is_off_by_default(api: Api) -> None:
    response = api.call("GET", api.collection)
    assert not any(name.startswith("x-ratelimit") for name in response.headers)


def test_owner_may_bypass_the_rate_limit_and_member_may_not(
    connect: Callable[..., Api], generation: str
) -> None:
    api = connect(generation, rate_limit=1, rate_window=LONG_WINDOW)
    bypass = {"X-Coder-Bypass-Ratelimit": "true"}
    assert api.call("GET", api.collection).status_code == 200
    assert api.call("GET", api.collection).status_code == 429
    for _ in range(3):
        response = api.call("GET", api.collection, headers=bypass)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "1"
        assert response.headers["x-ratelimit-remaining"] == "0"
    for path in (api.collection, "/api/v2/unknown"):
        response = api.call("GET", path, token=MEMBER, headers=bypass)
        assert_text(response, 428, '"X-Coder-Bypass-Ratelimit" provided but user is not owner')
    assert (
        api.call("GET", api.collection, token=MEMBER, headers={"X-Coder-Bypass-Ratelimit": "no"}).status_code
        == 403
    )


# Injected faults


CREATE_FAILED = {"message": "Failed to create key. Please retry."}


def test_fail_rate_answers_500_and_commits_nothing(start: Callable[..., DevServer], tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    failing = start(fail_rate=1.0, state=state)
    with httpx.Client(verify=TLS, base_url=failing.url, headers={"Coder-Session-Token": OWNER}) as client:
        # The newest generation's key routes answer their own 500 bodies; the rest Coder's generic one.
        for response, body in (
            (client.post(COLLECTIONS[DEFAULT_API], json={"name": "lost"}), CREATE_FAILED),
            (client.get(COLLECTIONS[DEFAULT_API]), {"message": "Failed to list keys."}),
            (
                client.get("/api/v2/unknown"),
                {"message": "An internal server error occurred.", "detail": INJECTED},
            ),
        ):
            assert_answer(response, 500, body)
    failing.stop()
    healthy = start(state=state)
    with httpx.Client(verify=TLS, base_url=healthy.url, headers={"Coder-Session-Token": OWNER}) as client:
        assert client.get(COLLECTIONS[DEFAULT_API]).json() == []


@pytest.mark.parametrize("generation", ["coderd-keys", "aibridge-keys"])
def test_older_generations_answer_500_with_a_detail(connect: Callable[..., Api], generation: str) -> None:
    api = connect(generation, fail_rate=1.0)
    for response in (
        api.create("lost"),
        api.call("GET", api.collection),
        api.call("DELETE", api.item(UNKNOWN_ID)),
    ):
        assert_answer(response, 500, {"message": "An internal server error occurred.", "detail": INJECTED})


def test_the_newest_generation_answers_its_own_500s(connect: Callable[..., Api]) -> None:
    api = connect("ai-gateway-keys", fail_rate=1.0)
    assert_answer(api.create("lost"), 500, CREATE_FAILED)
    assert_answer(api.call("GET", api.collection), 500, {"message": "Failed to list keys."})
    assert_answer(api.call("DELETE", api.item(UNKNOWN_ID)), 500, {"message": "Failed to delete key."})
    generic = {"message": "An internal server error occurred.", "detail": INJECTED}
    assert_answer(api.call("GET", "/api/v2/unknown"), 500, generic)


def test_lost_response_commits_the_create(connect: Callable[..., Api]) -> None:
    api = connect(lose_response_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        api.create("ghost")
    assert [key["name"] for key in api.listed()] == ["ghost"]
    assert_answer(api.create("ghost"), 400, NAME_TAKEN)


def test_latency_is_added_to_each_request(connect: Callable[..., Api]) -> None:
    api = connect(latency_ms=120)
    started = time.perf_counter()
    api.listed()
    assert time.perf_counter() - started >= 0.12


def test_a_change_lands_halfway_through_the_latency(connect: Callable[..., Api], tmp_path: Path) -> None:
    """Like a server latency/2 away each way: the key exists before its creator has the answer."""
    state = tmp_path / "state.json"
    api = connect(latency_ms=1000, state=state)
    creating = threading.Thread(target=api.created, args=("alpha",))
    started = time.perf_counter()
    creating.start()
    time.sleep(0.75)  # the create lands at 0.5 s; its answer leaves at 1 s

    assert creating.is_alive()
    assert "alpha" in state.read_text()
    creating.join()
    assert time.perf_counter() - started >= 1.0


# State and seed


def test_state_survives_a_restart_without_the_secret(start: Callable[..., DevServer], tmp_path: Path) -> None:
    state = tmp_path / "nested" / "state.json"
    first = start(state=state)
    with httpx.Client(verify=TLS, base_url=first.url, headers={"Coder-Session-Token": OWNER}) as client:
        path = COLLECTIONS[DEFAULT_API]
        kept = client.post(path, json={"name": "kept"}).json()
        gone = client.post(path, json={"name": "gone"}).json()
        client.delete(f"{path}/{gone['id']}")
        assert gateway_status(first.url, kept["key"]) == IN
        before = client.get(path).json()
    first.stop()
    text = state.read_text()
    assert kept["key"] not in text
    assert gone["key"] not in text
    assert hashlib.sha256(kept["key"].encode()).hexdigest() in text
    assert [key["name"] for key in json.loads(text)["keys"]] == ["kept"]
    second = start(state=state)
    with httpx.Client(verify=TLS, base_url=second.url, headers={"Coder-Session-Token": OWNER}) as client:
        assert client.get(path).json() == before
        assert gateway_status(second.url, kept["key"]) == IN
        assert client.post(path, json={"name": "kept"}).status_code == 400


def test_a_corrupt_state_file_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(DevServerError, match=r"state\.json"):
        DevServer(DevServerConfig(port=0, state=state)).start()


def test_a_seed_replayed_over_its_own_state_makes_no_duplicates(
    connect: Callable[..., Api], tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    first = connect(seed=3, state=state)
    made = first.created("first")
    first.server.stop()
    second = connect(seed=3, state=state)
    again = second.created("second")
    assert again["id"] != made["id"]
    assert again["key_prefix"] != made["key_prefix"]
    assert [key["name"] for key in second.listed()] == ["first", "second"]


def test_seed_makes_ids_and_secrets_reproducible(connect: Callable[..., Api]) -> None:
    runs = [connect(seed=seed) for seed in (7, 7, 8)]
    made = [[(k["id"], k["key"]) for k in (api.created("a"), api.created("b"))] for api in runs]
    assert made[0] == made[1]
    assert made[0] != made[2]


def test_seed_makes_injected_failures_reproducible(connect: Callable[..., Api]) -> None:
    runs = [connect(seed=11, fail_rate=0.5) for _ in range(2)]
    statuses = [[api.call("GET", api.collection).status_code for _ in range(20)] for api in runs]
    assert statuses[0] == statuses[1]
    assert set(statuses[0]) == {200, 500}


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="api must be one of"):
        DevServerConfig(api="keys")
    with pytest.raises(ValueError, match="fail_rate"):
        DevServerConfig(fail_rate=1.5)


# Load


def test_64_concurrent_clients_are_all_answered(connect: Callable[..., Api]) -> None:
    api = connect()
    barrier = threading.Barrier(64)

    def client_run(index: int) -> list[int]:
        with httpx.Client(
            verify=TLS, base_url=api.server.url, headers={"Coder-Session-Token": OWNER}
        ) as client:
            barrier.wait()
            created = client.post(api.collection, json={"name": f"load-{index}"})
            listed = client.get(api.collection)
            deleted = client.delete(api.item(created.json()["id"]))
            return [created.status_code, listed.status_code, deleted.status_code]

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(client_run, range(64)))
    assert results == [[201, 200, 204]] * 64
    assert api.listed() == []


# Foreground


def _spawn(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_in_the_foreground_until_signalled(stop_signal: signal.Signals) -> None:
    code = (
        "import sys; from keysync.devserver import run, DevServerConfig; "
        "sys.exit(run(DevServerConfig(port=0)))"
    )
    process = _spawn(code)
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        assert re.fullmatch(r"listening on http://127\.0\.0\.1:\d+\n", first)
        token = process.stderr.readline().removeprefix("owner session token: ").strip()
        url = first.split()[-1]
        response = httpx.get(
            verify=TLS, url=url + COLLECTIONS[DEFAULT_API], headers={"Coder-Session-Token": token}
        )
        assert response.status_code == 200
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert out == ""
    assert re.search(r"^GET /api/v2/ai-gateway/keys 200 \d+\.\dms$", err, re.MULTILINE)
    assert token not in err


def test_run_reports_a_port_in_use(start: Callable[..., DevServer]) -> None:
    busy = start()
    port = int(busy.url.rsplit(":", 1)[1])
    out, err = io.StringIO(), io.StringIO()
    assert run(DevServerConfig(port=port, token=OWNER), out=out, err=err) == 1
    assert out.getvalue() == ""
    assert "cannot listen on" in err.getvalue()
    assert OWNER not in err.getvalue()
