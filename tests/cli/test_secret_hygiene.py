"""No secret or token ever shows in a str, repr, format, error message or traceback."""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import traceback
from datetime import UTC, datetime

import httpx
import pytest

from keysync import errors
from keysync.coder.client import ClientSettings, CoderClient, _parse_list
from keysync.errors import KeysyncError, MalformedResponseError, OutcomeUnknownError
from keysync.keys import CreatedKey, LiveKey, SecretRecord, StoredEntry
from keysync.secret import Secret, mask

GOOD = '"id": "x", "name": "n", "key_prefix": "p", "created_at": "2025-06-01T00:00:00Z"'
KEY = "Ab3dE6gH9jKlMnOpQrStUvWxYz0123456789ABCDEFG"  # 43 alphanumerics, like a gateway key
TOKEN = "Zq8Xv2LmPa-4tY7uW1sR9kD3fG6hJ0cB5"  # like a session token
ERROR_TYPES = sorted(
    (cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, KeysyncError)),
    key=lambda cls: cls.__name__,
)


def shows_nothing_of(text: str, *values: str) -> bool:
    return all(value not in text and value[-20:] not in text for value in values)


def created() -> CreatedKey:
    live = LiveKey(
        id="3f2b8c1e-0000-4000-8000-000000000001",
        name="gateway-us-east",
        key_prefix=KEY[:11],
        created_at=datetime(2025, 6, 1, tzinfo=UTC),
    )
    return CreatedKey(live=live, secret=Secret(KEY))


# --- Secret ------------------------------------------------------------------------------------


def test_secret_never_prints_its_value() -> None:
    secret = Secret(KEY)
    renderings = [
        str(secret),
        repr(secret),
        format(secret),
        format(secret, ">60"),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        f"{secret:s}",
        "%s" % secret,  # noqa: UP031 - the old style must mask too
        "%r" % secret,  # noqa: UP031
        "{}".format(secret),  # noqa: UP032
        str([secret]),
        str({"key": secret}),
        repr((secret,)),
    ]
    for text in renderings:
        assert KEY not in text, text
        assert KEY[11:] not in text, text


def test_secret_reveals_only_on_request() -> None:
    assert Secret(KEY).reveal() == KEY
    assert Secret(KEY) == Secret(KEY)
    assert Secret(KEY) != Secret(KEY[::-1])
    assert Secret(KEY) != KEY


def test_secret_is_not_pickled_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret(KEY))
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("keysync.test").warning("created %s (%r)", Secret(KEY), Secret(KEY))
    assert caplog.records and shows_nothing_of(caplog.text, KEY)


def test_secret_is_not_json_serialisable_by_accident() -> None:
    with pytest.raises(TypeError):
        json.dumps({"key": Secret(KEY)})


def test_mask_hides_every_occurrence() -> None:
    text = f"stderr: bad key {KEY}; retrying with {KEY} and {TOKEN}"
    masked = mask(text, [Secret(KEY), Secret(TOKEN), Secret("")])
    assert shows_nothing_of(masked, KEY, TOKEN)
    assert masked.startswith("stderr: bad key ")


# --- records and keys --------------------------------------------------------------------------


def test_records_and_created_keys_never_show_the_secret() -> None:
    new = created()
    record = SecretRecord.for_created(new, "https://coder.example.com")
    entry = StoredEntry.of(record)
    for value in (new, record, entry):
        assert shows_nothing_of(repr(value), KEY), repr(value)
        assert shows_nothing_of(str(value), KEY), str(value)
        assert shows_nothing_of(f"{value}", KEY)
    assert shows_nothing_of(json.dumps(record.public()), KEY)
    assert record.document()["key"] == KEY  # only the sink-writing form holds it


def test_a_stored_entry_keeps_only_the_public_prefix() -> None:
    entry = StoredEntry.of(SecretRecord.for_created(created(), "https://coder.example.com"))
    assert entry.secret_prefix == KEY[:11]
    assert KEY[11:] not in repr(entry)


