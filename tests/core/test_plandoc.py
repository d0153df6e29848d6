"""The plan document (JSON, --out), its fingerprints, and what a stale saved plan explains."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysync import __version__
from keysync.errors import StalePlanError
from keysync.keys import LiveKey, SecretRecord, SinkView, StoredEntry
from keysync.manifest.model import Manifest
from keysync.plan import Plan, PlanRequest, build_plan
from keysync.plandoc import (
    SavedPlan,
    World,
    check_saved_actions,
    check_saved_plan,
    parse_saved_plan,
    plan_document,
)
from keysync.secret import Secret

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
URL = "https://coder.example.com"
API = "coderd-keys"
MANIFEST_SHA = "a" * 64
CONTRACT_FIELDS = {
    "format_version",
    "keysync_version",
    "coderd_url",
    "api",
    "manifest_sha256",
    "live_fingerprint",
    "sink_fingerprint",
    "actions",
    "summary",
    "applyable",
    "needs_force",
    "warnings",
}
# "Saved plans record the URL, API generation, --target and --replace they were made with."
SAVED_PLAN_FIELDS = {"targets", "replace"}
# README: with `rotation: overlap`, previous generations are listed in a top-level "waiting" list.
OVERLAP_FIELDS = {"waiting"}
NO_REQUEST = PlanRequest()
SECRETS = {
    name: f"{name[:3].upper()}sEcReT{i}" + "x" * (43 - 10 - len(str(i))) for i, name in enumerate("abcd")
}


def key(name: str, /, **changes: Any) -> LiveKey:
    fields: dict[str, Any] = {
        "id": f"00000000-0000-0000-0000-00000000000{ord(name[0]) % 10}",
        "name": name,
        "key_prefix": SECRETS.get(name, name * 11)[:11],
        "created_at": NOW - timedelta(days=3),
        "last_used_at": NOW - timedelta(hours=2),
    }
    fields.update(changes)
    return LiveKey(**fields)


def record(name: str, /, secret: str | None = None, **changes: str) -> SecretRecord:
    value = secret or SECRETS[name]
    fields = {
        "name": name,
        "key": Secret(value),
        "id": key(name).id,
        "key_prefix": value[:11],
        "created_at": "2025-05-29T12:00:00Z",
        "coderd_url": URL,
    }
    fields.update(changes)
    return SecretRecord(**fields)  # type: ignore[arg-type]


def view(*records: SecretRecord) -> SinkView:
    return SinkView({r.name: StoredEntry.of(r) for r in records})


def world(live: list[LiveKey], sink: SinkView, **changes: str) -> World:
    args = {"coderd_url": URL, "api": API, "manifest_sha256": MANIFEST_SHA, **changes}
    return World.of(args["coderd_url"], args["api"], args["manifest_sha256"], live, sink)


def a_plan() -> tuple[Plan, World]:
    """A plan with one of each action: create c, delete d, replace b (secret missing)."""
    manifest = Manifest.model_validate({"version": 1, "keys": ["a", "b", "c"]})
    live = [key("a"), key("b"), key("d")]
    sink = view(record("a"), record("d"))
    plan = build_plan(manifest, live, sink, NOW, URL)
    return plan, world(live, sink)


def saved_document(plan: Plan, w: World, request: PlanRequest = NO_REQUEST) -> dict[str, Any]:
    """A plan as `plan --out` writes it."""
    data: dict[str, Any] = json.loads(json.dumps(plan_document(plan, w, request, snapshot=True)))
    return data


def saved(plan: Plan, w: World, request: PlanRequest = NO_REQUEST) -> SavedPlan:
    """A plan as `apply PLANFILE` reads it back."""
    return parse_saved_plan(json.dumps(saved_document(plan, w, request)).encode())


# --- the document ------------------------------------------------------------------------------


def test_plan_json_has_exactly_the_contract_fields() -> None:
    plan, w = a_plan()
    document = plan_document(plan, w, PlanRequest())
    assert set(document) == CONTRACT_FIELDS | SAVED_PLAN_FIELDS | OVERLAP_FIELDS
    assert document["waiting"] == []  # rotation: replace leaves no previous generation
    assert document["format_version"] == 1
    assert document["keysync_version"] == __version__
    assert document["coderd_url"] == URL
    assert document["api"] == API
    assert document["manifest_sha256"] == MANIFEST_SHA
    assert document["live_fingerprint"] == w.live_fingerprint
    assert document["sink_fingerprint"] == w.sink_fingerprint
    assert document["summary"] == {"create": 1, "delete": 1, "replace": 1, "rotate": 0, "retire": 0}
    assert isinstance(document["warnings"], list)
    assert all(isinstance(w, str) for w in document["warnings"])


def test_actions_name_the_live_key_only_when_one_is_involved() -> None:
    plan, w = a_plan()
    actions = {a["name"]: a for a in plan_document(plan, w, PlanRequest())["actions"]}
    assert actions["c"] == {"action": "create", "name": "c", "reason": "missing"}
    assert actions["d"] == {
        "action": "delete",
        "name": "d",
        "id": key("d").id,
        "key_prefix": key("d").key_prefix,
        "live_name": "d",
        "reason": "not-in-manifest",
    }
    assert actions["b"] == {
        "action": "replace",
        "name": "b",
        "id": key("b").id,
        "key_prefix": key("b").key_prefix,
        "live_name": "b",
        "reason": "secret-missing",
    }


def test_saved_plan_records_targets_and_replace() -> None:
    plan, w = a_plan()
    document = plan_document(plan, w, PlanRequest(targets=frozenset({"b", "a"}), replace=frozenset({"a"})))
    assert document["targets"] == ["a", "b"]
    assert document["replace"] == ["a"]


def test_plan_json_never_holds_a_secret() -> None:
    plan, w = a_plan()
    for snapshot in (False, True):
        text = json.dumps(plan_document(plan, w, PlanRequest(), snapshot=snapshot))
        for secret in SECRETS.values():
            assert secret not in text
            assert secret[11:] not in text


def test_plan_json_round_trips_through_json() -> None:
    plan, w = a_plan()
    document = plan_document(plan, w, PlanRequest(), snapshot=True)
    assert json.loads(json.dumps(document)) == document


# --- fingerprints ------------------------------------------------------------------------------


def test_fingerprints_ignore_last_use_and_heartbeat() -> None:
    sink = view(record("a"))
    base = world([key("a")], sink)
    used = world([key("a", last_used_at=NOW, last_heartbeat_at=NOW - timedelta(seconds=5))], sink)
    never = world([key("a", last_used_at=None)], sink)
    assert base.live_fingerprint == used.live_fingerprint == never.live_fingerprint


def test_fingerprints_do_not_depend_on_listing_order() -> None:
    sink = view(record("a"), record("b"))
    reversed_sink = SinkView(dict(reversed(list(sink.entries.items()))))
    assert (
        world([key("a"), key("b")], sink).live_fingerprint
        == world([key("b"), key("a")], sink).live_fingerprint
    )
    assert world([], sink).sink_fingerprint == world([], reversed_sink).sink_fingerprint


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "11111111-1111-1111-1111-111111111111"},
        {"name": "renamed"},
        {"key_prefix": "zzzzzzzzzzz"},
        {"created_at": NOW - timedelta(days=3, seconds=1)},
    ],
)
def test_live_fingerprint_changes_with_id_name_prefix_and_creation(changes: dict[str, Any]) -> None:
    sink = view(record("a"))
    assert world([key("a")], sink).live_fingerprint != world([key("a", **changes)], sink).live_fingerprint


def test_live_fingerprint_changes_when_a_key_appears() -> None:
    sink = view()
    assert world([key("a")], sink).live_fingerprint != world([key("a"), key("b")], sink).live_fingerprint


@pytest.mark.parametrize(
    "changed",
    [
        lambda: record("a", name="renamed"),
        lambda: record("a", id="99999999-9999-9999-9999-999999999999"),
        lambda: record("a", key_prefix="zzzzzzzzzzz"),
    ],
)
def test_sink_fingerprint_changes_with_name_id_and_prefix(changed: Any) -> None:
    before = world([], view(record("a"))).sink_fingerprint
    assert before != world([], view(changed())).sink_fingerprint


def test_sink_fingerprint_changes_when_a_record_vanishes() -> None:
    assert (
        world([], view(record("a"), record("b"))).sink_fingerprint
        != world([], view(record("a"))).sink_fingerprint
    )


# --- a saved plan against a changed world ------------------------------------------------------


def test_an_unchanged_world_accepts_the_saved_plan() -> None:
    plan, w = a_plan()
    check_saved_plan(saved(plan, w), w)


def test_last_use_moving_does_not_invalidate_a_saved_plan() -> None:
    plan, w = a_plan()
    moved = world(
        [key("a", last_used_at=NOW), key("b", last_heartbeat_at=NOW), key("d")],
        view(record("a"), record("d")),
    )
    check_saved_plan(saved(plan, w), moved)


def names_after(message: str, word: str, name: str) -> bool:
    """Whether `name` is listed after `word` in the same clause, e.g. "appeared e, f"."""
    return re.search(rf"{word}\b[^;.]*?\b{re.escape(name)}\b", message) is not None


def stale_message(saved_plan: SavedPlan, now: World) -> str:
    with pytest.raises(StalePlanError) as caught:
        check_saved_plan(saved_plan, now)
    return str(caught.value)


def test_a_key_that_appeared_is_named() -> None:
    plan, w = a_plan()
    now = world([key("a"), key("b"), key("d"), key("e")], view(record("a"), record("d")))
    message = stale_message(saved(plan, w), now)
    assert names_after(message, "appeared", "e"), message


def test_a_key_that_vanished_is_named() -> None:
    plan, w = a_plan()
    now = world([key("a"), key("d")], view(record("a"), record("d")))
    message = stale_message(saved(plan, w), now)
    assert names_after(message, "vanished", "b"), message


def test_a_key_that_changed_is_named() -> None:
    plan, w = a_plan()
    replaced = key("d", id="99999999-9999-9999-9999-999999999999", key_prefix="zzzzzzzzzzz")
    now = world([key("a"), key("b"), replaced], view(record("a"), record("d")))
    message = stale_message(saved(plan, w), now)
    assert names_after(message, "changed", "d"), message
    assert "appeared" not in message and "vanished" not in message


def test_a_sink_change_is_explained() -> None:
    plan, w = a_plan()
    now = world([key("a"), key("b"), key("d")], view(record("a"), record("d"), record("b")))
    message = stale_message(saved(plan, w), now)
    assert "sink" in message and names_after(message, "appeared", "b"), message
    assert "live keys" not in message


def test_a_manifest_change_is_explained() -> None:
    plan, w = a_plan()
    now = world([key("a"), key("b"), key("d")], view(record("a"), record("d")), manifest_sha256="b" * 64)
    message = stale_message(saved(plan, w), now)
    assert "manifest" in message


def test_a_different_coderd_or_api_is_explained() -> None:
    plan, w = a_plan()
    live, sink = [key("a"), key("b"), key("d")], view(record("a"), record("d"))
    assert "https://elsewhere.example.com" in stale_message(
        saved(plan, w), world(live, sink, coderd_url="https://elsewhere.example.com")
    )
    assert "ai-gateway-keys" in stale_message(saved(plan, w), world(live, sink, api="ai-gateway-keys"))


def test_every_difference_is_explained_at_once() -> None:
    plan, w = a_plan()
    now = world([key("a"), key("d"), key("e")], view(record("a")), manifest_sha256="b" * 64)
    message = stale_message(saved(plan, w), now)
    assert "manifest" in message and "sink" in message, message
    assert names_after(message, "appeared", "e") and names_after(message, "vanished", "b"), message
    assert names_after(message, "vanished", "d"), message


def test_a_stale_plan_explanation_holds_no_secret() -> None:
    plan, w = a_plan()
    now = world([key("a")], view(record("a", secret="NEWsEcReTxx" + "y" * 32)))
    message = stale_message(saved(plan, w), now)
    for secret in [*SECRETS.values(), "NEWsEcReTxx" + "y" * 32]:
        assert secret not in message


# --- a damaged saved plan: one ValueError, or a plan apply reads without failing ------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key_, item in items:
        found += places(item, (*path, key_))
    return found


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_damage_to_a_saved_plan_is_refused_or_harmless(data: st.DataObject) -> None:
    plan, w = a_plan()
    document = saved_document(plan, w)
    path = data.draw(st.sampled_from(places(document)[1:]))
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(JSON_VALUES)
    text = json.dumps(document)
    raw = text[: data.draw(st.integers(0, len(text)))] if data.draw(st.booleans()) else text

    try:
        parsed = parse_saved_plan(raw.encode())
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(parsed, SavedPlan)
    checks: list[Callable[[], object]] = [
        lambda: check_saved_plan(parsed, w),
        lambda: check_saved_actions(parsed, plan),
    ]
    for check in checks:
        with contextlib.suppress(StalePlanError):  # the one way apply refuses a readable plan
            check()


def test_a_saved_action_whose_name_was_edited_is_refused_even_with_its_live_name_kept() -> None:
    plan, w = a_plan()
    document = saved_document(plan, w)
    destroying = [a for a in document["actions"] if a.get("live_name")]
    assert destroying, "the plan must destroy a live key for this test"
    destroying[0]["name"] = "someone-else"
    edited = parse_saved_plan(json.dumps(document).encode())
    with pytest.raises(StalePlanError, match="no longer the one reviewed") as caught:
        check_saved_actions(edited, plan)
    assert "someone-else" in str(caught.value)
    check_saved_actions(saved(plan, w), plan)  # the unedited plan still matches
