"""The key endpoints proper: list, create and delete.

The order of checks inside each follows Coder's handlers: the body or the UUID is read before
the owner check, and the owner check comes before the name rule and uniqueness.
"""

from __future__ import annotations

import re
from typing import Any

from keysync.devserver import messages
from keysync.devserver.exchange import Response, json_response
from keysync.devserver.faults import Faults
from keysync.devserver.gojson import DecodeError, decode_name, format_time
from keysync.devserver.gouuid import parse_uuid
from keysync.devserver.model import StoredKey
from keysync.devserver.store import DuplicateNameError, KeyStore

_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_MAX_NAME_LENGTH = 64


class KeyEndpoints:
    def __init__(self, store: KeyStore, faults: Faults, request_type: str, seen_field: str) -> None:
        self._store = store
        self._faults = faults
        self._request_type = request_type
        self._seen_field = seen_field

    def list(self, owner: bool) -> Response:
        if not owner:
            return json_response(403, messages.FORBIDDEN)
        return json_response(200, [_listed(key, self._seen_field) for key in self._store.list()])

    def create(self, body: bytes, owner: bool) -> Response:
        try:
            name = decode_name(body, self._request_type)
        except DecodeError as exc:
            return json_response(400, messages.invalid_json(str(exc)))
        if not name:
            return json_response(400, messages.NAME_REQUIRED)
        if not owner:
            return json_response(403, messages.FORBIDDEN)
        if not valid_name(name):
            return json_response(400, messages.INVALID_NAME)
        return self._insert(name)

    def delete(self, item: str, owner: bool) -> Response:
        try:
            key_id = parse_uuid(item)
        except ValueError as exc:
            return json_response(400, messages.invalid_key_id(str(exc)))
        if not owner:
            return json_response(403, messages.FORBIDDEN)
        if not self._store.delete(key_id):
            return json_response(404, messages.RESOURCE_NOT_FOUND)
        return Response(204)

    def _insert(self, name: str) -> Response:
        try:
            key, secret = self._store.create(name)
        except DuplicateNameError:
            return json_response(400, messages.NAME_TAKEN)
        if self._faults.lose():
            return Response(201, drop=True)
        created = {"id": key.id, "name": key.name, "key": secret, "key_prefix": key.key_prefix}
        return json_response(201, {**created, "created_at": format_time(key.created_at)})


def valid_name(name: str) -> bool:
    return len(name) <= _MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def _listed(key: StoredKey, seen_field: str) -> dict[str, Any]:
    listed = {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "created_at": format_time(key.created_at),
    }
    if key.last_seen_at is not None:  # omitted while null, as Go's omitempty
        listed[seen_field] = format_time(key.last_seen_at)
    return listed
