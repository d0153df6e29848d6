"""The planner: reasons, precedence, policy, guards, and the reconcile-then-nothing property."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysync.errors import UnsafePlanError, UsageError
from keysync.keys import LiveKey, SinkView, StoredEntry
from keysync.manifest.model import Manifest
from keysync.plan import Action, Plan, PlanRequest, build_plan

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
URL = "https://coder.example.com"
OTHER_URL = "https://other.example.com"


def prefix_of(name: str, generation: int = 0) -> str:
    return hashlib.sha256(f"{name}/{generation}".encode()).hexdigest()[:11]


def live(
    name: str,
    *,
    age: timedelta = timedelta(days=1),
    prefix: str | None = None,
    last_used: timedelta | None = None,
    heartbeat: timedelta | None = None,
) -> LiveKey:
    return LiveKey(
        id=f"id-{name}",
        name=name,
        key_prefix=prefix or prefix_of(name),
        created_at=NOW - age,
        last_used_at=NOW - last_used if last_used is not None else None,
        last_heartbeat_at=NOW - heartbeat if heartbeat is not None else None,
    )


def entry(name: str, secret_prefix: str | None = None, url: str = URL) -> StoredEntry:
    held = secret_prefix or prefix_of(name)
    return StoredEntry(name=name, id=f"id-{name}", key_prefix=held, secret_prefix=held, coderd_url=url)


def holding(*keys: LiveKey, readable: bool = True) -> SinkView:
    """A sink holding the current secret of every given key."""
    return SinkView({k.name: entry(k.name, k.key_prefix) for k in keys}, readable=readable)


def manifest(keys: list[Any], **policy: Any) -> Manifest:
    policy.setdefault("max_deletes", 100)
    return Manifest.model_validate({"version": 1, "policy": policy, "keys": keys})


def plan_for(
    m: Manifest,
    keys: Iterable[LiveKey],
    sink: SinkView | None = None,
    targets: Iterable[str] = (),
    replace: Iterable[str] = (),
) -> Plan:
    keys = list(keys)
    request = PlanRequest(targets=frozenset(targets), replace=frozenset(replace))
    return build_plan(m, keys, sink if sink is not None else holding(*keys), NOW, URL, request)


def actions(plan: Plan) -> set[tuple[str, str, str]]:
    return {(a.action, a.name, a.reason) for a in plan.actions}


def mentions(messages: list[str], name: str) -> bool:
    return any(name in message for message in messages)


# --- reasons -----------------------------------------------------------------------------------


def test_a_key_in_sync_needs_nothing() -> None:
    key = live("alpha")
    plan = plan_for(manifest(["alpha"]), [key])
    assert plan.actions == []
    assert not plan.has_changes
    assert plan.needs_force == [] and plan.failures == []


def test_missing_key_is_created() -> None:
    plan = plan_for(manifest(["alpha"]), [])
    assert actions(plan) == {("create", "alpha", "missing")}
    assert plan.actions[0].live is None
    assert plan.summary() == {"create": 1, "delete": 0, "replace": 0, "rotate": 0, "retire": 0}


def test_live_key_not_in_manifest_is_deleted() -> None:
    keep, extra = live("alpha"), live("beta")
    plan = plan_for(manifest(["alpha"]), [keep, extra])
    assert actions(plan) == {("delete", "beta", "not-in-manifest")}
    assert plan.actions[0].live == extra


def test_secret_missing_from_sink_replaces_the_key() -> None:
    plan = plan_for(manifest(["alpha"]), [live("alpha")], SinkView({}))
    assert actions(plan) == {("replace", "alpha", "secret-missing")}


def test_sink_holding_another_keys_secret_is_stale() -> None:
    key = live("alpha")
    sink = SinkView({"alpha": entry("alpha", secret_prefix=prefix_of("alpha", 9))})
    plan = plan_for(manifest(["alpha"]), [key], sink)
    assert actions(plan) == {("replace", "alpha", "secret-stale")}


def test_rotation_is_due_once_the_key_is_older_than_rotate_after() -> None:
    m = manifest(["old", "young"], rotate_after="90d")
    plan = plan_for(m, [live("old", age=timedelta(days=91)), live("young", age=timedelta(days=89))])
    assert actions(plan) == {("replace", "old", "rotation-due")}


def test_per_key_rotate_after_overrides_the_policy() -> None:
    m = manifest([{"name": "fast", "rotate_after": "30d"}, "slow"], rotate_after="90d")
    plan = plan_for(m, [live("fast", age=timedelta(days=45)), live("slow", age=timedelta(days=45))])
    assert actions(plan) == {("replace", "fast", "rotation-due")}


def test_per_key_rotate_after_without_a_policy_default() -> None:
    m = manifest([{"name": "fast", "rotate_after": "1w2d"}, "slow"])
    plan = plan_for(m, [live("fast", age=timedelta(days=10)), live("slow", age=timedelta(days=900))])
    assert actions(plan) == {("replace", "fast", "rotation-due")}


def test_requested_replace() -> None:
    plan = plan_for(manifest(["alpha", "beta"]), [live("alpha"), live("beta")], replace=["alpha"])
    assert actions(plan) == {("replace", "alpha", "requested")}


def test_requested_replace_of_a_key_not_in_coder_is_a_create() -> None:
    plan = plan_for(manifest(["alpha"]), [], replace=["alpha"])
    assert actions(plan) == {("create", "alpha", "missing")}


def test_action_data_names_the_live_key_it_destroys_and_only_then() -> None:
    key = live("beta")
    plan = plan_for(manifest(["alpha"]), [key])
    by_name = {a.name: a.data() for a in plan.actions}
    assert by_name["alpha"] == {"action": "create", "name": "alpha", "reason": "missing"}
    assert by_name["beta"] == {
        "action": "delete",
        "name": "beta",
        "id": key.id,
        "key_prefix": key.key_prefix,
        "live_name": "beta",
        "reason": "not-in-manifest",
    }


# --- precedence: requested > secret-* > rotation-due -------------------------------------------


@pytest.mark.parametrize(
    ("sink_state", "requested", "expected"),
    [
        ("missing", True, "requested"),
        ("stale", True, "requested"),
        ("held", True, "requested"),
        ("missing", False, "secret-missing"),
        ("stale", False, "secret-stale"),
        ("held", False, "rotation-due"),
    ],
)
def test_reason_precedence(sink_state: str, requested: bool, expected: str) -> None:
    key = live("alpha", age=timedelta(days=400))
    entries = {
        "missing": {},
        "stale": {"alpha": entry("alpha", prefix_of("alpha", 5))},
        "held": {"alpha": entry("alpha", key.key_prefix)},
    }[sink_state]
    plan = plan_for(
        manifest(["alpha"], rotate_after="90d"),
        [key],
        SinkView(entries),
        replace=["alpha"] if requested else [],
    )
    assert actions(plan) == {("replace", "alpha", expected)}


# --- on_missing_secret -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["missing", "stale"])
def test_on_missing_secret_keep_leaves_the_key_with_a_warning(state: str) -> None:
    sink = SinkView({} if state == "missing" else {"alpha": entry("alpha", prefix_of("x"))})
    plan = plan_for(manifest(["alpha"], on_missing_secret="keep"), [live("alpha")], sink)
    assert plan.actions == []
    assert mentions(plan.warnings, "alpha")
    assert plan.failures == []


@pytest.mark.parametrize("state", ["missing", "stale"])
def test_on_missing_secret_fail_makes_the_plan_fail(state: str) -> None:
    sink = SinkView({} if state == "missing" else {"alpha": entry("alpha", prefix_of("x"))})
    plan = plan_for(manifest(["alpha", "beta"], on_missing_secret="fail"), [live("alpha")], sink)
    assert actions(plan) == {("create", "beta", "missing")}
    assert mentions(plan.failures, "alpha")


def test_on_missing_secret_replace_is_the_default() -> None:
    plan = plan_for(manifest(["alpha"]), [live("alpha")], SinkView({}))
    assert actions(plan) == {("replace", "alpha", "secret-missing")}


def test_requested_replace_beats_on_missing_secret_keep() -> None:
    plan = plan_for(
        manifest(["alpha"], on_missing_secret="keep"), [live("alpha")], SinkView({}), replace=["alpha"]
    )
    assert actions(plan) == {("replace", "alpha", "requested")}
    assert plan.failures == []


def test_unreadable_sink_checks_no_secrets_and_says_so() -> None:
    plan = plan_for(manifest(["alpha"]), [live("alpha")], SinkView({}, readable=False))
    assert plan.actions == []
    assert plan.warnings, "the plan must say that it could not check the sink"


# --- prune, ignore, protect --------------------------------------------------------------------


def test_prune_false_keeps_unlisted_keys() -> None:
    plan = plan_for(manifest(["alpha"], prune=False), [live("alpha"), live("beta")])
    assert plan.actions == []


def test_prune_false_still_creates_and_replaces() -> None:
    plan = plan_for(manifest(["alpha", "gamma"], prune=False), [live("alpha"), live("beta")], SinkView({}))
    assert actions(plan) == {("create", "gamma", "missing"), ("replace", "alpha", "secret-missing")}


def test_ignored_keys_are_invisible() -> None:
    ignored = live("legacy-one", age=timedelta(days=999), last_used=timedelta(minutes=1))
    m = manifest(["alpha"], ignore=["legacy-*"], rotate_after="30d")
    plan = plan_for(m, [live("alpha"), ignored], SinkView({"alpha": entry("alpha")}))
    assert plan.actions == []
    assert plan.needs_force == []
    assert not mentions(plan.warnings, "legacy-one")


def test_keys_outside_manage_are_invisible_so_two_manifests_share_one_coder() -> None:
    theirs = live("team-b-gw", age=timedelta(days=999), last_used=timedelta(minutes=1))
    m = manifest(["team-a-gw"], manage=["team-a-*"], rotate_after="30d")
    plan = plan_for(m, [live("team-a-gw"), live("team-a-old"), theirs])
    assert actions(plan) == {("delete", "team-a-old", "not-in-manifest")}
    assert plan.needs_force == []
    assert not mentions(plan.warnings, "team-b-gw")


def test_every_managed_key_is_judged_within_manage() -> None:
    m = manifest([], manage=["team-a-*"])
    plan = plan_for(m, [live("team-a-gw"), live("team-b-gw")])
    assert actions(plan) == {("delete", "team-a-gw", "not-in-manifest")}
    assert mentions(plan.needs_force, "every managed key")


def test_manage_covers_every_generation_of_a_managed_name() -> None:
    m = manifest([{"name": "team-a-gw", "rotation": "overlap"}], manage=["team-a-gw"])
    r2 = live("team-a-gw-r2")
    plan = plan_for(
        m, [live("team-a-gw", age=timedelta(days=2)), r2], SinkView({"team-a-gw": entry("team-a-gw-r2")})
    )
    assert actions(plan) == {("retire", "team-a-gw", "superseded")}


def test_the_sink_record_of_an_ignored_key_is_not_stale() -> None:
    # The ignored key still exists: removing its secret from the sink would lose it.
    ignored = live("legacy-one")
    m = manifest(["alpha"], ignore=["legacy-*"])
    plan = plan_for(m, [live("alpha"), ignored])
    assert plan.stale_records == []
    assert not mentions(plan.warnings, "legacy-one")
    assert not plan.has_changes


def test_ignored_keys_do_not_count_as_managed_for_the_empty_guard() -> None:
    m = manifest([], ignore=["legacy-*"])
    plan = plan_for(m, [live("legacy-one"), live("legacy-two"), live("beta")])
    assert actions(plan) == {("delete", "beta", "not-in-manifest")}
    assert plan.needs_force, "beta is every managed key"

    only_ignored = plan_for(m, [live("legacy-one")])
    assert only_ignored.actions == [] and only_ignored.needs_force == []


def test_protected_key_is_never_deleted() -> None:
    m = manifest(["alpha"], protect=["prod-*"])
    plan = plan_for(m, [live("alpha"), live("prod-eu"), live("dev-eu")])
    assert actions(plan) == {("delete", "dev-eu", "not-in-manifest")}
    assert mentions(plan.warnings, "prod-eu")


@pytest.mark.parametrize("why", ["secret-missing", "secret-stale", "rotation-due"])
def test_protected_key_is_never_replaced(why: str) -> None:
    key = live("prod-eu", age=timedelta(days=400) if why == "rotation-due" else timedelta(days=1))
    entries = {
        "secret-missing": {},
        "secret-stale": {"prod-eu": entry("prod-eu", prefix_of("other"))},
        "rotation-due": {"prod-eu": entry("prod-eu", key.key_prefix)},
    }[why]
    m = manifest(["prod-eu"], protect=["prod-*"], rotate_after="90d")
    plan = plan_for(m, [key], SinkView(entries))
    assert plan.actions == []
    assert mentions(plan.warnings, "prod-eu")


def test_a_protected_key_missing_from_coder_is_still_created() -> None:
    plan = plan_for(manifest(["prod-eu"], protect=["prod-*"]), [])
    assert actions(plan) == {("create", "prod-eu", "missing")}


def test_replace_of_a_protected_key_is_an_error() -> None:
    m = manifest(["prod-eu", "alpha"], protect=["prod-*"])
    with pytest.raises(UnsafePlanError) as caught:
        plan_for(m, [live("prod-eu"), live("alpha")], replace=["prod-eu"])
    assert "prod-eu" in str(caught.value)


# --- --target ----------------------------------------------------------------------------------


def test_target_limits_creates_replaces_and_deletes() -> None:
    m = manifest(["alpha", "beta", "gamma"])
    keys = [live("beta"), live("gamma"), live("stray-one"), live("stray-two")]
    sink = SinkView({"gamma": entry("gamma"), "gone": entry("gone")})
    assert actions(plan_for(m, keys, sink, targets=["alpha"])) == {("create", "alpha", "missing")}
    assert actions(plan_for(m, keys, sink, targets=["beta"])) == {("replace", "beta", "secret-missing")}
    assert actions(plan_for(m, keys, sink, targets=["stray-one"])) == {
        ("delete", "stray-one", "not-in-manifest")
    }
    everything = plan_for(m, keys, sink)
    assert len(everything.actions) == 4
    assert everything.stale_records == ["gone"]


def test_target_limits_stale_sink_records() -> None:
    sink = SinkView({"gone": entry("gone"), "alpha": entry("alpha")})
    key = live("alpha")
    assert plan_for(manifest(["alpha"]), [key], sink, targets=["alpha"]).stale_records == []
    assert plan_for(manifest(["alpha"]), [key], sink, targets=["gone"]).stale_records == ["gone"]


def test_replace_outside_the_targets_is_refused_not_silently_dropped() -> None:
    with pytest.raises(UsageError, match="--replace alpha"):
        plan_for(
            manifest(["alpha", "beta"]), [live("alpha"), live("beta")], targets=["beta"], replace=["alpha"]
        )


def test_a_target_that_matches_nothing_is_a_warning() -> None:
    plan = plan_for(manifest(["alpha"]), [live("alpha")], targets=["alpah"])
    assert plan.actions == []
    assert any("--target alpah matches no key" in warning for warning in plan.warnings)


# --- guards ------------------------------------------------------------------------------------


def test_max_deletes_counts_deletes_and_replaces() -> None:
    keys = [live("alpha"), live("beta"), live("gamma"), live("delta")]
    sink = holding(keys[0], keys[1])  # gamma lacks its secret: replace
    m = manifest(["alpha", "gamma"], max_deletes=2)
    plan = plan_for(m, keys, sink, replace=["alpha"])
    assert plan.summary() == {"create": 0, "delete": 2, "replace": 2, "rotate": 0, "retire": 0}
    assert any("max_deletes" in reason for reason in plan.needs_force), plan.needs_force
    with pytest.raises(UnsafePlanError):
        plan.raise_if_unsafe(force=False)
    plan.raise_if_unsafe(force=True)


def test_max_deletes_allows_exactly_the_limit() -> None:
    keys = [live("alpha"), live("beta"), live("gamma")]
    plan = plan_for(manifest(["alpha"], max_deletes=2), keys)
    assert plan.summary()["delete"] == 2
    assert plan.needs_force == []
    plan.raise_if_unsafe(force=False)


def test_max_deletes_zero_refuses_a_single_replace() -> None:
    used = live("alpha", last_used=timedelta(days=1))
    plan = plan_for(manifest(["alpha"], max_deletes=0), [used], SinkView({}))
    assert plan.needs_force


def test_max_deletes_counts_every_replace_even_of_keys_never_used() -> None:
    keys = [live(name) for name in ("alpha", "beta", "gamma")]
    plan = plan_for(manifest(["alpha", "beta", "gamma"], max_deletes=1), keys, SinkView({}))
    assert plan.summary()["replace"] == 3
    assert plan.needs_force


def test_an_empty_manifest_with_prune_needs_force_even_when_a_protected_key_stays() -> None:
    plan = plan_for(manifest([], protect=["keep"]), [live("gone"), live("keep")])
    assert [(a.action, a.name) for a in plan.actions] == [("delete", "gone")]
    assert any("lists no keys" in reason for reason in plan.needs_force)


def test_deleting_every_managed_key_needs_force() -> None:
    plan = plan_for(manifest([]), [live("alpha"), live("beta")])
    assert plan.summary()["delete"] == 2
    assert plan.needs_force
    with pytest.raises(UnsafePlanError):
        plan.raise_if_unsafe(force=False)
    assert mentions(plan.warnings, "--force"), "plan lists what needs --force under warnings"


def test_renaming_every_key_deletes_every_managed_key() -> None:
    plan = plan_for(manifest(["new-one"]), [live("alpha"), live("beta")])
    assert {a.action for a in plan.actions} == {"create", "delete"}
    assert plan.needs_force


def test_empty_manifest_with_nothing_live_needs_no_force() -> None:
    plan = plan_for(manifest([]), [])
    assert plan.actions == [] and plan.needs_force == []


def test_deleting_some_managed_keys_needs_no_force() -> None:
    plan = plan_for(manifest(["alpha"]), [live("alpha"), live("beta")])
    assert plan.needs_force == []


def seen(name: str, field: str, ago: timedelta) -> LiveKey:
    return live(name, last_used=ago) if field == "last_used" else live(name, heartbeat=ago)


@pytest.mark.parametrize("field", ["last_used", "heartbeat"])
def test_deleting_a_key_used_in_the_last_ten_minutes_needs_force(field: str) -> None:
    recent = seen("beta", field, timedelta(minutes=4))
    plan = plan_for(manifest(["alpha"]), [live("alpha"), recent])
    assert actions(plan) == {("delete", "beta", "not-in-manifest")}
    assert any("beta" in reason for reason in plan.needs_force), plan.needs_force


@pytest.mark.parametrize("field", ["last_used", "heartbeat"])
def test_a_key_last_used_over_ten_minutes_ago_is_not_in_use(field: str) -> None:
    idle = seen("beta", field, timedelta(minutes=11))
    plan = plan_for(manifest(["alpha"]), [live("alpha"), idle])
    assert plan.needs_force == []


def test_in_use_is_judged_on_the_latest_of_use_and_heartbeat() -> None:
    key = live("beta", last_used=timedelta(days=3), heartbeat=timedelta(minutes=2))
    plan = plan_for(manifest(["alpha"]), [live("alpha"), key])
    assert any("beta" in reason for reason in plan.needs_force)


@pytest.mark.parametrize("why", ["secret-missing", "rotation-due"])
def test_replacing_a_key_in_use_needs_force(why: str) -> None:
    key = live("alpha", age=timedelta(days=400), last_used=timedelta(minutes=1))
    sink = SinkView({}) if why == "secret-missing" else holding(key)
    plan = plan_for(manifest(["alpha"], rotate_after="90d"), [key], sink)
    assert actions(plan) == {("replace", "alpha", why)}
    assert any("alpha" in reason for reason in plan.needs_force)


def test_requested_replace_of_a_key_in_use_needs_no_force() -> None:
    key = live("alpha", last_used=timedelta(seconds=30))
    plan = plan_for(manifest(["alpha"]), [key], replace=["alpha"])
    assert actions(plan) == {("replace", "alpha", "requested")}
    assert plan.needs_force == []


# --- stale sink records ------------------------------------------------------------------------


def test_records_of_keys_that_no_longer_exist_are_listed() -> None:
    sink = SinkView(
        {"alpha": entry("alpha"), "gone": entry("gone"), "elsewhere": entry("elsewhere", url=OTHER_URL)}
    )
    plan = plan_for(manifest(["alpha"]), [live("alpha")], sink)
    assert plan.actions == []
    assert plan.stale_records == ["gone"]
    assert mentions(plan.warnings, "gone")
    assert not mentions(plan.warnings, "elsewhere")
    assert plan.has_changes


def test_a_record_for_a_key_about_to_be_created_is_not_stale() -> None:
    plan = plan_for(manifest(["alpha"]), [], SinkView({"alpha": entry("alpha")}))
    assert actions(plan) == {("create", "alpha", "missing")}
    assert plan.stale_records == []


def test_a_record_of_a_key_being_deleted_is_not_listed_twice() -> None:
    plan = plan_for(manifest(["alpha"]), [live("alpha"), live("beta")])
    assert actions(plan) == {("delete", "beta", "not-in-manifest")}
    assert plan.stale_records == []


# --- properties: apply the plan, reach the manifest, plan again: nothing -----------------------

NAMES = ["alpha", "beta", "gamma", "delta", "legacy-one", "legacy-two", "prod-eu", "prod-us"]
_fresh = itertools.count(1)


@dataclass
class World:
    live: dict[str, LiveKey]
    entries: dict[str, StoredEntry]


def simulate(plan: Plan, world: World) -> World:
    """What a successful apply does: deletes remove live keys and sink records, creates add both."""
    live_keys = dict(world.live)
    entries = dict(world.entries)
    for action in plan.actions:
        assert action.action in ("create", "delete", "replace"), "rotation: replace only"
        if action.action in ("delete", "replace"):
            assert action.live is not None
            assert live_keys.pop(action.name).id == action.live.id
            if action.action == "delete":
                entries.pop(action.name, None)
        if action.action in ("create", "replace"):
            assert action.name not in live_keys, "names are unique: delete before create"
            generation = next(_fresh)
            key = LiveKey(
                id=f"id-{action.name}-{generation}",
                name=action.name,
                key_prefix=prefix_of(action.name, generation),
                created_at=NOW,
            )
            live_keys[action.name] = key
            entries[action.name] = entry(action.name, key.key_prefix)
    for name in plan.stale_records:
        entries.pop(name)
    return World(live_keys, entries)


@st.composite
def scenarios(draw: st.DrawFn, on_missing_secret: str = "replace") -> tuple[Manifest, World]:
    ignore = draw(st.sampled_from([[], ["legacy-*"]]))
    protect = draw(st.sampled_from([[], ["prod-*"], ["prod-eu", "gamma"]]))
    candidates = [n for n in NAMES if not any(n.startswith(p.rstrip("*")) for p in ignore)]
    desired = draw(st.lists(st.sampled_from(candidates), unique=True))
    specs: list[Any] = [
        draw(
            st.sampled_from(
                [name, {"name": name, "rotate_after": "30d"}, {"name": name, "rotate_after": "2w"}]
            )
        )
        for name in desired
    ]
    m = Manifest.model_validate(
        {
            "version": 1,
            "policy": {
                "prune": draw(st.booleans()),
                "max_deletes": 1000,
                "ignore": ignore,
                "protect": protect,
                "rotate_after": draw(st.sampled_from([None, "90d", "1w"])),
                "on_missing_secret": on_missing_secret,
            },
            "keys": specs,
        }
    )
    live_keys = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        live_keys[name] = live(
            name,
            age=timedelta(days=draw(st.integers(0, 400)), seconds=draw(st.integers(0, 86399))),
            last_used=draw(st.none() | st.just(timedelta(minutes=1)) | st.just(timedelta(days=2))),
        )
    entries = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        current = live_keys.get(name)
        held = draw(
            st.sampled_from([prefix_of(name, 99)] + ([current.key_prefix] * 2 if current is not None else []))
        )
        entries[name] = entry(name, held, url=draw(st.sampled_from([URL, URL, OTHER_URL])))
    return m, World(live_keys, entries)


def plan_world(m: Manifest, world: World) -> Plan:
    return build_plan(m, list(world.live.values()), SinkView(dict(world.entries)), NOW, URL)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_applying_a_plan_reaches_the_manifest(scenario: tuple[Manifest, World]) -> None:
    m, before = scenario
    policy = m.policy
    after = simulate(plan_world(m, before), before)

    for name in m.names():
        assert name in after.live, f"{name} is in the manifest but not in Coder"
    for name, key in after.live.items():
        if policy.ignores(name):
            assert key == before.live[name], "ignored keys are never touched"
        elif name not in m.names():
            assert policy.protects(name) or not policy.prune, f"{name} should have been pruned"
    for spec in m.keys:
        key = after.live[spec.name]
        if policy.protects(spec.name):
            continue
        held = after.entries.get(spec.name)
        assert held is not None and held.secret_prefix == key.key_prefix, f"sink lacks {spec.name}'s secret"
        rotate_after = m.rotate_after(spec)
        assert rotate_after is None or NOW - key.created_at < rotate_after
    for name, held in before.entries.items():
        if policy.ignores(name) and name in before.live:
            assert after.entries.get(name) == held, "the secret of an ignored key is never removed"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["replace", "keep", "fail"]).flatmap(lambda choice: scenarios(choice)))
def test_planning_again_after_apply_yields_nothing(scenario: tuple[Manifest, World]) -> None:
    m, before = scenario
    after = simulate(plan_world(m, before), before)
    again = plan_world(m, after)
    assert again.actions == [], [a.data() for a in again.actions]
    assert again.stale_records == []
    assert not again.has_changes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_plans_never_destroy_protected_or_ignored_keys(scenario: tuple[Manifest, World]) -> None:
    m, world = scenario
    plan = plan_world(m, world)
    for action in plan.actions:
        if action.action in ("delete", "replace"):
            assert not m.policy.protects(action.name)
            assert not m.policy.ignores(action.name)
        assert isinstance(action, Action)
    assert plan.summary()["delete"] + plan.summary()["replace"] == sum(1 for a in plan.actions if a.destroys)


def test_guards_are_values_with_a_fixed_code_whatever_the_wording() -> None:
    keys = [live("k0"), live("k1"), live("k2", heartbeat=timedelta(minutes=1))]
    plan = plan_for(manifest(["k0"], max_deletes=1), keys)

    assert [(guard.code, guard.names) for guard in plan.guards] == [
        ("max-deletes", ("k1", "k2")),
        ("in-use", ("k2",)),
    ]
    assert plan.needs_force == [guard.message for guard in plan.guards]
    kept, skipped = plan.without_forced()
    assert kept.actions == [] and kept.guards == []
    assert {(a.name, guard.code) for a, guard in skipped} == {("k1", "max-deletes"), ("k2", "in-use")}
    assert plan.guards[1].data() == {"code": "in-use", "message": plan.guards[1].message, "names": ["k2"]}
