"""Strict YAML loading that remembers where every value came from.

PyYAML silently keeps the last of two duplicate keys; for an ops-edited file that hides mistakes,
so duplicates are reported as problems. Mappings and sequences come back as dict/list subclasses
carrying the 1-based line of each key or item, so any later check (JSON Schema, cross-checks) can
say ``file:line: message`` about the exact spot.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class LineDict(dict):
    line: int = 1
    key_lines: dict


class LineList(list):
    line: int = 1
    item_lines: list


class _Loader(yaml.SafeLoader):
    """SafeLoader that records lines and collects duplicate keys instead of overwriting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        self.flatten_mapping(node)
        out = LineDict()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:  # e.g. "? [a, b]": a YAML key that no config format uses
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value, not a list or mapping",
                                                        key_node.start_mark) from None
            if key in out:
                self.duplicates.append((line, f"duplicate key {key!r} (first defined on line {out.key_lines[key]})"))
                continue
            out[key] = self.construct_object(value_node, deep=True)
            out.key_lines[key] = line
        return out

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:  # type: ignore[override]
        out = LineList(self.construct_object(child, deep=True) for child in node.value)
        out.line = node.start_mark.line + 1
        out.item_lines = [child.start_mark.line + 1 for child in node.value]
        return out


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)


def load_yaml(path: Path, display_name: str) -> tuple[Any, list[Problem]]:
    """Parse one file. Returns (data or None, problems)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(display_name, 1, f"cannot read file: {exc.strerror or exc}")]
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        return None, [Problem(display_name, line, f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})")]
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = f"invalid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            # e.g. an unclosed bracket: the error surfaces lines later, so say where it began
            message += f" ({exc.context} on line {exc.context_mark.line + 1})"
        return None, [Problem(display_name, line, message)]
    except yaml.YAMLError as exc:
        return None, [Problem(display_name, 1, f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    problems = [Problem(display_name, line, msg) for line, msg in loader.duplicates]
    return data, problems


def line_of(data: Any, path: Iterable[Any]) -> int:
    """The line of the value at ``path`` (keys and indexes), or of the nearest enclosing node."""
    line = getattr(data, "line", 1)
    node = data
    for part in path:
        if isinstance(node, LineDict) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line
