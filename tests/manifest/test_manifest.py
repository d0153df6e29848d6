"""The manifest loader: every problem at once as FILE:LINE: FIELD: message, hostile input refused."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysync.errors import ManifestError
from keysync.manifest.load import LoadedManifest, load_manifest, parse_manifest
from keysync.manifest.sinks import FileSinkConfig

from conftest import KEYSYNC

# Shaped like a real Coder session token: <10 alnum id>-<22 alnum secret>.
TOKEN = "Zq8Xv2LmPa-4tY7uW1sR9kD3fG6hJ0cB5"
# Shaped like an AI Gateway key: 43 alphanumerics.
GATEWAY_KEY = "Ab3dE6gH9jKlMnOpQrStUvWxYz0123456789ABCDEFG"
FULL_EXAMPLE = """\
# yaml-language-server: $schema=https://example.com/schemas/keysync.schema.json
version: 1
coderd:
  url: https://coder.example.com
  api: auto
sink:
  type: file
  path: secrets/ai-gateway-keys.json
policy:
  prune: true
  max_deletes: 5
  ignore: ["legacy-*"]
  protect: ["prod-*"]
  rotate_after: 90d
  rotation: replace
  on_missing_secret: replace
keys:
  - gateway-us-east
  - name: gateway-eu-west
    rotate_after: 30d
