"""Stripe's wire details shared by the fake's modules: ids, bracket form-encoding, signatures, errors."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from typing import Any

_ALNUM = string.ascii_letters + string.digits


def mint(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def parse_form(pairs: Any) -> dict[str, Any]:
    """``a[b][0][c]=v`` pairs to nested dicts, with all-digit keys turned into lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        path = [key.split("[", 1)[0]] + re.findall(r"\[([^\]]*)\]", key)
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        last = path[-1] if path[-1] != "" else str(len(node))
        node[last] = value

    def listify(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = {k: listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
        return node
    return listify(root)


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's scheme, written independently of the SDK: HMAC-SHA256 over "<t>.<body>", whole secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, decline_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        self.body.update({k: v for k, v in {"code": code, "param": param, "decline_code": decline_code}.items() if v})


def _missing(kind: str, ident: str, param: str | None = None) -> StripeError:
    return StripeError(404 if param is None else 400, f"No such {kind}: '{ident}'", code="resource_missing",
                       param=param)


def _truthy(value: Any) -> bool:
    return str(value).lower() == "true"
