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

_MAX_BYTES = 16 << 20
_MAX_ALIAS_EXPANSIONS = 20_000
# libyaml parses about ten times faster; its nodes carry the same line marks.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"


class YamlError(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = redact_secret_like(message)
        super().__init__(f"line {line}: {self.message}")


@dataclass
class Document:
    """The loaded data and, for every path into it, the 1-based line it came from."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


def load(raw: bytes) -> Document:
    if len(raw) > _MAX_BYTES:
        raise YamlError(1, f"file is larger than {_MAX_BYTES} bytes")
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
            return Document(None, {(): 1})
        return _Builder(loader).build(root)
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
        self._lines: dict[Path, int] = {}

    def build(self, root: Node) -> Document:
        return Document(self._value(root, ()), self._lines)

    def _value(self, node: Node, path: Path) -> Any:
        if id(node) in self._seen:  # reached again through an alias
            self._budget -= 1
            if self._budget < 0:
                raise YamlError(
                    node.start_mark.line + 1, "aliases expand to too many values (an alias bomb?)"
                )
        else:
            self._seen.add(id(node))
        self._lines[path] = node.start_mark.line + 1
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            self._require_tag(node, _SEQ_TAG)
            return [self._value(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node)

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        self._require_tag(node, _MAP_TAG)
        SafeConstructor.flatten_mapping(self._loader, node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._value(key_node, (*path, "<key>"))
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise YamlError(line, f"mapping key {key!r} is not a string")
            if key in result:
                raise YamlError(line, f"duplicate key {key!r}")
            result[key] = self._value(value_node, (*path, key))
            self._lines[(*path, key)] = line
        self._lines.pop((*path, "<key>"), None)
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