"""


def write(tmp_path: Path, text: str | bytes, name: str = "keysync.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def load(tmp_path: Path, text: str | bytes) -> LoadedManifest:
    return load_manifest(write(tmp_path, text))


def problems(tmp_path: Path, text: str | bytes) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.problems, "a ManifestError must carry at least one problem"
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def problem_at(found: list[str], path: Path, line: int, field: str) -> str:
    """The problem reported as `PATH:LINE: FIELD: ...`; fails listing all of them otherwise."""
    prefix = f"{path}:{line}: {field}: "
    matches = [p for p in found if p.startswith(prefix)]
    assert matches, f"no problem starting with {prefix!r} in {found}"
    return matches[0]


# --- the plain form and the full example -------------------------------------------------------


def test_plain_form_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    text = "version: 1\nkeys:\n  - gateway-us-east\n  - gateway-eu-west\n"
    loaded = load(tmp_path, text)
    manifest = loaded.manifest
    assert manifest.names() == ["gateway-us-east", "gateway-eu-west"]
    assert manifest.coderd.url is None
    assert manifest.coderd.api == "auto"
    assert manifest.policy.prune is True
    assert manifest.policy.max_deletes == 5
    assert manifest.policy.ignore == [] and manifest.policy.protect == []
    assert manifest.policy.rotate_after is None
    assert manifest.policy.rotation == "replace"
    assert manifest.policy.on_missing_secret == "replace"
    assert manifest.sink.type == "file"
    sink = FileSinkConfig.model_validate(manifest.sink.options())
    assert sink.path == "secrets/ai-gateway-keys.json"
    assert sink.format == "json"
    assert loaded.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert loaded.directory == tmp_path


def test_the_example_manifest_of_the_contract_loads(tmp_path: Path) -> None:
    manifest = load(tmp_path, FULL_EXAMPLE).manifest
    assert manifest.names() == ["gateway-us-east", "gateway-eu-west"]
    assert manifest.policy.ignore == ["legacy-*"]
    assert manifest.policy.protects("prod-eu")
    assert manifest.rotate_after(manifest.keys[0]) == timedelta(days=90)
    assert manifest.rotate_after(manifest.keys[1]) == timedelta(days=30)
    assert manifest.coderd.url == "https://coder.example.com"


def test_missing_file_is_a_manifest_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(path) in str(caught.value)


def test_version_is_required(tmp_path: Path) -> None:
    found = problems(tmp_path, "keys: [a]\n")
    assert any("version" in p for p in found), found


@pytest.mark.parametrize("version", ["2", "0", "'1'", "v1"])
def test_unsupported_version_names_the_field_and_quotes_the_value(tmp_path: Path, version: str) -> None:
    found = problems(tmp_path, f"keys: [a]\nversion: {version}\n")
    message = problem_at(found, tmp_path / "keysync.yaml", 2, "version")
    assert version.strip("'") in message


# --- every problem, with file, line and field, all at once -------------------------------------


def test_unknown_fields_are_reported_with_line_and_dotted_field(tmp_path: Path) -> None:
    text = (
        "version: 1\n"  # 1
        "colour: blue\n"  # 2
        "policy:\n"  # 3
        "  prnue: false\n"  # 4
        "keys:\n"  # 5
        "  - alpha\n"  # 6
        "  - name: beta\n"  # 7
        "    rotate: 30d\n"  # 8
    )
    found = problems(tmp_path, text)
    path = tmp_path / "keysync.yaml"
    problem_at(found, path, 2, "colour")
    problem_at(found, path, 4, "policy.prnue")
    problem_at(found, path, 8, "keys[1].rotate")
    assert len(found) == 3, found


@pytest.mark.parametrize(
    ("snippet", "line", "field", "quoted"),
    [
        ("policy:\n  prune: maybe\n", 3, "policy.prune", "maybe"),
        ("policy:\n  max_deletes: many\n", 3, "policy.max_deletes", "many"),
        ("policy:\n  max_deletes: -1\n", 3, "policy.max_deletes", "-1"),
        ("policy:\n  ignore: legacy-*\n", 3, "policy.ignore", "legacy-*"),
        ("policy:\n  on_missing_secret: ignore\n", 3, "policy.on_missing_secret", "ignore"),
        ("policy:\n  rotation: sometimes\n", 3, "policy.rotation", "sometimes"),
        ("coderd:\n  api: v3\n", 3, "coderd.api", "v3"),
        ("coderd: https://coder.example.com\n", 2, "coderd", "https://coder.example.com"),
        ("keys: gateway\n", 2, "keys", "gateway"),
    ],
)
def test_wrong_types_name_line_and_field_and_quote_the_value(
    tmp_path: Path, snippet: str, line: int, field: str, quoted: str
) -> None:
    found = problems(tmp_path, "version: 1\n" + snippet)
    assert quoted in problem_at(found, tmp_path / "keysync.yaml", line, field)


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ("policy:\n  max_deletes: true\n", "policy.max_deletes"),
        ("policy:\n  prune: 1\n", "policy.prune"),
    ],
)
def test_values_of_another_yaml_type_are_not_silently_coerced(
    tmp_path: Path, snippet: str, field: str
) -> None:
    # `max_deletes: true` meaning 1, or `prune: 1` meaning true, is a wrong type, not a setting.
    found = problems(tmp_path, "version: 1\n" + snippet)
    problem_at(found, tmp_path / "keysync.yaml", 3, field)


def test_version_true_is_a_wrong_type_not_version_one(tmp_path: Path) -> None:
    found = problems(tmp_path, "version: true\nkeys: [a]\n")
    problem_at(found, tmp_path / "keysync.yaml", 1, "version")


@pytest.mark.parametrize(
    "name",
    ["Gateway", "gateway_us", "-gateway", "gateway-", "gate--way", "gate way", "ümlaut", "a" * 65],
)
def test_invalid_names_are_reported_with_the_name(tmp_path: Path, name: str) -> None:
    found = problems(tmp_path, f"version: 1\nkeys:\n  - ok-name\n  - '{name}'\n")
    message = problem_at(found, tmp_path / "keysync.yaml", 4, "keys[1].name")
    assert name[:20] in message


def test_a_name_of_64_characters_is_valid(tmp_path: Path) -> None:
    name = "a" * 30 + "-" + "b" * 33
    assert len(name) == 64
    assert load(tmp_path, f"version: 1\nkeys: [{name}]\n").manifest.names() == [name]


def test_duplicate_names_point_at_the_repeat_and_the_first(tmp_path: Path) -> None:
    text = "version: 1\nkeys:\n  - alpha\n  - beta\n  - name: alpha\n    rotate_after: 30d\n"
    found = problems(tmp_path, text)
    message = problem_at(found, tmp_path / "keysync.yaml", 5, "keys[2]")
    assert "alpha" in message and "duplicate" in message
    assert "keys[0]" in message


def test_a_key_matching_policy_ignore_is_an_error(tmp_path: Path) -> None:
    text = "version: 1\npolicy:\n  ignore: ['legacy-*']\nkeys:\n  - current\n  - legacy-one\n"
    found = problems(tmp_path, text)
    message = problem_at(found, tmp_path / "keysync.yaml", 6, "keys[1]")
    assert "legacy-one" in message and "ignore" in message
    assert len(found) == 1, found


def test_every_kind_of_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "version: 1\n"  # 1
        "bogus: 1\n"  # 2
        "sink:\n"  # 3
        "  type: file\n"  # 4
        "  format: yaml\n"  # 5
        "policy:\n"  # 6
        "  ignore: ['legacy-*']\n"  # 7
        "  max_deletes: many\n"  # 8
        "keys:\n"  # 9
        "  - Bad_Name\n"  # 10
        "  - alpha\n"  # 11
        "  - alpha\n"  # 12
        "  - legacy-x\n"  # 13
        "  - name: beta\n"  # 14
        "    rotate_after: 5y\n"  # 15
    )
    found = problems(tmp_path, text)
    path = tmp_path / "keysync.yaml"
    problem_at(found, path, 2, "bogus")
    problem_at(found, path, 5, "sink.format")
    problem_at(found, path, 8, "policy.max_deletes")
    problem_at(found, path, 10, "keys[0].name")
    problem_at(found, path, 12, "keys[2]")
    problem_at(found, path, 13, "keys[3]")
    problem_at(found, path, 15, "keys[4].rotate_after")
    assert len(found) == 7, found
    assert found == sorted(found, key=lambda p: int(p.split(":")[1])), "problems in file order"


def test_problems_follow_the_file_line_field_message_format(tmp_path: Path) -> None:
    found = problems(tmp_path, "version: 1\npolicy:\n  prune: maybe\nkeys: [Bad]\n")
    pattern = re.compile(rf"^{re.escape(str(tmp_path / 'keysync.yaml'))}:\d+: [\w.\[\]]+: \S.*$")
    assert found and all(pattern.match(p) for p in found), found


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("1w2d", timedelta(days=9)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("1w1d1h1m1s", timedelta(days=8, hours=1, minutes=1, seconds=1)),
    ],
)
def test_good_durations_are_accepted_at_policy_and_key_level(
    tmp_path: Path, text: str, expected: timedelta
) -> None:
    manifest = load(
        tmp_path,
        f"version: 1\npolicy:\n  rotate_after: {text}\nkeys:\n  - a\n  - name: b\n    rotate_after: {text}\n",
    ).manifest
    assert manifest.rotate_after(manifest.keys[0]) == expected
    assert manifest.rotate_after(manifest.keys[1]) == expected


@pytest.mark.parametrize("text", ["90", "5y", "0d", "0s0m", "d", "1.5d", "-1d", "90 d", "'1w 2d'", "P90D"])
def test_bad_durations_name_the_field_and_quote_the_value(tmp_path: Path, text: str) -> None:
    found = problems(tmp_path, f"version: 1\nkeys:\n  - name: a\n    rotate_after: {text}\n")
    message = problem_at(found, tmp_path / "keysync.yaml", 4, "keys[0].rotate_after")
    assert text.strip("'") in message


def test_bad_policy_duration_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, "version: 1\npolicy:\n  rotate_after: 5y\n")
    assert "5y" in problem_at(found, tmp_path / "keysync.yaml", 3, "policy.rotate_after")


# --- sink settings per type --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sink",
    [
        "  type: file\n  path: out/keys.env\n  format: env\n  prefix: AIGW_\n",
        "  type: directory\n  path: /run/keys\n",
        "  type: vault\n  address: https://vault.example.com:8200\n  mount: kv\n  path: team/{name}\n"
        "  namespace: team-a\n  auth:\n    method: approle\n    role_id: r\n    secret_id_file: /run/id\n",
        "  type: exec\n  command: [store-secret, --quiet]\n  remove_command: [drop-secret]\n",
    ],
)
def test_valid_settings_of_each_builtin_sink_load(tmp_path: Path, sink: str) -> None:
    manifest = load(tmp_path, "version: 1\nsink:\n" + sink + "keys: [a]\n").manifest
    declared = sink.split("\n")[0].removeprefix("  type: ")
    assert manifest.sink.type == declared
    assert manifest.sink.options()["type"] == declared


@pytest.mark.parametrize(
    ("sink", "line", "field"),
    [
        ("  type: file\n  format: yaml\n", 4, "sink.format"),
        ("  type: file\n  prefix: lower\n", 4, "sink.prefix"),
        ("  type: file\n  mode: '0644'\n", 4, "sink.mode"),
        ("  type: directory\n  format: env\n", 4, "sink.format"),
        ("  type: vault\n  path: keysync/fixed\n", 4, "sink.path"),
        ("  type: vault\n  auth:\n    method: kerberos\n", 5, "sink.auth.method"),
        ("  type: vault\n  auth:\n    token: x\n", 5, "sink.auth.token"),
        ("  type: exec\n  command: []\n", 4, "sink.command"),
        ("  type: exec\n  command: store-secret\n", 4, "sink.command"),
        ("  type: no-such-sink\n", 3, "sink.type"),
    ],
)
def test_sink_settings_are_validated_by_the_sink_type(
    tmp_path: Path, sink: str, line: int, field: str
) -> None:
    found = problems(tmp_path, "version: 1\nsink:\n" + sink + "keys: [a]\n")
    problem_at(found, tmp_path / "keysync.yaml", line, field)


def test_exec_sink_without_command_names_the_missing_field(tmp_path: Path) -> None:
    found = problems(tmp_path, "version: 1\nsink:\n  type: exec\nkeys: [a]\n")
    assert any(": sink.command: " in p for p in found), found


# --- hostile input: refused fast, with one clear error -----------------------------------------


def refused(tmp_path: Path, raw: str | bytes) -> str:
    found = problems(tmp_path, raw)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'keysync.yaml'}:")
    return found[0]


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    message = refused(tmp_path, "\n".join(lines) + "\nversion: 1\n")
    assert "alias" in message or "too many" in message


def test_python_object_tags_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"version: 1\nkeys: !!python/object/apply:os.system ['touch {marker}']\n"
    message = refused(tmp_path, text)
    assert "python/object" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "version: !!python/name:os.system\n",
        "version: 1\nkeys:\n  - !!python/object/new:subprocess.Popen [['touch', 'MARK']]\n",
        "version: 1\ncoderd: !!python/object:collections.OrderedDict {url: x}\n",
        "version: 1\nkeys: !custom [a]\n",
        "version: 1\nkeys: !!binary aGVsbG8=\n",
        "version: 1\nkeys: !!set {a: null}\n",
    ],
)
def test_non_standard_tags_are_refused(tmp_path: Path, text: str) -> None:
    marker = tmp_path / "MARK"
    refused(tmp_path, text.replace("MARK", str(marker)))
    assert not marker.exists()


def test_binary_garbage_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, bytes(range(256)) * 4)
    assert "UTF-8" in message


def test_utf16_text_is_refused_as_not_utf8(tmp_path: Path) -> None:
    refused(tmp_path, "version: 1\nkeys: [a]\n".encode("utf-16"))


@pytest.mark.parametrize("raw", [b"version: 1\x00\n", b"version: 1\nkeys: [\x07]\n", b"version: 1\x1b[31m\n"])
def test_control_characters_are_refused_with_a_manifest_error(tmp_path: Path, raw: bytes) -> None:
    refused(tmp_path, raw)


@pytest.mark.parametrize(
    "root", ["- alpha\n- beta\n", "just a string\n", "42\n", "", "# only a comment\n", "null\n"]
)
def test_a_root_that_is_not_a_mapping_is_refused(tmp_path: Path, root: str) -> None:
    message = refused(tmp_path, root)
    assert "mapping" in message


def test_tabs_for_indentation_are_refused_with_their_line(tmp_path: Path) -> None:
    message = refused(tmp_path, "version: 1\nkeys:\n\t- alpha\n")
    assert message.startswith(f"{tmp_path / 'keysync.yaml'}:3: ")


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    raw = b"version: 1\n# " + b"x" * (16 << 20) + b"\n"
    message = refused(tmp_path, raw)
    assert "larger" in message or "too large" in message or "bytes" in message


def test_yaml_duplicate_mapping_keys_are_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "version: 1\nkeys: [a]\nkeys: [b]\n")
    assert message.startswith(f"{tmp_path / 'keysync.yaml'}:3: ")


def test_multiple_documents_are_refused(tmp_path: Path) -> None:
    refused(tmp_path, "version: 1\nkeys: [a]\n---\nversion: 1\n")


@pytest.mark.parametrize(
    "text",
    [
        "version: " + "1" * 5000 + "\n",
        "version: 2001-13-45\n",
        "version: !!int abc\n",
        "version: !!float abc\n",
        "version: !!bool abc\n",
        "version: !!timestamp yesterday\n",
    ],
)
def test_scalars_that_fail_to_construct_are_a_manifest_error(tmp_path: Path, text: str) -> None:
    refused(tmp_path, text)


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_a_manifest_error_not_a_crash(tmp_path: Path, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    depth = 5000
    refused(tmp_path, "version: 1\nkeys: " + opener * depth + "1" + closer * depth + "\n")


@pytest.mark.parametrize(
    "text",
    [
        f"version: 1\ncoderd:\n  api: {TOKEN}\n",
        f"version: 1\ncoderd:\n  api: Bearer {TOKEN}\n",
        f"version: 1\ncoderd:\n  token: {TOKEN}\n",
        f"version: 1\nCODER_SESSION_TOKEN: {TOKEN}\n",
        f"version: {TOKEN}\n",
        f"version: 1\npolicy:\n  prune: [{TOKEN}]\n",
        f"version: 1\npolicy:\n  max_deletes: {{token: {TOKEN}}}\n",
        f"version: 1\nsink:\n  type: file\n  format: {TOKEN}\n",
        f"version: 1\nsink:\n  type: {TOKEN}\n",
        f"version: 1\nkeys:\n  - {TOKEN}\n",
        f"version: 1\nkeys:\n  - name: a\n    rotate_after: {TOKEN}\n",
        f"version: 1\ncoderd:\n  url: https://coder.example.com\n  url: {TOKEN}\n",
        f"version: 1\nkeys: [{TOKEN}\n",
        f"version: !!int {TOKEN}\n",
        f"version: 1\npolicy:\n  prune: !!bool {TOKEN}\n",
        f"version: 1\npolicy:\n  rotate_after: !!timestamp {TOKEN}\n",
        f"version: 1\npolicy:\n  max_deletes: !!float {GATEWAY_KEY}\n",
        f"version: 1\ncoderd:\n  api: {GATEWAY_KEY}\n",
        f"version: 1\nkeys:\n  - {GATEWAY_KEY}\n",
        f"version: 1\n{TOKEN}: x\n",
        f"version: 1\ncoderd:\n  {TOKEN}: x\n",
        f"version: 1\ncoderd:\n  {TOKEN}: x\n  {TOKEN}: y\n",
    ],
)
def test_a_secret_looking_value_is_never_echoed_in_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    for secret in (TOKEN, GATEWAY_KEY):
        assert not echoes(message, secret), message


def echoes(message: str, secret: str) -> bool:
    """Whether any 16 consecutive characters of the secret show in the message."""
    return any(secret[i : i + 16] in message for i in range(len(secret) - 15))


def test_a_token_field_in_the_manifest_says_where_tokens_belong(tmp_path: Path) -> None:
    found = problems(tmp_path, f"version: 1\ncoderd:\n  token: {TOKEN}\n")
    message = problem_at(found, tmp_path / "keysync.yaml", 3, "coderd.token")
    assert "CODER_SESSION_TOKEN" in message


# --- fuzz: nothing but ManifestError ever leaves the loader ------------------------------------

YAMLISH = st.lists(
    st.sampled_from(
        [
            "version: 1\n",
            "version: ",
            "keys:",
            "\n  - ",
            "- ",
            "name: ",
            "policy:",
            "\n  ",
            "sink:",
            "type: ",
            "rotate_after: ",
            "90d",
            "0d",
            "alpha",
            "Bad_Name",
            "[",
            "]",
            "{",
            "}",
            ", ",
            ": ",
            "&a ",
            "*a",
            "<<: ",
            "!!int ",
            "!!float ",
            "!!bool ",
            "!!timestamp ",
            "!!str ",
            "!!null ",
            "!!binary ",
            "!!python/object:os.system ",
            "!local ",
            "2001-13-45",
            "2001-02-03",
            "12:30:00",
            "0x1F",
            "0o17",
            "1e999",
            ".nan",
            "~",
            "9" * 4400,
            "'",
            '"',
            "\\",
            "\t",
            "\x00",
            "\x07",
            "\ufeff",
            "---\n",
            "...\n",
            "%YAML 1.1\n",
            "#",
            "? ",
            "|",
            ">",
            "\n",
        ]
    ),
    max_size=30,
).map("".join)


def assert_only_manifest_errors(raw: bytes, path: Path) -> None:
    try:
        loaded = parse_manifest(raw, path)
    except ManifestError as exc:
        assert exc.problems
        assert all(p.startswith(f"{path}:") for p in exc.problems), exc.problems
    else:
        assert loaded.manifest.version == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes_raise_only_manifest_errors(raw: bytes) -> None:
    assert_only_manifest_errors(raw, Path("fuzz.yaml"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_fuzz_yaml_like_text_raises_only_manifest_errors(text: str) -> None:
    assert_only_manifest_errors(text.encode("utf-8", "surrogatepass"), Path("fuzz.yaml"))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_raises_only_manifest_errors(text: str) -> None:
    assert_only_manifest_errors(text.encode("utf-8", "surrogatepass"), Path("fuzz.yaml"))


def test_two_keys_that_would_share_an_env_variable_are_refused(tmp_path: Path) -> None:
    text = 'version: 1\nsink: {type: file, path: k.env, format: env}\nkeys: ["1abc", "key-1abc"]\n'
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert "KEY_1ABC" in found[0] and "'key-1abc'" in found[0]


# --- size: at most 1 MiB, validated in time linear in its size ------------------------------------

MIB = 1 << 20


def keys_up_to(size: int, head: str = "version: 1\nkeys:\n") -> str:
    """A valid manifest of exactly `size` bytes: as many keys as fit, padded with a comment."""
    lines, used, index = [head], len(head), 0
    while used + len(line := f"  - key-{index:07d}\n") <= size - 4:
        lines.append(line)
        used, index = used + len(line), index + 1
    return "".join(lines) + "#" * (size - used - 1) + "\n"


def validate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "NO_COLOR": "1"}
    command = [KEYSYNC, "validate", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_a_manifest_of_1_mib_validates_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    text = keys_up_to(MIB)
    (tmp_path / "keysync.yaml").write_text(text)
    (tmp_path / "big.yaml").write_text(text.replace("#\n", "##\n"))
    assert len((tmp_path / "keysync.yaml").read_bytes()) == MIB

    fits, too_big = validate(tmp_path), validate(tmp_path, "-f", "big.yaml")

    assert fits.returncode == 0, fits.stderr
    assert re.fullmatch(r"keysync\.yaml: valid \(\d{5} keys, sink file\)\n", fits.stdout), fits.stdout
    assert too_big.returncode == 1 and too_big.stdout == ""
    assert (
        too_big.stderr
        == "keysync: error: big.yaml:1: the file is larger than 1 MiB, the most a manifest may be\n"
    )


def test_an_endless_manifest_is_refused_after_reading_1_mib(tmp_path: Path) -> None:
    run = validate(tmp_path, "-f", "/dev/zero")  # read whole, it would never end

    assert run.returncode == 1
    assert "larger than 1 MiB" in run.stderr and "Traceback" not in run.stderr


def test_many_glob_patterns_are_refused_and_plain_names_do_not_count(tmp_path: Path) -> None:
    globs = ", ".join(f"'team-{i}-*'" for i in range(101))
    names = ", ".join(f"old-{i}" for i in range(5000))
    (tmp_path / "globs.yaml").write_text(f"version: 1\npolicy:\n  protect: [{globs}]\nkeys: [a]\n")
    (tmp_path / "names.yaml").write_text(f"version: 1\npolicy:\n  ignore: [{names}, 'x-*']\nkeys: [a]\n")

    refused, accepted = validate(tmp_path, "-f", "globs.yaml"), validate(tmp_path, "-f", "names.yaml")

    assert refused.returncode == 1, refused
    assert "globs.yaml:3: policy.protect: 101 glob patterns, at most 100" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr


def test_glob_patterns_match_as_fnmatch_does(tmp_path: Path) -> None:
    policy = load_manifest(write(tmp_path, "version: 1\npolicy:\n  ignore: [legacy-*, 't?-[0-9]', exact]\n"))
    ignores = policy.manifest.policy.ignores
    assert [
        name for name in ("legacy-a", "t1-5", "tx-9", "exact", "exact-r2", "exactly", "t1-x") if ignores(name)
    ] == [
        "legacy-a",
        "t1-5",
        "tx-9",
        "exact",
        "exact-r2",
    ]


@pytest.mark.parametrize("template", ["Bad_{name}", "-{name}", "{name}.", "gw/{name}", "{name}..x"])
def test_a_kubernetes_secret_name_kubernetes_would_refuse_is_a_validation_error(
    tmp_path: Path, template: str
) -> None:
    text = f"version: 1\nkeys: [alpha]\nsink:\n  type: kubernetes\n  secret_name: '{template}'\n"
    found = problems(tmp_path, text)
    assert "must be a Kubernetes name" in problem_at(found, tmp_path / "keysync.yaml", 5, "sink.secret_name")


@pytest.mark.parametrize("template", ["{name}", "gw-{name}", "ai.{name}-key", "{name}9"])
def test_a_kubernetes_secret_name_template_of_a_valid_name_loads(tmp_path: Path, template: str) -> None:
    text = f"version: 1\nkeys: [alpha]\nsink:\n  type: kubernetes\n  secret_name: '{template}'\n"
    assert load(tmp_path, text).manifest.sink.type == "kubernetes"
