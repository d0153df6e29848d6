"""Adopting a deployment: the manifest `keysync export` writes for the keys Coder already has.

It must adopt without surprises: its first plan destroys and rotates nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from keysync.errors import UsageError
from keysync.generations import generation_of, logical_name
from keysync.keys import CreatedKey, LiveKey, SecretRecord
from keysync.manifest.model import Manifest
from keysync.secret import Secret

HEADER = "# yaml-language-server: $schema=schemas/keysync.schema.json\n"
KEEP_COMMENT = (
    "  # The sink does not hold these keys' secrets yet: keep them rather than replace them.\n"
    "  # Import the secrets you hold (`keysync import NAME < secret-file`), then choose\n"
    "  # replace (rotate the rest) or fail.\n"
)
IGNORE_COMMENT = (
    "  # Named like a rotation generation of a listed key (NAME-rK): left alone. If they are\n"
    "  # one, give that key `rotation: overlap` and remove them from this list.\n"
)


def export_document(
    live: Iterable[LiveKey], coderd: dict[str, str], manifest: Manifest | None
) -> dict[str, Any]:
    """The manifest of the live keys (those an existing manifest manages, when there is one)."""
    names = sorted({key.name for key in live if manifest is None or manifest.policy.manages(key.name)})
    look_alikes = [name for name in names if (parsed := generation_of(name)) and parsed[0] in names]
    policy: dict[str, Any] = {}
    if manifest is not None and manifest.policy.manage:
        policy["manage"] = list(manifest.policy.manage)
    if look_alikes:
        policy["ignore"] = look_alikes
    policy["on_missing_secret"] = "keep"
    keys = [name for name in names if name not in look_alikes]
    return {"version": 1, "coderd": coderd, "policy": policy, "keys": keys}


def export_yaml(document: dict[str, Any]) -> str:
    """The document as YAML, with the comments that say why its policy is what it is."""
    text = yaml.safe_dump(document, sort_keys=False)
    text = text.replace("  on_missing_secret: keep\n", KEEP_COMMENT + "  on_missing_secret: keep\n", 1)
    text = text.replace("  ignore:\n", IGNORE_COMMENT + "  ignore:\n", 1)
    return HEADER + text


def is_key_shaped(text: str) -> bool:
    """A gateway key as Coder makes them: 43 characters of [0-9A-Za-z], or `cgw_` and 39 of them."""
    body = text[4:] if text.startswith("cgw_") else text
    return len(text) == 43 and body.isascii() and body.isalnum()


def imported_record(
    name: str, secret: Secret, live: list[LiveKey], manifest: Manifest, url: str
) -> SecretRecord:
    """The sink record of a secret someone already holds for the live key `name`, once it is
    checked to be that key's; every refusal names the key and never shows the secret."""
    logical = name if name in manifest.names() else logical_name(name)
    if logical not in manifest.names() or not manifest.policy.manages(name):
        raise UsageError(
            f"import {name}: the manifest does not manage a key {name!r}; list it under keys first"
        )
    key = next((key for key in live if key.name == name), None)
    if key is None:
        raise UsageError(f"import {name}: Coder has no key named {name!r} at {url}; nothing was written")
    if not is_key_shaped(secret.reveal()):
        raise UsageError(
            f"import {name}: stdin holds no gateway key (43 letters and digits); nothing was written"
        )
    if secret.reveal()[:11] != key.key_prefix:
        raise UsageError(
            f"import {name}: the secret on stdin is not the live key {name!r}'s: its first 11 characters "
            f"differ from the key_prefix {key.key_prefix}; nothing was written"
        )
    return SecretRecord.for_created(CreatedKey(key, secret), url, logical)
