"""Rotation without downtime, in the pure planner: generations, waiting and retire timing,
orphans, when a rotation may start, guards, and the JSON a plan carries about all of it.

Every test passes a fixed `now`; times are built from it, so nothing here depends on the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysync.errors import UnsafePlanError
from keysync.generations import generation_name, generation_of, group_generations
from keysync.keys import LiveKey, SinkView, StoredEntry
from keysync.manifest.model import Manifest
from keysync.plan import Plan, PlanRequest, build_plan
from keysync.plandoc import World, plan_document
from keysync.render import render_markdown, render_text
from keysync.timefmt import rfc3339

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
URL = "https://coder.example.com"
GRACE = timedelta(minutes=15)  # the default overlap_grace
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


def prefix_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:11]


def gen(name: str, *, age: timedelta = timedelta(days=1), used: timedelta | None = None) -> LiveKey:
    """A live key (a generation) created `age` ago and last used `used` ago (None: never)."""
    return LiveKey(
        id=f"id-{name}",
        name=name,
        key_prefix=prefix_of(name),
        created_at=NOW - age,
        last_used_at=NOW - used if used is not None else None,
    )


def sink(**held: LiveKey | str | None) -> SinkView:
    """The sink's record per logical name: holding that live key's secret, or a foreign prefix."""
    entries = {}
    for name, what in held.items():
        if what is None:
            continue
        secret_prefix = what.key_prefix if isinstance(what, LiveKey) else what
        key_id = what.id if isinstance(what, LiveKey) else "id-unknown"
        entries[name] = StoredEntry(name, key_id, secret_prefix, secret_prefix, URL)
    return SinkView(entries)


def manifest(keys: list[Any], **policy: Any) -> Manifest:
    policy.setdefault("max_deletes", 100)
    policy.setdefault("rotation", "overlap")
    return Manifest.model_validate({"version": 1, "policy": policy, "keys": keys})


def plan_for(
    m: Manifest,
    keys: Iterable[LiveKey],
    view: SinkView,
    *,
    now: datetime = NOW,
    targets: Iterable[str] = (),
    replace: Iterable[str] = (),
    force: bool = False,
) -> Plan:
    request = PlanRequest(frozenset(targets), frozenset(replace), force)
    return build_plan(m, list(keys), view, now, URL, request)


def acts(plan: Plan) -> set[tuple[str, str, str, str | None]]:
    """(action, logical name, reason, the live key it destroys or the generation it creates)."""
    return {
        (a.action, a.name, a.reason, a.live.name if a.live is not None else a.generation)
        for a in plan.actions
    }


def waiting(plan: Plan) -> dict[str, datetime]:
    return {w.key.name: w.retire_after for w in plan.waiting}


# --- generations: `N`, `N-r2`, `N-r3`... stand for the manifest key `N` ---------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gw-r2", ("gw", 2)),
        ("gw-r10", ("gw", 10)),
        ("gateway-us-east-r3", ("gateway-us-east", 3)),
        ("gw-r2-r4", ("gw-r2", 4)),
        ("gw", None),
        ("gw-r1", None),  # generation 1 is the plain name
        ("gw-r0", None),
        ("gw-r02", None),
        ("gw-rx", None),
        ("gw-2", None),
        ("r2", None),
    ],
)
def test_generation_of_parses_only_real_generation_suffixes(
    name: str, expected: tuple[str, int] | None
) -> None:
    assert generation_of(name) == expected


def test_generation_names_round_trip() -> None:
    assert generation_name("gw", 1) == "gw"
    assert generation_name("gw", 2) == "gw-r2"
    for number in (2, 3, 17):
        assert generation_of(generation_name("gw", number)) == ("gw", number)


def test_live_keys_are_grouped_under_their_logical_name_oldest_generation_first() -> None:
    keys = [gen(n) for n in ("gw-r3", "other", "gw", "gw-r1", "gwx-r2", "gw-r2", "stray-r2", "gw-r02")]

    groups, rest = group_generations(["gw", "other", "unused"], keys)

    assert [(g.number, g.key.name) for g in groups["gw"]] == [(1, "gw"), (2, "gw-r2"), (3, "gw-r3")]
    assert [g.key.name for g in groups["other"]] == ["other"]
    assert groups["unused"] == []
    # Not generations of a listed name: they are extra keys, deleted by prune like any other.
    assert set(rest) == {"gw-r1", "gwx-r2", "stray-r2", "gw-r02"}


def test_a_live_generation_without_generation_one_still_belongs_to_its_key() -> None:
    r3 = gen("gw-r3", age=timedelta(days=2))
    plan = plan_for(manifest(["gw"]), [r3], sink(gw=r3))
    assert plan.actions == [] and plan.waiting == []
    assert not plan.has_changes


def test_hand_made_keys_named_like_generations_of_a_replace_key_are_plain_deletes() -> None:
    edge, r2, r7 = gen("edge"), gen("edge-r2", age=timedelta(days=3)), gen("edge-r7")
    plan = plan_for(manifest(["edge"], rotation="replace"), [edge, r2, r7], sink(edge=edge))
    assert acts(plan) == {
        ("delete", "edge-r2", "not-in-manifest", "edge-r2"),
        ("delete", "edge-r7", "not-in-manifest", "edge-r7"),
    }
    assert plan.waiting == []


def test_a_replace_key_missing_its_secret_replaces_itself_and_deletes_its_look_alikes() -> None:
    edge, r7 = gen("edge"), gen("edge-r7")
    plan = plan_for(manifest(["edge"], rotation="replace"), [edge, r7], sink())
    assert acts(plan) == {
        ("replace", "edge", "secret-missing", "edge"),
        ("delete", "edge-r7", "not-in-manifest", "edge-r7"),
    }


def test_a_generation_the_sink_records_belongs_to_a_replace_key() -> None:
    # A key that rotated with overlap before switching to replace: the sink holds gw-r2 as gw's.
    gw, r2 = gen("gw", age=timedelta(days=2)), gen("gw-r2")
    plan = plan_for(manifest(["gw"], rotation="replace"), [gw, r2], sink(gw=r2))
    assert acts(plan) == {("retire", "gw", "superseded", "gw")}


def test_an_overlap_key_claims_its_generations_even_when_the_sink_does_not_hold_them() -> None:
    gw, r2 = gen("gw", age=timedelta(days=2)), gen("gw-r2")
    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=gw))
    assert acts(plan) == {("retire", "gw", "orphaned", "gw-r2")}


# --- step 1: rotate ------------------------------------------------------------------------------


def test_an_overlap_key_in_sync_needs_nothing() -> None:
    gw = gen("gw", used=SECOND)
    plan = plan_for(manifest(["gw"], rotate_after="90d"), [gw], sink(gw=gw))
    assert plan.actions == [] and plan.waiting == [] and plan.warnings == []


def test_rotation_due_rotates_to_the_next_generation_and_keeps_the_old_key() -> None:
    gw = gen("gw", age=timedelta(days=91), used=SECOND)
    plan = plan_for(manifest(["gw"], rotate_after="90d"), [gw], sink(gw=gw))

    assert acts(plan) == {("rotate", "gw", "rotation-due", "gw-r2")}
    (rotate,) = plan.actions
    assert rotate.live is None and not rotate.destroys  # the old key keeps working
    assert rotate.creates and rotate.live_name == "gw-r2"
    assert plan.needs_force == []
    assert plan.summary() == {"create": 0, "delete": 0, "replace": 0, "rotate": 1, "retire": 0}


def test_the_next_generation_follows_the_newest_live_one() -> None:
    r4 = gen("gw-r4", age=timedelta(days=91))
    plan = plan_for(manifest(["gw"], rotate_after="90d"), [r4], sink(gw=r4))
    assert acts(plan) == {("rotate", "gw", "rotation-due", "gw-r5")}


def test_rotation_due_is_judged_on_the_newest_generation() -> None:
    r2 = gen("gw-r2", age=timedelta(days=10))
    plan = plan_for(manifest(["gw"], rotate_after="90d"), [r2], sink(gw=r2))
    assert plan.actions == []


def test_a_requested_rotation_rotates() -> None:
    gw = gen("gw")
    plan = plan_for(
        manifest(["gw", "other"]), [gw, gen("other")], sink(gw=gw, other=gen("other")), replace=["gw"]
    )
    assert acts(plan) == {("rotate", "gw", "requested", "gw-r2")}


@pytest.mark.parametrize(("state", "reason"), [("missing", "secret-missing"), ("stale", "secret-stale")])
def test_a_lost_secret_rotates_at_once_even_with_a_previous_generation_waiting(
    state: str, reason: str
) -> None:
    gw = gen("gw", age=timedelta(days=2), used=SECOND)
    r2 = gen("gw-r2", age=MINUTE, used=SECOND)
    view = sink() if state == "missing" else sink(gw="ffffffffff0")

    plan = plan_for(manifest(["gw"]), [gw, r2], view)

    assert acts(plan) == {("rotate", "gw", reason, "gw-r3")}
    # The replicas may still hold the previous secret: it waits out its grace.
    assert set(waiting(plan)) == {"gw"}


@pytest.mark.parametrize("state", ["missing", "stale"])
def test_a_lost_secret_of_a_single_generation_rotates_at_once(state: str) -> None:
    gw = gen("gw", used=SECOND)
    view = sink() if state == "missing" else sink(gw="ffffffffff0")
    plan = plan_for(manifest(["gw"]), [gw], view)
    assert acts(plan) == {("rotate", "gw", f"secret-{state}", "gw-r2")}
    assert plan.waiting == []  # gw becomes previous once gw-r2 exists


def test_on_missing_secret_still_governs_overlap_keys() -> None:
    gw = gen("gw")
    keep = plan_for(manifest(["gw"], on_missing_secret="keep"), [gw], sink())
    fail = plan_for(manifest(["gw"], on_missing_secret="fail"), [gw], sink())
    assert keep.actions == [] and any("gw" in w for w in keep.warnings)
    assert fail.actions == [] and any("gw" in f for f in fail.failures)


@pytest.mark.parametrize("reason", ["rotation-due", "requested"])
def test_a_due_or_requested_rotation_waits_until_the_previous_generation_is_retired(reason: str) -> None:
    gw = gen("gw", age=timedelta(days=200), used=SECOND)
    r2 = gen("gw-r2", age=timedelta(days=100))
    m = manifest(["gw"], rotate_after="90d" if reason == "rotation-due" else None)

    plan = plan_for(m, [gw, r2], sink(gw=r2), replace=["gw"] if reason == "requested" else [])

    assert plan.actions == []
    assert set(waiting(plan)) == {"gw"}
    assert any("gw" in w and "wait" in w and reason in w for w in plan.warnings), plan.warnings


def test_a_forced_plan_retires_the_previous_generation_but_the_rotation_still_waits_its_turn() -> None:
    gw = gen("gw", age=timedelta(days=200), used=SECOND)
    r2 = gen("gw-r2", age=timedelta(days=100))
    plan = plan_for(manifest(["gw"], rotate_after="90d"), [gw, r2], sink(gw=r2), force=True)
    # Never two extra generations: the next generation comes once this one is gone.
    assert acts(plan) == {("retire", "gw", "superseded", "gw")}


def test_once_the_previous_generation_is_retired_a_due_rotation_goes_ahead() -> None:
    r2 = gen("gw-r2", age=timedelta(days=100))
    plan = plan_for(manifest(["gw"], rotate_after="90d"), [r2], sink(gw=r2))
    assert acts(plan) == {("rotate", "gw", "rotation-due", "gw-r3")}


# --- step 2: retire, and waiting until then -------------------------------------------------------


def test_a_previous_generation_in_use_waits_until_grace_after_its_last_use() -> None:
    gw = gen("gw", age=timedelta(days=30), used=30 * SECOND)
    r2 = gen("gw-r2", age=timedelta(hours=2))

    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2))

    assert plan.actions == []
    assert waiting(plan) == {"gw": NOW - 30 * SECOND + GRACE}
    (wait,) = plan.waiting
    assert wait.name == "gw" and wait.key == gw
    assert not plan.has_changes  # waiting alone is nothing to apply


def test_a_previous_generation_waits_grace_after_its_successor_even_when_unused() -> None:
    gw = gen("gw", age=timedelta(days=30), used=timedelta(days=3))
    r2 = gen("gw-r2", age=5 * MINUTE)
    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2))
    assert plan.actions == []
    assert waiting(plan) == {"gw": NOW - 5 * MINUTE + GRACE}


def test_a_never_used_previous_generation_waits_grace_after_its_successor() -> None:
    gw = gen("gw", age=timedelta(days=30))
    r2 = gen("gw-r2", age=5 * MINUTE)
    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2))
    assert waiting(plan) == {"gw": NOW - 5 * MINUTE + GRACE}


@pytest.mark.parametrize(
    ("successor_age", "used", "retire_after"),
    [
        # last use is the later bound
        (timedelta(hours=1), 10 * MINUTE, NOW + 5 * MINUTE),
        # the successor's creation is the later bound
        (10 * MINUTE, timedelta(hours=1), NOW + 5 * MINUTE),
        # never used: only the successor's creation counts
        (10 * MINUTE, None, NOW + 5 * MINUTE),
        # both bounds equal
        (10 * MINUTE, 10 * MINUTE, NOW + 5 * MINUTE),
    ],
)
@pytest.mark.parametrize("offset", [-SECOND, timedelta(microseconds=-1), timedelta(0), SECOND])
def test_retire_happens_exactly_when_both_grace_bounds_have_passed(
    successor_age: timedelta, used: timedelta | None, retire_after: datetime, offset: timedelta
) -> None:
    gw = gen("gw", age=timedelta(days=30), used=used)
    r2 = gen("gw-r2", age=successor_age)
    now = retire_after + offset

    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2), now=now)

    if offset < timedelta(0):
        assert plan.actions == []
        assert waiting(plan) == {"gw": retire_after}
    else:
        assert acts(plan) == {("retire", "gw", "superseded", "gw")}
        assert plan.waiting == []


def test_a_heartbeat_counts_as_use() -> None:
    gw = gen("gw", age=timedelta(days=30)).model_copy(update={"last_heartbeat_at": NOW - MINUTE})
    r2 = gen("gw-r2", age=timedelta(hours=2))
    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2))
    assert waiting(plan) == {"gw": NOW - MINUTE + GRACE}


def test_overlap_grace_per_key_overrides_the_policy() -> None:
    keys = [gen("a", used=3 * MINUTE), gen("a-r2", age=timedelta(hours=1))]
    keys += [gen("b", used=3 * MINUTE), gen("b-r2", age=timedelta(hours=1))]
    m = manifest([{"name": "a", "overlap_grace": "2m"}, "b"], overlap_grace="5m")

    plan = plan_for(m, keys, sink(a=keys[1], b=keys[3]))

    assert acts(plan) == {("retire", "a", "superseded", "a")}
    assert waiting(plan) == {"b": NOW - 3 * MINUTE + 5 * MINUTE}


def test_per_key_rotation_overrides_the_policy() -> None:
    keys = [gen("ov", age=timedelta(days=100)), gen("rp", age=timedelta(days=100))]
    m = manifest([{"name": "ov", "rotation": "overlap"}, "rp"], rotation="replace", rotate_after="90d")
    plan = plan_for(m, keys, sink(ov=keys[0], rp=keys[1]))
    assert acts(plan) == {("rotate", "ov", "rotation-due", "ov-r2"), ("replace", "rp", "rotation-due", "rp")}


def test_force_retires_a_waiting_generation_early() -> None:
    gw = gen("gw", age=timedelta(days=30), used=SECOND)
    r2 = gen("gw-r2", age=MINUTE)
    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2), force=True)
    assert acts(plan) == {("retire", "gw", "superseded", "gw")}
    assert plan.waiting == []


def test_every_previous_generation_past_its_grace_is_retired() -> None:
    keys = [gen("gw", age=timedelta(days=9)), gen("gw-r2", age=timedelta(days=8))]
    keys += [gen("gw-r3", age=timedelta(days=7))]
    plan = plan_for(manifest(["gw"]), keys, sink(gw=keys[2]))
    assert acts(plan) == {("retire", "gw", "superseded", "gw"), ("retire", "gw", "superseded", "gw-r2")}


# --- orphans: a generation created but never delivered -------------------------------------------


def test_a_generation_newer_than_the_one_the_sink_holds_is_retired_as_orphaned() -> None:
    gw = gen("gw", age=timedelta(days=100), used=SECOND)
    r2 = gen("gw-r2", age=SECOND)  # created, then the apply died before the sink write

    plan = plan_for(manifest(["gw"], rotate_after="90d"), [gw, r2], sink(gw=gw), replace=["gw"])

    assert acts(plan) == {("retire", "gw", "orphaned", "gw-r2")}
    assert plan.waiting == []  # gw is what the sink holds: it is current, not previous
    assert plan.needs_force == []  # an orphan is in no one's hands: no guard holds it back


def test_an_orphan_beside_a_waiting_previous_generation() -> None:
    gw = gen("gw", age=timedelta(days=30), used=SECOND)
    r2 = gen("gw-r2", age=MINUTE)
    r3 = gen("gw-r3", age=SECOND)
    plan = plan_for(manifest(["gw"]), [gw, r2, r3], sink(gw=r2))
    assert acts(plan) == {("retire", "gw", "orphaned", "gw-r3")}
    assert waiting(plan) == {"gw": NOW - SECOND + GRACE}


def test_after_the_orphan_is_retired_the_rotation_happens_again() -> None:
    gw = gen("gw", age=timedelta(days=100))
    plan = plan_for(manifest(["gw"], rotate_after="90d"), [gw], sink(gw=gw))
    assert acts(plan) == {("rotate", "gw", "rotation-due", "gw-r2")}


# --- the lifecycle, step by step ----------------------------------------------------------------


def test_a_rotation_runs_its_course_across_applies() -> None:
    """rotate, wait while replicas use the old secret, retire, then nothing: with moving `now`."""
    m = manifest(["gw"], overlap_grace="2m")
    gw = gen("gw", age=timedelta(days=1), used=SECOND)

    first = plan_for(m, [gw], sink(gw=gw), replace=["gw"])
    assert acts(first) == {("rotate", "gw", "requested", "gw-r2")}

    r2 = LiveKey(id="id-gw-r2", name="gw-r2", key_prefix=prefix_of("gw-r2"), created_at=NOW)
    view = sink(gw=r2)
    # A replica keeps presenting the old secret for a minute, then restarts with the new one.
    used = gw.model_copy(update={"last_used_at": NOW + MINUTE})
    later = NOW + MINUTE + 30 * SECOND
    second = plan_for(m, [used, r2], view, now=later, replace=["gw"])
    assert second.actions == []
    assert waiting(second) == {"gw": NOW + 3 * MINUTE}

    third = plan_for(m, [used, r2], view, now=NOW + 3 * MINUTE)
    assert acts(third) == {("retire", "gw", "superseded", "gw")}

    fourth = plan_for(m, [r2], view, now=NOW + 3 * MINUTE)
    assert not fourth.has_changes and fourth.waiting == []


# --- guards -------------------------------------------------------------------------------------


def test_retire_counts_toward_max_deletes() -> None:
    keys = [gen("a", age=timedelta(days=9)), gen("a-r2", age=timedelta(days=8))]
    keys += [gen("b", age=timedelta(days=9)), gen("b-r2", age=timedelta(days=8))]
    m = manifest(["a", "b"], max_deletes=1)

    plan = plan_for(m, keys, sink(a=keys[1], b=keys[3]))

    assert {a.action for a in plan.actions} == {"retire"}
    assert any("max_deletes" in reason for reason in plan.needs_force), plan.needs_force
    with pytest.raises(UnsafePlanError):
        plan.raise_if_unsafe(force=False)
    plan.raise_if_unsafe(force=True)


def test_an_orphan_retire_counts_toward_max_deletes() -> None:
    gw, r2 = gen("gw"), gen("gw-r2", age=SECOND)
    plan = plan_for(manifest(["gw"], max_deletes=0), [gw, r2], sink(gw=gw))
    assert any("max_deletes" in reason for reason in plan.needs_force), plan.needs_force


def test_rotations_destroy_nothing_so_they_do_not_count_toward_max_deletes() -> None:
    keys = [gen(n, age=timedelta(days=100)) for n in ("a", "b", "c")]
    plan = plan_for(
        manifest(["a", "b", "c"], rotate_after="90d", max_deletes=0),
        keys,
        sink(a=keys[0], b=keys[1], c=keys[2]),
    )
    assert {a.action for a in plan.actions} == {"rotate"}
    assert plan.needs_force == []


@pytest.mark.parametrize("trigger", ["rotation-due", "secret-missing", "secret-stale", "requested"])
def test_the_in_use_guard_never_blocks_a_rotate(trigger: str) -> None:
    gw = gen("gw", age=timedelta(days=100), used=SECOND)
    held = {"secret-missing": sink(), "secret-stale": sink(gw="ffffffffff0")}.get(trigger, sink(gw=gw))
    replace = ["gw"] if trigger == "requested" else []

    overlap = plan_for(manifest(["gw"], rotate_after="90d"), [gw], held, replace=replace)
    replaced = plan_for(manifest(["gw"], rotate_after="90d", rotation="replace"), [gw], held, replace=replace)

    assert acts(overlap) == {("rotate", "gw", trigger, "gw-r2")}
    assert overlap.needs_force == [] and overlap.guards == []
    if trigger != "requested":  # the contrast: replacing a key in use needs --force
        assert any("10 minutes" in reason for reason in replaced.needs_force)


def test_a_forced_early_retire_of_a_key_in_use_is_planned_only_with_force() -> None:
    gw = gen("gw", age=timedelta(days=30), used=SECOND)
    r2 = gen("gw-r2", age=MINUTE)
    assert plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2)).actions == []
    forced = plan_for(manifest(["gw"]), [gw, r2], sink(gw=r2), force=True)
    assert acts(forced) == {("retire", "gw", "superseded", "gw")}


# --- protect, ignore, --target and --replace speak of logical names -------------------------------


def test_protect_names_the_logical_key_and_covers_its_generations() -> None:
    gw = gen("gw", age=timedelta(days=200))
    r2 = gen("gw-r2", age=timedelta(days=100))
    plan = plan_for(manifest(["gw"], protect=["gw"], rotate_after="90d"), [gw, r2], sink(gw=r2))
    assert plan.actions == []
    assert any("gw" in w and "protected" in w for w in plan.warnings)


def test_protect_covers_the_generations_of_a_key_removed_from_the_manifest() -> None:
    r2 = gen("gw-r2", age=timedelta(days=2))
    plan = plan_for(manifest(["other"], protect=["gw"]), [r2, gen("other")], sink(gw=r2, other=gen("other")))
    # `gw-r2` is the protected key `gw`: the manifest omitting it must not delete it.
    assert not [a for a in plan.actions if a.destroys], acts(plan)


def test_ignore_covers_every_generation_of_the_ignored_name() -> None:
    keys = [gen("legacy"), gen("legacy-r2"), gen("other")]
    plan = plan_for(manifest(["other"], ignore=["legacy"]), keys, sink(other=keys[2]))
    # `legacy-r2` is a generation of the ignored `legacy`: invisible, never deleted.
    assert plan.actions == [], acts(plan)


def test_a_target_names_the_logical_key_and_covers_all_its_generations() -> None:
    keys = [gen("gw", age=timedelta(days=9)), gen("gw-r2", age=timedelta(days=8), used=timedelta(days=2))]
    keys += [gen("gw-r3", age=timedelta(days=7))]
    keys += [gen("other", age=timedelta(days=9)), gen("other-r2", age=timedelta(days=8))]
    view = sink(gw=keys[2], other=keys[4])
    m = manifest(["gw", "other"])

    targeted = plan_for(m, keys, view, targets=["gw"])
    untargeted = plan_for(m, keys, view, targets=["elsewhere"])

    assert acts(targeted) == {("retire", "gw", "superseded", "gw"), ("retire", "gw", "superseded", "gw-r2")}
    assert untargeted.actions == []


def test_a_target_covers_the_generations_of_a_key_removed_from_the_manifest() -> None:
    keys = [gen("gw", age=timedelta(days=2)), gen("gw-r2"), gen("other")]
    view = sink(gw=keys[1], other=keys[2])
    plan = plan_for(manifest(["other"]), keys, view, targets=["gw"])
    # `--target gw` is the whole key `gw`: both its generations go, not just generation one.
    assert {a.live.name for a in plan.actions if a.live is not None} == {"gw", "gw-r2"}, acts(plan)


def test_replace_names_the_logical_key_not_a_generation() -> None:
    r2 = gen("gw-r2")
    m = manifest(["gw"])
    assert acts(plan_for(m, [r2], sink(gw=r2), replace=["gw"])) == {("rotate", "gw", "requested", "gw-r3")}
    with pytest.raises(UnsafePlanError, match="gw-r2"):
        plan_for(m, [r2], sink(gw=r2), replace=["gw-r2"])


def test_replace_of_a_protected_overlap_key_is_an_error() -> None:
    gw = gen("gw")
    with pytest.raises(UnsafePlanError, match="protect"):
        plan_for(manifest(["gw"], protect=["g*"]), [gw], sink(gw=gw), replace=["gw"])


def test_removing_an_overlap_key_from_the_manifest_deletes_every_generation() -> None:
    keys = [gen("gw", age=timedelta(days=2)), gen("gw-r2"), gen("other")]
    plan = plan_for(manifest(["other"]), keys, sink(gw=keys[1], other=keys[2]))
    assert {(a.action, a.live.name if a.live else None) for a in plan.actions} == {
        ("delete", "gw"),
        ("delete", "gw-r2"),
    }


# --- plain replace keys behave as before ---------------------------------------------------------


def test_a_replace_key_is_deleted_and_created_again_under_the_same_name() -> None:
    gw = gen("gw", age=timedelta(days=100))
    plan = plan_for(manifest(["gw"], rotation="replace", rotate_after="90d"), [gw], sink(gw=gw))
    (action,) = plan.actions
    assert (action.action, action.name, action.reason, action.live) == ("replace", "gw", "rotation-due", gw)
    assert action.live_name == "gw" and action.generation is None
    assert "generation" not in action.data()
    assert plan.waiting == []


# --- the plan as JSON, text and Markdown ---------------------------------------------------------


def document(plan: Plan, keys: list[LiveKey], view: SinkView, request: PlanRequest) -> dict[str, Any]:
    return plan_document(plan, World.of(URL, "coderd-keys", "0" * 64, keys, view), request)


def test_json_rotate_and_retire_actions_speak_of_the_logical_name() -> None:
    keys = [gen("a", age=timedelta(days=9)), gen("a-r2", age=timedelta(days=8))]
    keys += [gen("b", age=timedelta(days=100)), gen("b-r2", age=SECOND)]
    view = sink(a=keys[1], b=keys[2])
    request = PlanRequest()

    doc = document(plan_for(manifest(["a", "b"]), keys, view), keys, view, request)
    rotate_doc = document(
        plan_for(manifest(["a"]), keys[:2], sink(a=keys[1]), replace=["a"], force=True),
        keys[:2],
        sink(a=keys[1]),
        request,
    )

    by_live = {item["live_name"]: item for item in doc["actions"]}
    assert by_live["a"] == {
        "action": "retire",
        "name": "a",
        "id": "id-a",
        "key_prefix": prefix_of("a"),
        "live_name": "a",
        "reason": "superseded",
    }
    assert by_live["b-r2"] == {
        "action": "retire",
        "name": "b",
        "id": "id-b-r2",
        "key_prefix": prefix_of("b-r2"),
        "live_name": "b-r2",
        "reason": "orphaned",
    }
    assert doc["waiting"] == []
    assert rotate_doc["actions"] == [
        {
            "action": "retire",
            "name": "a",
            "id": "id-a",
            "key_prefix": prefix_of("a"),
            "live_name": "a",
            "reason": "superseded",
        }
    ]
    rotated = plan_for(manifest(["a"]), keys[1:2], sink(a=keys[1]), replace=["a"])
    (item,) = document(rotated, keys[1:2], sink(a=keys[1]), request)["actions"]
    assert item == {"action": "rotate", "name": "a", "generation": "a-r3", "reason": "requested"}


def test_json_lists_waiting_generations_with_last_use_and_retire_after() -> None:
    keys = [gen("a", age=timedelta(days=9), used=2 * MINUTE), gen("a-r2", age=MINUTE)]
    keys += [gen("b", age=timedelta(days=9)), gen("b-r2", age=5 * MINUTE)]
    view = sink(a=keys[1], b=keys[3])

    doc = document(plan_for(manifest(["a", "b"]), keys, view), keys, view, PlanRequest())

    assert doc["actions"] == []
    by_id = {item["id"]: item for item in doc["waiting"]}
    assert set(by_id) == {"id-a", "id-b"}
    assert {k: by_id["id-a"][k] for k in ("name", "id", "last_used_at", "retire_after")} == {
        "name": "a",
        "id": "id-a",
        "last_used_at": rfc3339(NOW - 2 * MINUTE),
        "retire_after": rfc3339(NOW - MINUTE + GRACE),
    }
    assert by_id["id-b"]["name"] == "b"
    assert by_id["id-b"]["last_used_at"] is None
    assert by_id["id-b"]["retire_after"] == rfc3339(NOW - 5 * MINUTE + GRACE)
    assert datetime.fromisoformat(by_id["id-a"]["retire_after"]) == NOW - MINUTE + GRACE


def test_text_and_markdown_show_waiting_generations_with_their_last_use() -> None:
    keys = [gen("gw", age=timedelta(days=9), used=2 * MINUTE), gen("gw-r2", age=MINUTE)]
    keys += [gen("nx", age=timedelta(days=100))]
    view = sink(gw=keys[1], nx=keys[2])
    plan = plan_for(manifest(["gw", "nx"], rotate_after="90d"), keys, view)

    text = render_text(plan, NOW)
    markdown = render_markdown(plan, NOW, URL)

    waiting_line = next(line for line in text.splitlines() if "waiting" in line)
    assert "gw" in waiting_line and "2 minutes ago" in waiting_line, text
    assert "rotate nx" in text and "nx-r2" in text, text
    md_line = next(line for line in markdown.splitlines() if "waiting" in line)
    assert "gw" in md_line and "2 minutes ago" in md_line, markdown
    assert "rotate" in markdown and "`nx`" in markdown, markdown


# --- invariants over many states ----------------------------------------------------------------


@st.composite
def overlap_states(draw: st.DrawFn) -> tuple[list[LiveKey], SinkView, PlanRequest, Manifest]:
    numbers = sorted(draw(st.sets(st.integers(1, 5), min_size=1, max_size=4)))
    ages = sorted(
        draw(st.lists(st.integers(0, 3000), min_size=len(numbers), max_size=len(numbers), unique=True)),
        reverse=True,
    )
    keys = []
    for number, age_minutes in zip(numbers, ages, strict=True):
        used = draw(st.none() | st.integers(0, age_minutes))
        keys.append(
            gen(
                generation_name("gw", number),
                age=age_minutes * MINUTE,
                used=used * MINUTE if used is not None else None,
            )
        )
    held = draw(st.sampled_from([*keys, "stale", None]))
    view = sink(gw=held if held != "stale" else "ffffffffff0")
    request = PlanRequest(replace=frozenset(["gw"] if draw(st.booleans()) else []), force=draw(st.booleans()))
    rotate_after = draw(st.sampled_from([None, "1h", "1d", "90d"]))
    m = manifest(["gw"], rotate_after=rotate_after, overlap_grace=draw(st.sampled_from(["2m", "15m", "1d"])))
    return keys, view, request, m


@settings(max_examples=300, deadline=None)
@given(overlap_states())
def test_overlap_plans_never_lose_the_held_secret_nor_stack_generations(
    state: tuple[list[LiveKey], SinkView, PlanRequest, Manifest],
) -> None:
    keys, view, request, m = state
    plan = build_plan(m, keys, view, NOW, URL, request)
    entry = view.entries.get("gw")
    held = next((k for k in keys if entry and k.key_prefix == entry.secret_prefix), None)
    newest = keys[-1]
    retired = [a for a in plan.actions if a.action == "retire"]
    rotates = [a for a in plan.actions if a.action == "rotate"]
    grace = m.overlap_grace(m.keys[0])

    assert {a.action for a in plan.actions} <= {"rotate", "retire"}
    assert all(a.name == "gw" for a in plan.actions)
    # The generation whose secret the sink holds is never destroyed.
    assert held is None or all(a.live != held for a in retired)
    # Every live generation but the current one is either retired or waiting, never both.
    current = held or newest
    destroyed = [a.live.name for a in retired if a.live is not None]
    held_back = [w.key.name for w in plan.waiting]
    assert sorted(destroyed + held_back) == sorted(k.name for k in keys if k != current)
    # Orphans are the generations newer than the held one, but for those a replica used within
    # the grace: someone holds their secret after all, so they wait.
    orphans = {a.live.name for a in retired if a.reason == "orphaned" and a.live is not None}
    newer = {
        k.name
        for k in keys
        if held is not None
        and k.created_at > held.created_at
        and (request.force or k.last_seen is None or k.last_seen + grace <= NOW)
    }
    assert orphans == newer
    # A superseded generation goes only with --force or once both grace bounds have passed.
    for action in retired:
        if action.reason == "superseded" and not request.force:
            assert action.live is not None
            successor = next(k for k in keys if k.created_at > action.live.created_at)
            seen = action.live.last_seen
            assert successor.created_at + grace <= NOW
            assert seen is None or seen + grace <= NOW
    # At most one rotation, always to the next generation, and a due or requested one only when
    # no other generation is left.
    assert len(rotates) <= 1
    for action in rotates:
        assert action.live_name == generation_name("gw", (generation_of(newest.name) or ("gw", 1))[1] + 1)
        assert not orphans
        if action.reason in ("rotation-due", "requested"):
            assert len(keys) == 1
        else:
            assert held is None


def test_a_newer_generation_a_replica_still_uses_waits_instead_of_being_orphaned() -> None:
    # The sink was restored from a backup holding gw, while replicas already use gw-r2.
    gw = gen("gw", age=timedelta(days=2))
    r2 = gen("gw-r2", age=MINUTE, used=SECOND)
    plan = plan_for(manifest(["gw"]), [gw, r2], sink(gw=gw))
    assert acts(plan) == set()
    assert set(waiting(plan)) == {"gw-r2"}
