"""The JSON Schema validator class used for request schemas, with ECMA-262 ``pattern`` semantics.

JSON Schema patterns are ECMA-262 regular expressions, where ``$`` means the end of the string.
Python's ``re`` also lets ``$`` match just before a final newline, so ``^[A-Z]{2}$`` would accept
``"FR\\n"``: a way to smuggle line breaks into stored values. Here an unescaped ``$`` outside a
character class becomes ``\\Z``.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Iterator

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError


@functools.lru_cache(maxsize=1024)
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"does not match {pattern!r}")


RequestValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})
