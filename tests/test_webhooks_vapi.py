"""POST /api/webhooks/vapi: authenticated by the shared secret, each event recorded once."""
from __future__ import annotations

import json
from typing import Any

from tests.conftest import VAPI_SECRET, assert_error

URL = "/api/webhooks/vapi"
AUTH = {"X-Vapi-Secret": VAPI_SECRET}


def report(call_id: str = "0b5c2f52-9b1a-4c1e-8d55-6f0e2a9f1c11") -> dict[str, Any]:
    # The end-of-call-report envelope of providers.md 1.7.
    return {"message": {"type": "end-of-call-report", "call": {"id": call_id}, "endedReason": "customer-ended-call",
                        "startedAt": "2026-12-03T10:00:00Z", "endedAt": "2026-12-03T10:03:30Z",
                        "artifact": {"transcript": "AI: Hello\nUser: Hi"}, "analysis": {"summary": "A short call"}}}


async def test_a_report_is_recorded_once(client: Any, db: Any) -> None:
    resp = await client.post(URL, json=report(), headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"received": True, "duplicate": False}
    resp = await client.post(URL, json=report(), headers=AUTH)  # VAPI may deliver twice
    assert await resp.json() == {"received": True, "duplicate": True}
    rows = await db.fetch("SELECT provider, event_key, event_type, payload FROM webhook_events")
    assert len(rows) == 1
    assert rows[0]["event_key"] == "0b5c2f52-9b1a-4c1e-8d55-6f0e2a9f1c11:end-of-call-report"
    assert json.loads(rows[0]["payload"])["message"]["analysis"]["summary"] == "A short call"


async def test_status_updates_are_one_per_status(client: Any, db: Any) -> None:
    for status in ("ringing", "in-progress", "in-progress", "ended"):
        body = {"message": {"type": "status-update", "status": status, "call": {"id": "c1"}}}
        assert (await client.post(URL, json=body, headers=AUTH)).status == 200
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 3


async def test_bearer_form_is_accepted(client: Any, db: Any) -> None:
    resp = await client.post(URL, json=report("c2"), headers={"Authorization": f"Bearer {VAPI_SECRET}"})
    assert resp.status == 200


async def test_tool_calls_get_one_result_per_call(client: Any, db: Any) -> None:
    body = {"message": {"type": "tool-calls", "call": {"id": "c3"}, "toolCallList": [
        {"id": "tc1", "type": "function", "function": {"name": "book_appointment", "arguments": "{}"}}]}}
    resp = await client.post(URL, json=body, headers=AUTH)
    assert resp.status == 200
    (result,) = (await resp.json())["results"]
    assert result["toolCallId"] == "tc1" and result["name"] == "book_appointment" and result["error"]


async def test_auth_failures(client: Any, make_client: Any, db: Any) -> None:
    for headers in ({}, {"X-Vapi-Secret": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-Vapi-Secret": ""}):
        resp = await client.post(URL, json=report(), headers=headers)
        assert resp.status == 401, headers
        assert_error(await resp.json(), "unauthorized")
    unset = await make_client(vapi_webhook_secret=None)  # fail closed
    resp = await unset.post(URL, json=report(), headers=AUTH)
    assert resp.status == 401
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_bad_payloads(client: Any, db: Any) -> None:
    for body in ({}, {"message": {}}, {"message": "x"}, {"message": {"type": ""}}, []):
        resp = await client.post(URL, json=body, headers=AUTH)
        assert resp.status == 400, body
        assert_error(await resp.json(), "invalid_request")
    resp = await client.post(URL, data=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_malformed_tool_calls_are_refused_before_anything_is_recorded(client: Any, db: Any) -> None:
    for tool_calls in (5, [{"id": "t1", "function": "book"}], [{"id": "t1", "function": [1]}], [{"function": {"name": "x"}}],
                       [{"id": 5, "function": {"name": {"x": 1}}}]):
        body = {"message": {"type": "tool-calls", "call": {"id": "c9"}, "toolCallList": tool_calls}}
        resp = await client.post(URL, json=body, headers=AUTH)
        if tool_calls == 5:  # not a list: the richer toolWithToolCallList is used instead (absent: no calls)
            assert resp.status == 200 and await resp.json() == {"results": []}
            continue
        assert resp.status == 400, (tool_calls, await resp.text())
        assert_error(await resp.json(), "invalid_request")
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE event_type = 'tool-calls'") == 1


async def test_tool_calls_from_the_nested_list_get_results(client: Any, db: Any) -> None:
    body = {"message": {"type": "tool-calls", "toolWithToolCallList": [
        {"type": "function", "function": {"name": "check_slots"},
         "toolCall": {"id": "tc7", "type": "function", "function": {"name": "check_slots", "arguments": {"day": "tue"}}}}]}}
    resp = await client.post(URL, json=body, headers=AUTH)
    assert (await resp.json())["results"][0]["toolCallId"] == "tc7"


async def test_over_long_ids_are_refused_and_secrets_are_never_stored(client: Any, db: Any) -> None:
    resp = await client.post(URL, json={"message": {"type": "end-of-call-report", "call": {"id": "a" * 4000}}}, headers=AUTH)
    assert resp.status == 400
    resp = await client.post(URL, json={"message": {"type": "status-update", "status": "x" * 5000, "call": {"id": "c"}}},
                             headers=AUTH)
    assert resp.status == 400
    body = report("c10")
    body["message"]["assistant"] = {"id": "a1", "server": {"url": "http://x", "headers": {"X-Vapi-Secret": VAPI_SECRET}}}
    assert (await client.post(URL, json=body, headers=AUTH)).status == 200
    stored = await db.fetchval("SELECT payload::text FROM webhook_events")
    assert VAPI_SECRET not in stored and "[redacted]" in stored
