"""VAPI server messages (the webhooks VAPI POSTs to us): verification, typed parsing, tool-call replies.

Contract: ../shared/providers.md section 1.7. VAPI sends the secret we configured in the assistant's
``server.headers`` back to us as ``X-Vapi-Secret`` (or, with a Bearer credential, in
``Authorization``). The body is an envelope ``{"message": {"type": ..., "call": {...}, ...}}``.
The secret is a shared header value, not a signature over the body: it proves the sender knows
the secret (send it over HTTPS only), but cannot detect a body altered in transit. VAPI's HMAC
credential kind would, but its format is undocumented (1.7), so it is not implemented here.
Re-exported by providers.vapi, which is where the gateway should import these from.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from providers.errors import ProviderError

PROVIDER = "vapi"
SECRET_HEADER = "X-Vapi-Secret"


# --------------------------------------------------------------------------- field readers (shared with calls)

def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def iso_z(moment: datetime) -> str:
    """VAPI's timestamp style: UTC, milliseconds, a trailing Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def duration_seconds_of(obj: Mapping[str, Any], call: Mapping[str, Any]) -> float | None:
    # The schema has no duration; real reports carry durationSeconds/durationMs anyway (1.7).
    if number_or_none(obj.get("durationSeconds")) is not None:
        return number_or_none(obj["durationSeconds"])
    if number_or_none(obj.get("durationMs")) is not None:
        return number_or_none(obj["durationMs"]) / 1000  # type: ignore[operator]
    start = _iso(obj.get("startedAt") or call.get("startedAt"))
    end = _iso(obj.get("endedAt") or call.get("endedAt"))
    return (end - start).total_seconds() if start and end else None


def artifact_field(obj: Mapping[str, Any], name: str) -> Any:
    # Current schema nests these under artifact; older payloads put them at the top (1.5, 1.7).
    artifact = obj.get("artifact") if isinstance(obj.get("artifact"), dict) else {}
    return artifact.get(name) or obj.get(name)


def summary_of(obj: Mapping[str, Any]) -> str | None:
    analysis = obj.get("analysis") if isinstance(obj.get("analysis"), dict) else {}
    return analysis.get("summary") or obj.get("summary")



# --------------------------------------------------------------------------- server messages
def verify_server_message(headers: Mapping[str, str], secret: str) -> bool:
    """True when the request carries our secret as ``X-Vapi-Secret: <secret>`` or
    ``Authorization: Bearer <secret>`` (1.7). Constant-time; an empty secret never verifies."""
    if not secret:
        return False
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    expected = secret.encode("utf-8", "surrogateescape")
    candidates = [lowered.get(SECRET_HEADER.lower(), "")]
    auth = lowered.get("authorization", "")
    candidates.append(auth[7:] if auth[:7].lower() == "bearer " else "")
    ok = False
    for candidate in candidates:  # compare both, always, so timing does not say which one was present
        # surrogateescape: header bytes that were not UTF-8 compare (unequal) instead of raising
        ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), expected)
    return ok


@dataclass(frozen=True)
class StatusUpdate:
    call_id: str | None
    status: str | None
    ended_reason: str | None
    call: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class EndOfCallReport:
    call_id: str | None
    call_type: str | None
    assistant_id: str | None
    phone_number_id: str | None
    customer_number: str | None
    ended_reason: str | None
    started_at: str | None
    ended_at: str | None
    duration_seconds: float | None
    cost: float | None
    transcript: str | None
    summary: str | None
    recording_url: str | None
    call: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCalls:
    call_id: str | None
    tool_calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class OtherMessage:
    type: str
    call_id: str | None
    message: Mapping[str, Any] = field(repr=False, compare=False)


def _bad(reason: str) -> ProviderError:
    return ProviderError(PROVIDER, f"malformed server message: {reason}", code="malformed_server_message")


def _arguments(value: Any) -> dict[str, Any]:
    # Schema: a JSON string; docs example: an object. Accept both (1.7).
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise _bad("tool call arguments are not JSON") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("tool call arguments are not an object")
    return value


def _tool_call(item: Any) -> ToolCall:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise _bad("tool call without an id")
    function = item.get("function") if isinstance(item.get("function"), dict) else {}
    name = function.get("name") or item.get("name")
    if not isinstance(name, str):
        raise _bad("tool call without a function name")
    args = function.get("arguments") if "arguments" in function else item.get("parameters", item.get("arguments"))
    return ToolCall(id=item["id"], name=name, arguments=_arguments(args))


ServerMessage = StatusUpdate | EndOfCallReport | ToolCalls | OtherMessage


def parse_server_message(body: bytes | str | Mapping[str, Any]) -> ServerMessage:
    """The typed form of one server message envelope ``{"message": {...}}``; ProviderError if malformed."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            raise _bad("not JSON") from None
    message = body.get("message") if isinstance(body, Mapping) else None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise _bad("no message.type")
    call = message.get("call") if isinstance(message.get("call"), dict) else {}
    call_id = call.get("id") if isinstance(call.get("id"), str) else None
    kind = message["type"]
    if kind == "status-update":
        return StatusUpdate(call_id=call_id, status=message.get("status"),
                            ended_reason=message.get("endedReason") or call.get("endedReason"), call=call)
    if kind == "end-of-call-report":
        customer = message.get("customer") or call.get("customer") or {}
        phone = message.get("phoneNumber") if isinstance(message.get("phoneNumber"), dict) else {}
        cost = number_or_none(message.get("cost"))
        return EndOfCallReport(
            call_id=call_id, call_type=call.get("type"), assistant_id=call.get("assistantId"),
            phone_number_id=call.get("phoneNumberId") or phone.get("id"),
            customer_number=customer.get("number") if isinstance(customer, dict) else None,
            ended_reason=message.get("endedReason") or call.get("endedReason"),
            started_at=message.get("startedAt") or call.get("startedAt"),
            ended_at=message.get("endedAt") or call.get("endedAt"),
            duration_seconds=duration_seconds_of(message, call),
            cost=cost if cost is not None else number_or_none(call.get("cost")),
            transcript=artifact_field(message, "transcript"), summary=summary_of(message),
            recording_url=artifact_field(message, "recordingUrl"), call=call)
    if kind == "tool-calls":
        items = message.get("toolCallList")
        if not isinstance(items, list):  # fall back to the richer list, which nests each call
            nested = message.get("toolWithToolCallList")
            items = [t.get("toolCall") for t in nested if isinstance(t, dict)] if isinstance(nested, list) else []
        return ToolCalls(call_id=call_id, tool_calls=tuple(_tool_call(i) for i in items))
    return OtherMessage(type=kind, call_id=call_id, message=message)


def tool_calls_reply(results: Sequence[tuple[ToolCall, Any]]) -> dict[str, Any]:
    """The reply VAPI expects to tool-calls: one entry per call; ``result`` is a string (JSON-encoded when
    structured); an Exception as the value becomes ``error`` (1.7)."""
    entries = []
    for call, value in results:
        entry: dict[str, Any] = {"toolCallId": call.id, "name": call.name}
        if isinstance(value, BaseException):
            entry["error"] = str(value)
        else:
            entry["result"] = value if isinstance(value, str) else json.dumps(value)
        entries.append(entry)
    return {"results": entries}