# --- errors ------------------------------------------------------------------------------------


def make(cls: type[KeysyncError], secret: Secret) -> KeysyncError:
    if issubclass(cls, errors.ManifestError):
        return cls([f"keysync.yaml:3: coderd.api: bad value {secret}"])
    if issubclass(cls, errors.ApiError):
        return cls(
            f"create failed for {secret}",
            status=400,
            detail=f"key {secret!r} rejected",
            validations=[("key", f"{secret}")],
        )
    return cls(f"cannot store {secret}")


def test_every_error_type_is_covered() -> None:
    names = {cls.__name__ for cls in ERROR_TYPES}
    assert {"KeysyncError", "ManifestError", "ApiError", "SinkError", "LockHeldError"} <= names
    assert len(ERROR_TYPES) >= 15


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("value", [KEY, TOKEN])
def test_errors_never_show_a_secret_they_were_given(cls: type[KeysyncError], value: str) -> None:
    error = make(cls, Secret(value))
    try:
        raise error
    except KeysyncError as exc:
        rendered = "".join(traceback.format_exception(exc))
    for text in (str(error), repr(error), f"{error}", " ".join(map(str, error.args)), rendered):
        assert shows_nothing_of(text, value), text


# --- the client --------------------------------------------------------------------------------


def test_client_settings_and_client_never_show_the_token() -> None:
    settings = ClientSettings(url="https://coder.example.com", token=Secret(TOKEN), api="coderd-keys")
    assert shows_nothing_of(repr(settings), TOKEN)
    assert shows_nothing_of(str(settings), TOKEN)
    client = CoderClient(settings, transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    try:
        assert shows_nothing_of(repr(client), TOKEN)
        assert shows_nothing_of(str(client), TOKEN)
        assert shows_nothing_of(f"{client}", TOKEN)
    finally:
        client.close()


@pytest.mark.parametrize(
    "body",
    [
        f'[{{"id": "x", "name": "n", "key_prefix": "p", "created_at": "{KEY}"}}]',
        f'[{{{GOOD}, "last_used_at": "{TOKEN}"}}]',
        f'[{{{GOOD}, "id": {{"token": "{TOKEN}"}}}}]',
        f'["{KEY}"]',
        f'{{"keys": ["{KEY}"]}}',
        f'{{"{TOKEN}": 1}}',
        f"not json {KEY}",
        f'[{{{GOOD}}}, "{KEY}"]',
    ],
)
def test_a_malformed_key_list_never_echoes_its_input(body: str) -> None:
    with pytest.raises(MalformedResponseError) as caught:
        response = httpx.Response(200, headers={"Content-Type": "application/json; charset=utf-8"})
        _parse_list(response, body.encode(), "/api/v2/aibridge/coderd-keys")
    error = caught.value
    rendered = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), rendered):
        assert shows_nothing_of(text, KEY, TOKEN), text
    assert "pydantic" not in rendered.lower(), "the ValidationError must not surface in a traceback"
    assert error.__cause__ is None


def test_a_create_answer_keysync_cannot_read_never_echoes_the_key() -> None:
    body = {"id": "x", "name": "gateway-us-east", "key": f"{KEY}!", "key_prefix": KEY[:11], "created_at": 7}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Coder-Session-Token"] == TOKEN
        return httpx.Response(201, json=body)

    settings = ClientSettings(url="https://coder.example.com", token=Secret(TOKEN), api="coderd-keys")
    client = CoderClient(settings, transport=httpx.MockTransport(answer))
    try:
        with pytest.raises(OutcomeUnknownError) as caught:
            client.create_key("gateway-us-east")
    finally:
        client.close()
    rendered = "".join(traceback.format_exception(caught.value))
    assert shows_nothing_of(str(caught.value) + repr(caught.value) + rendered, KEY, TOKEN), rendered
