"""Reads YAML the way yaml.safe_load does, remembering the line of every value.

Only the standard scalar, sequence and mapping tags are accepted, aliases are expanded
under a budget (so an alias bomb is refused, not expanded), and duplicate keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from keysync.secret import redact_secret_like

Path = tuple[str | int, ...]

MAX_BYTES = 1 << 20  # 1 MiB, as SECURITY.md states: some 70,000 keys, validated in well under a second
_MAX_ALIAS_EXPANSIONS = 20_000
# libyaml parses about ten times faster; its nodes carry the same line marks.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader, resolving tags without PyYAML's Python lookups for every node: a quoted
    scalar, or one whose first character starts no implicit type (bool, int, null...), is a
    string, and a plain scalar seen before has the tag it had then."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        resolvers = self.yaml_implicit_resolvers
        self._fast = None not in resolvers and not self.yaml_path_resolvers  # what the rules assume
        self._starts = frozenset(key for key in resolvers if key)
        self._resolved: dict[str, str] = {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if not self._fast:
            return str(super().resolve(kind, value, implicit))
        if kind is not ScalarNode:
            return _MAP_TAG if kind is MappingNode else _SEQ_TAG
        if not implicit[0] or (value and value[0] not in self._starts):
            return _STR_TAG
        tag = self._resolved.get(value)
        if tag is None:
            tag = self._resolved[value] = str(super().resolve(kind, value, implicit))
        return tag


class YamlError(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = redact_secret_like(message)
        super().__init__(f"line {line}: {self.message}")


@dataclass
class Document:
    """The loaded data, and the YAML nodes it came from, to find the line of any path into it.

    Lines are looked up only for the paths a problem names, by walking the nodes: recording
    one for every value would cost more than the rest of loading a large manifest.
    """

    data: Any
    root: Node | None = None
    _indexes: dict[int, dict[str, tuple[Node, Node]]] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """The 1-based line of the value at `path`, or of the nearest enclosing one found."""
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for part in path:
            if isinstance(node, MappingNode) and isinstance(part, str) and part in self._index(node):
                key, node = self._index(node)[part]
                line = key.start_mark.line + 1  # an entry's line is its key's
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def _index(self, node: MappingNode) -> dict[str, tuple[Node, Node]]:
        index = self._indexes.get(id(node))
        if index is None:
            index = {key.value: (key, value) for key, value in node.value if isinstance(key, ScalarNode)}
            self._indexes[id(node)] = index
        return index


def load(raw: bytes) -> Document:
    if len(raw) > MAX_BYTES:
        raise YamlError(1, f"the file is larger than {MAX_BYTES >> 20} MiB, the most a manifest may be")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(_line_at(raw, exc.start), "not UTF-8 text") from None
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise YamlError(1, str(exc).splitlines()[0]) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(None)
        return Document(_Builder(loader).value(root), root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(line, _yaml_reason(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlError(1, str(exc).splitlines()[0]) from None
    except RecursionError:
        raise YamlError(1, "nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise YamlError(1, f"a value cannot be read: {type(exc).__name__}") from None
    finally:
        loader.dispose()


def _line_at(raw: bytes, offset: int) -> int:
    return raw[:offset].count(b"\n") + 1


def _yaml_reason(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    return "invalid YAML: " + ", ".join(parts)


class _Builder:
    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._budget = _MAX_ALIAS_EXPANSIONS
        self._seen: set[int] = set()

    def value(self, node: Node) -> Any:
        if id(node) in self._seen:  # reached again through an alias
            self._budget -= 1
            if self._budget < 0:
                raise YamlError(
                    node.start_mark.line + 1, "aliases expand to too many values (an alias bomb?)"
                )
        else:
            self._seen.add(id(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if isinstance(node, MappingNode):
            return self._mapping(node)
        self._require_tag(node, _SEQ_TAG)
        return [self.value(item) for item in node.value]

    def _mapping(self, node: MappingNode) -> dict[str, Any]:
        self._require_tag(node, _MAP_TAG)
        SafeConstructor.flatten_mapping(self._loader, node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise YamlError(key_node.start_mark.line + 1, f"mapping key {key!r} is not a string")
            if key in result:
                raise YamlError(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            result[key] = self.value(value_node)
        return result

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag == _STR_TAG:  # most of a manifest: spare the constructor's dispatch
            return node.value
        if not node.tag.startswith("tag:yaml.org,2002:") or node.tag.endswith(("binary", "set")):
            raise YamlError(node.start_mark.line + 1, f"tag {node.tag!r} is not allowed")
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except Exception:  # PyYAML's constructors raise assorted errors on bad scalars
            line = node.start_mark.line + 1
            raise YamlError(
                line, f"{node.value[:40]!r} is not a valid {node.tag.rsplit(':', 1)[-1]}"
            ) from None

    @staticmethod
    def _require_tag(node: Node, tag: str) -> None:
        if node.tag != tag:
            raise YamlError(node.start_mark.line + 1, f"tag {node.tag!r} is not allowed")
