"""Plans for people: Terraform-like text, Markdown for a pull request, colour only when asked."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from keysync.keys import LiveKey, SinkView, StoredEntry
from keysync.manifest.model import Manifest
from keysync.plan import Plan, Waiting, build_plan
from keysync.render import render_markdown, render_text, target_line
from keysync.timefmt import ahead, relative

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
URL = "https://coder.example.com"
ANSI = re.compile(r"\x1b\[")


def live(name: str, prefix: str, age: timedelta, last_used: timedelta | None = None) -> LiveKey:
    return LiveKey(
        id=f"id-{name}",
        name=name,
        key_prefix=prefix,
        created_at=NOW - age,
        last_used_at=NOW - last_used if last_used else None,
    )


def held(key: LiveKey) -> StoredEntry:
    return StoredEntry(key.name, key.id, key.key_prefix, key.key_prefix, URL)


def mixed_plan() -> Plan:
    """Creates new-key, deletes old-used (3 days old, used 2 hours ago) and old-unused (never used),
    replaces rotated (rotation due)."""
    manifest = Manifest.model_validate(
        {
            "version": 1,
            "policy": {"rotate_after": "30d", "max_deletes": 10},
            "keys": ["new-key", "rotated", "kept"],
        }
    )
    keys = [
        live("old-used", "PfxOldUsed1", timedelta(days=3), timedelta(hours=2)),
        live("old-unused", "PfxOldNone1", timedelta(days=40)),
        live("rotated", "PfxRotated1", timedelta(days=45), timedelta(days=1)),
        live("kept", "PfxKept0001", timedelta(days=1)),
    ]
    sink = SinkView({k.name: held(k) for k in keys} | {"gone": StoredEntry("gone", "id-gone", "x", "x", URL)})
    return build_plan(manifest, keys, sink, NOW, URL)


def action_block(text: str, name: str) -> str:
    """The line of the action on `name` and any detail lines under it, up to the next action."""
    lines = text.splitlines()
    head = re.compile(rf"^\s*(\+|-|-/\+) (create|delete|replace)\s+{re.escape(name)}\b")
    starts = [i for i, line in enumerate(lines) if head.search(line)]
    assert len(starts) == 1, f"expected one action line for {name!r} in:\n{text}"
    block = [lines[starts[0]]]
    for line in lines[starts[0] + 1 :]:
        if not line.strip() or re.match(r"^\s*(\+|-|-/\+) (create|delete|replace)\b", line):
            break
        block.append(line)
    return "\n".join(block)


def test_text_uses_terraform_symbols_for_each_action() -> None:
    text = render_text(mixed_plan(), NOW)
    assert re.search(r"^\s*\+ create\s+new-key\b", text, re.M), text
    assert re.search(r"^\s*- delete\s+old-used\b", text, re.M), text
    assert re.search(r"^\s*- delete\s+old-unused\b", text, re.M), text
    assert re.search(r"^\s*-/\+ replace\s+rotated\b", text, re.M), text
    assert "kept" not in text


def test_text_shows_the_reason_of_each_action() -> None:
    text = render_text(mixed_plan(), NOW)
    assert "missing" in action_block(text, "new-key")
    assert "not-in-manifest" in action_block(text, "old-used")
    assert "rotation-due" in action_block(text, "rotated")


def test_text_has_a_summary_line() -> None:
    text = render_text(mixed_plan(), NOW)
    summary = [line for line in text.splitlines() if line.startswith("Plan:")]
    assert len(summary) == 1, text
    assert "1 to create" in summary[0]
    assert "2 to delete" in summary[0]
    assert "1 to replace" in summary[0]


def test_each_delete_shows_its_prefix_age_and_last_use() -> None:
    text = render_text(mixed_plan(), NOW)
    used = action_block(text, "old-used")
    assert "PfxOldUsed1" in used
    assert "3 days" in used
    assert "2 hours ago" in used
    unused = action_block(text, "old-unused")
    assert "PfxOldNone1" in unused
    assert "1 month" in unused or "40 days" in unused or "5 weeks" in unused
    assert "never" in unused


def test_text_lists_warnings() -> None:
    text = render_text(mixed_plan(), NOW)
    assert any("gone" in line for line in text.splitlines() if not line.startswith("Plan:")), text


def test_no_changes_says_so_without_a_summary_of_zeros() -> None:
    text = render_text(Plan([]), NOW)
    assert "No changes" in text
    assert "to create" not in text


def test_no_colour_unless_asked() -> None:
    plan = mixed_plan()
    assert not ANSI.search(render_text(plan, NOW))
    assert not ANSI.search(render_text(plan, NOW, color=False))
    coloured = render_text(plan, NOW, color=True)
    assert ANSI.search(coloured)
    assert ANSI.sub("", re.sub(r"\x1b\[[0-9;]*m", "", coloured)) == render_text(plan, NOW, color=False)


def test_markdown_names_every_action() -> None:
    markdown = render_markdown(mixed_plan(), NOW, URL)
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    for action, name in [
        ("create", "new-key"),
        ("delete", "old-used"),
        ("delete", "old-unused"),
        ("replace", "rotated"),
    ]:
        matching = [row for row in rows if name in row]
        assert len(matching) == 1, markdown
        assert action in matching[0]
    assert "PfxOldUsed1" in markdown
    assert URL in markdown


def test_markdown_has_the_summary_and_warnings_and_no_colour() -> None:
    markdown = render_markdown(mixed_plan(), NOW, URL)
    assert "1 to create" in markdown and "2 to delete" in markdown and "1 to replace" in markdown
    assert "gone" in markdown
    assert not ANSI.search(markdown)


def test_markdown_for_no_changes() -> None:
    markdown = render_markdown(Plan([]), NOW, URL)
    assert "No changes" in markdown
    assert "|" not in markdown


def test_the_first_line_names_the_target_and_where_its_url_came_from() -> None:
    target = target_line(URL, "CODER_URL")
    text = render_text(mixed_plan(), NOW, target=target)
    markdown = render_markdown(mixed_plan(), NOW, URL, "--url")

    assert text.splitlines()[0] == f"Target: {URL} (from CODER_URL)"
    assert text.splitlines()[1] == ""
    assert markdown.splitlines()[0] == f"### keysync plan for {URL} (from --url)"
    assert render_text(Plan([]), NOW, target=target).startswith(target + "\n")


def test_every_destroying_action_names_the_live_key_it_destroys() -> None:
    text = render_text(mixed_plan(), NOW)
    markdown = render_markdown(mixed_plan(), NOW, URL)

    for name in ("old-used", "old-unused", "rotated"):
        assert f"destroys live key {name}, key_prefix" in action_block(text, name)
        assert any(f"| `{name}` |" in row and row.count(f"`{name}`") == 2 for row in markdown.splitlines())
    assert "destroys" not in action_block(text, "new-key")


def test_a_replace_names_the_generation_it_destroys_when_that_is_not_the_key_name() -> None:
    # The sink records gw-r2 as gw's (an overlap key switched to replace), but holds another secret.
    r2 = live("gw-r2", "PfxGwGen002", timedelta(days=2))
    manifest = Manifest.model_validate({"version": 1, "keys": ["gw"]})
    sink = SinkView({"gw": StoredEntry("gw", r2.id, r2.key_prefix, "PfxSomeElse", URL)})

    text = render_text(build_plan(manifest, [r2], sink, NOW, URL), NOW)

    assert "-/+ replace gw  (secret-stale)  destroys live key gw-r2, key_prefix PfxGwGen002" in text


def test_a_waiting_generation_says_when_it_retires_relative_to_now() -> None:
    old = live("gw", "abcdefghijk", timedelta(days=100), last_used=timedelta(minutes=2))
    plan = Plan([], waiting=[Waiting("gw", old, NOW + timedelta(minutes=8))])
    text = render_text(plan, NOW)
    assert (
        "~ waiting gw: previous generation gw (key_prefix abcdefghijk) last heartbeat 2 minutes ago" in text
    )
    assert "retired in 8 minutes" in text
    assert "2025-" not in text  # times for people are relative


def test_times_ahead_and_behind_read_as_people_say_them() -> None:
    assert ahead(NOW + timedelta(days=3, hours=5), NOW) == "in 3 days"
    assert ahead(NOW - timedelta(seconds=5), NOW) == "now"
    assert relative(NOW - timedelta(hours=1), NOW) == "1 hour ago"
    assert relative(NOW, NOW) == "just now"
