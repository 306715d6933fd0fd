"""Contract tests: the real VAPI adapter against its fake, server messages, and parsers on example payloads."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web

from providers.errors import ProviderError
from providers.fakes.server import FakeServer
from providers.fakes.vapi import VapiFake
from providers.vapi import (SECRET_HEADER, EndOfCallReport, OtherMessage, StatusUpdate, ToolCalls, VapiClient,
                            function_tool, iso_z, parse_server_message, query_tool, tool_calls_reply, transfer_tool,
                            verify_server_message)

API_KEY = "sk-vapi-test-7f3c1a9e5b"
SECRET = "vapi-webhook-secret-4d2b8e6a"
DATA = Path(__file__).parent / "data" / "vapi"
BOOKING_PARAMS = {"type": "object", "properties": {"start": {"type": "string"}}, "required": ["start"]}


@pytest.fixture
async def vapi():
    fake = VapiFake(API_KEY)
    server = await FakeServer(fake.app).start()
    server.faults.timeout_seconds = 1.5
    client = VapiClient(API_KEY, base_url=server.url, timeout=5, backoff=0.01)
    yield SimpleNamespace(fake=fake, server=server, client=client)
    await client.close()
    await fake.close()
    await server.stop()


@pytest.fixture
async def receiver():
    """Stands in for the gateway: checks the secret like it will, records messages, answers tool-calls."""
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        ok = verify_server_message(request.headers, SECRET)
        got.append({"path": request.path, "verified": ok, "raw": raw, "headers": dict(request.headers)})
        if not ok:
            return web.json_response({"error": "bad secret"}, status=401)
        message = parse_server_message(raw)
        if isinstance(message, ToolCalls):
            return web.json_response(tool_calls_reply([(c, {"booked": c.arguments}) for c in message.tool_calls]))
        return web.json_response({})

    async def rude(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})  # not the results[] shape VAPI needs

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/tools", hook)
    app.router.add_post("/rude", rude)
    server = await FakeServer(app).start()
    yield SimpleNamespace(url=server.url, got=got)
    await server.stop()


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


# ------------------------------------------------------------------------------------ assistants
async def test_assistant_create_get_update(vapi):
    made = await vapi.client.create_assistant(
        name="Ada Dental", system_prompt="You answer for Ada Dental.", first_message="Hello, Ada Dental!",
        first_message_mode="assistant-speaks-first", voice={"provider": "11labs", "voiceId": "rachel"},
        server_url="http://gateway.test/api/webhooks/vapi", server_secret=SECRET, tool_ids=["t-1"])
    stored = vapi.fake.assistants[made.id]
    assert stored["model"]["messages"] == [{"role": "system", "content": "You answer for Ada Dental."}]
    assert stored["server"] == {"url": "http://gateway.test/api/webhooks/vapi", "headers": {SECRET_HEADER: SECRET}}
    assert (made.name, made.first_message, made.system_prompt, made.tool_ids) == (
        "Ada Dental", "Hello, Ada Dental!", "You answer for Ada Dental.", ("t-1",))
    assert made.voice == {"provider": "11labs", "voiceId": "rachel"}
    assert len(made.id) == 36 and made.id.count("-") == 4  # a UUID

    # Fields set elsewhere inside model survive a prompt change: the adapter sends the whole model back.
    stored["model"]["temperature"] = 0.3
    stored["model"]["messages"].append({"role": "assistant", "content": "an example turn"})
    updated = await vapi.client.update_assistant(made.id, system_prompt="New prompt.", tool_ids=["t-2", "t-3"],
                                                 first_message_mode="assistant-waits-for-user")
    model = vapi.fake.assistants[made.id]["model"]
    assert model["temperature"] == 0.3 and model["provider"] == "openai" and model["model"] == "gpt-4o"
    assert model["messages"] == [{"role": "system", "content": "New prompt."},
                                 {"role": "assistant", "content": "an example turn"}]
    assert updated.tool_ids == ("t-2", "t-3") and updated.first_message_mode == "assistant-waits-for-user"
    renamed = await vapi.client.update_assistant(made.id, name="Ada Dental Clinic", server_url=None)
    assert renamed.name == "Ada Dental Clinic" and renamed.system_prompt == "New prompt." and renamed.server_url is None
    assert (await vapi.client.get_assistant(made.id)).name == "Ada Dental Clinic"


async def test_fake_rejects_what_vapi_rejects(vapi):
    with pytest.raises(ProviderError) as exc:
        await vapi.client.get_assistant("00000000-0000-4000-8000-000000000000")
    assert (exc.value.provider, exc.value.status, exc.value.retryable) == ("vapi", 404, False)
    with pytest.raises(ProviderError) as exc:
        await vapi.client.create_assistant(name="x", system_prompt="p", first_message_mode="speak-whenever")
    assert exc.value.status == 400 and "firstMessageMode" in exc.value.message
    with pytest.raises(ProviderError) as exc:  # NestJS whitelisting catches drift in field names
        await vapi.client._api.request("POST", "/assistant", json_body={"name": "x", "forwardingPhoneNumber": "+1"})
    assert "property forwardingPhoneNumber should not exist" in exc.value.message
    with pytest.raises(ProviderError) as exc:  # unknown routes are NestJS 404s too
        await vapi.client._api.request("GET", "/nowhere")
    assert exc.value.status == 404 and "Cannot GET /nowhere" in exc.value.message


# ------------------------------------------------------------------------------------ tools and files
async def test_tools_transfer_query_function(vapi):
    transfer = await vapi.client.create_tool(transfer_tool("+14155550100", message="Transferring you now."))
    assert transfer.type == "transferCall"
    assert vapi.fake.tools[transfer.id]["destinations"] == [
        {"type": "number", "number": "+14155550100", "message": "Transferring you now."}]
    moved = await vapi.client.update_tool(transfer.id, transfer_tool("+14155550111"))
    assert moved.raw["destinations"][0]["number"] == "+14155550111" and moved.id == transfer.id
    with pytest.raises(ProviderError) as exc:
        await vapi.client.update_tool(transfer.id, transfer_tool("4155550111"))  # not E.164
    assert exc.value.status == 400 and "E.164" in exc.value.message

    faq = await vapi.client.upload_file("faq.txt", b"We open at 9am.", purpose="knowledge-base")
    kb = await vapi.client.create_tool(query_tool("business_knowledge", [faq.id], description="Opening hours"))
    assert kb.type == "query" and kb.name == "business_knowledge"
    assert vapi.fake.tools[kb.id]["knowledgeBases"][0] == {
        "provider": "google", "name": "knowledge-base", "description": "Opening hours", "fileIds": [faq.id]}
    with pytest.raises(ProviderError) as exc:
        await vapi.client.create_tool(query_tool("kb", ["no-such-file"]))
    assert exc.value.status == 400

    book = await vapi.client.create_tool(function_tool("book_appointment", "Books a slot", BOOKING_PARAMS,
                                                       server_url="http://gateway.test/tools", server_secret=SECRET))
    assert book.name == "book_appointment"
    assert vapi.fake.tools[book.id]["server"] == {"url": "http://gateway.test/tools",
                                                  "headers": {SECRET_HEADER: SECRET}}
    again = await vapi.client.update_tool(book.id, function_tool("book_appointment", "Books one slot", BOOKING_PARAMS))
    assert again.raw["function"]["description"] == "Books one slot"


async def test_file_upload_is_multipart_and_delete(vapi):
    made = await vapi.client.upload_file("menu.md", "Prices: cleaning $90".encode(), content_type="text/markdown")
    assert (made.name, made.bytes, made.status) == ("menu.md", 20, "done")
    assert vapi.fake.file_contents[made.id] == b"Prices: cleaning $90"
    assert await vapi.client._api.request("GET", f"/file/{made.id}") == vapi.fake.files[made.id]
    assert vapi.fake.files[made.id]["mimetype"] == "text/markdown"
    await vapi.client.delete_file(made.id)
    assert made.id not in vapi.fake.files
    with pytest.raises(ProviderError) as exc:
        await vapi.client.delete_file(made.id)
    assert exc.value.status == 404


# ------------------------------------------------------------------------------------ phone numbers and calls
async def test_phone_number_import_update_delete(vapi):
    assistant = await vapi.client.create_assistant(name="A", system_prompt="p")
    number = await vapi.client.import_twilio_number(
        number="+14155550100", twilio_account_sid="AC" + "1" * 32, twilio_auth_token="twilio-token-secret",
        assistant_id=assistant.id, name="Main line", server_url="http://gateway.test/hook", server_secret=SECRET)
    assert (number.number, number.provider, number.assistant_id, number.status) == (
        "+14155550100", "twilio", assistant.id, "active")
    listed = await vapi.client._api.request("GET", "/phone-number")
    assert isinstance(listed, list) and "twilio-token-secret" not in json.dumps(listed)  # never echoed
    with pytest.raises(ProviderError) as exc:
        await vapi.client.import_twilio_number(number="+14155550100", twilio_account_sid="AC" + "1" * 32,
                                               twilio_auth_token="twilio-token-secret")
    assert exc.value.status == 400 and "twilio-token-secret" not in str(exc.value)
    moved = await vapi.client.update_phone_number(number.id, assistant_id=None, name="After hours")
    assert moved.assistant_id is None and moved.name == "After hours"
    await vapi.client.delete_phone_number(number.id)
    assert vapi.fake.phone_numbers == {}


async def test_outbound_call_and_listing_with_time_filters(vapi):
    assistant = await vapi.client.create_assistant(name="A", system_prompt="p")
    number = await vapi.client.import_twilio_number(number="+14155550100", twilio_account_sid="AC" + "2" * 32,
                                                    twilio_auth_token="t")
    call = await vapi.client.create_outbound_call(assistant_id=assistant.id, phone_number_id=number.id,
                                                  customer_number="+14155550142", customer_name="Sam",
                                                  variable_values={"appointment": "Tuesday 10am"})
    assert (call.type, call.status, call.customer_number, call.assistant_id) == (
        "outboundPhoneCall", "queued", "+14155550142", assistant.id)
    assert vapi.fake.calls[call.id]["assistantOverrides"] == {"variableValues": {"appointment": "Tuesday 10am"}}
    with pytest.raises(ProviderError) as exc:
        await vapi.client._api.request("POST", "/call", json_body={
            "assistantId": assistant.id, "phoneNumberId": None, "customer": {"number": "+14155550142"}})
    assert exc.value.status == 400 and "phoneNumberId" in exc.value.message

    # Three calls on three days; the reconciliation window picks the middle one.
    base = datetime(2026, 11, 10, 12, tzinfo=timezone.utc)
    ids = []
    for day in range(3):
        c = await vapi.client.create_outbound_call(assistant_id=assistant.id, phone_number_id=number.id,
                                                   customer_number="+14155550142")
        vapi.fake.calls[c.id]["createdAt"] = vapi.fake.calls[c.id]["updatedAt"] = iso_z(base + timedelta(days=day))
        ids.append(c.id)
    window = await vapi.client.list_calls(created_after=base + timedelta(hours=12),
                                          created_before=base + timedelta(days=1, hours=12))
    assert [c.id for c in window] == [ids[1]]
    updated = await vapi.client.list_calls(updated_after=base + timedelta(days=1), assistant_id=assistant.id)
    assert {c.id for c in updated} == {ids[1], ids[2], call.id}
    assert [c.id for c in await vapi.client.list_calls(assistant_id=assistant.id, limit=2)] == [call.id, ids[2]]
    assert (await vapi.client.get_call(ids[0])).created_at == iso_z(base)


# ------------------------------------------------------------------------------------ faults
async def test_bad_key_is_a_clear_error_without_the_key(vapi):
    client = VapiClient("sk-wrong-key-123", base_url=vapi.server.url, backoff=0.01)
    with pytest.raises(ProviderError) as exc:
        await client.get_call("whatever")
    await client.close()
    err = exc.value
    assert (err.provider, err.status, err.retryable) == ("vapi", 401, False)
    assert "credentials" in err.message and "sk-wrong-key-123" not in str(err) and str(err).startswith("vapi:")


async def test_retries_for_safe_calls_only(vapi):
    assistant = await vapi.client.create_assistant(name="A", system_prompt="p")
    vapi.fake.faults.fail_next("5xx", times=2)
    assert (await vapi.client.get_assistant(assistant.id)).id == assistant.id
    vapi.fake.faults.fail_next("5xx")
    assert (await vapi.client.update_assistant(assistant.id, system_prompt="q")).system_prompt == "q"
    vapi.fake.faults.fail_next("429")
    assert await vapi.client.list_calls() == []
    vapi.fake.faults.fail_next("5xx")
    with pytest.raises(ProviderError) as exc:  # a create is not repeated: it could make two
        await vapi.client.create_tool(transfer_tool("+14155550100"))
    assert (exc.value.status, exc.value.retryable) == (503, True) and vapi.fake.tools == {}
    vapi.fake.faults.fail_next("429")
    with pytest.raises(ProviderError) as exc:
        await vapi.client.upload_file("a.txt", b"a")
    assert (exc.value.status, exc.value.retryable) == (429, True)


async def test_timeout_and_malformed_replies(vapi):
    client = VapiClient(API_KEY, base_url=vapi.server.url, timeout=0.3, backoff=0.01)
    vapi.fake.faults.fail_next("timeout")
    with pytest.raises(ProviderError) as exc:  # creating a call is never retried
        await client.create_outbound_call(assistant_id="a", phone_number_id="p", customer_number="+14155550142")
    assert exc.value.retryable and "timed out" in exc.value.message
    vapi.fake.faults.fail_next("timeout")
    assert await client.list_calls() == []  # a read is retried after the timeout
    vapi.fake.faults.fail_next("malformed")  # a 200 that is not JSON is not retried
    with pytest.raises(ProviderError) as exc:
        await client.get_call("x")
    assert exc.value.provider == "vapi" and "not JSON" in exc.value.message
    await client.close()

    # JSON of the wrong shape is refused too, not half-read: a listed call without an id.
    vapi.fake.calls["junk"] = {"createdAt": iso_z(datetime.now(timezone.utc)), "updatedAt": "x"}
    with pytest.raises(ProviderError) as exc:
        await vapi.client.list_calls()
    assert "unexpected reply shape" in exc.value.message


# ------------------------------------------------------------------------------------ server messages
async def test_played_inbound_call_arrives_verified_and_parses(vapi, receiver):
    assistant = await vapi.client.create_assistant(name="A", system_prompt="p", server_url=receiver.url + "/hook",
                                                   server_secret=SECRET)
    number = await vapi.client.import_twilio_number(number="+14155550100", twilio_account_sid="AC" + "3" * 32,
                                                    twilio_auth_token="t", assistant_id=assistant.id)
    played = await vapi.fake.play_inbound_call(assistant.id, seconds=95, caller="+14155550142",
                                               summary="Booked a cleaning.")
    assert played.delivered and all(g["verified"] for g in receiver.got)
    assert all(g["headers"][SECRET_HEADER] == SECRET for g in receiver.got)
    messages = [parse_server_message(g["raw"]) for g in receiver.got]
    assert [type(m).__name__ for m in messages] == ["StatusUpdate"] * 4 + ["EndOfCallReport"]
    assert [m.status for m in messages[:4]] == ["queued", "ringing", "in-progress", "ended"]
    assert messages[3].ended_reason == "customer-ended-call" and messages[0].ended_reason is None
    report = messages[4]
    assert isinstance(report, EndOfCallReport)
    assert (report.call_id, report.assistant_id, report.phone_number_id, report.customer_number) == (
        played.call["id"], assistant.id, number.id, "+14155550142")
    assert report.duration_seconds == 95 and report.cost == pytest.approx(95 / 60 * 0.10, abs=1e-4)
    assert report.summary == "Booked a cleaning." and report.transcript.startswith("AI: Thanks for calling")
    assert report.ended_reason == "customer-ended-call" and report.call_type == "inboundPhoneCall"
    # The envelope keeps the documented keys (1.7).
    envelope = json.loads(receiver.got[4]["raw"])["message"]
    assert {"type", "call", "timestamp", "customer", "assistant", "phoneNumber", "artifact", "analysis",
            "startedAt", "endedAt", "costs"} <= set(envelope)

    # Reconciliation sees the same call through the REST API, with the duration computed from the times.
    call = await vapi.client.get_call(played.call["id"])
    assert (call.status, call.summary, call.ended_reason) == ("ended", "Booked a cleaning.", "customer-ended-call")
    assert call.duration_seconds == pytest.approx(95, abs=0.01) and call.transcript == report.transcript


async def test_where_messages_go_and_wrong_secrets(vapi, receiver):
    # An assistant without a server: the fake's configured webhook URL and secret.
    fake = VapiFake(API_KEY, webhook_url=receiver.url + "/hook", webhook_secret=SECRET)
    bare = fake.assistants["a1"] = {"id": "a1", "name": "bare"}
    played = await fake.play_inbound_call("a1", seconds=10)
    assert played.delivered and receiver.got[-1]["verified"]
    # The legacy serverUrl/serverUrlSecret pair sends the secret as X-Vapi-Secret.
    bare.update(serverUrl=receiver.url + "/hook", serverUrlSecret=SECRET)
    assert (await fake.play_inbound_call("a1", seconds=10)).delivered
    # A wrong secret is refused by the gateway-side check.
    bare.update(serverUrlSecret="not-the-secret")
    played = await fake.play_inbound_call("a1", seconds=10)
    assert not played.delivered and {d.status for d in played.deliveries} == {401}
    # An unreachable URL is recorded (status None), not retried, and the call still ends.
    played = await fake.play_inbound_call("a1", seconds=10, url="http://127.0.0.1:9/hook")
    assert [d.status for d in played.deliveries] == [None] * 5 and fake.calls[played.call["id"]]["status"] == "ended"
    await fake.close()
    # Nowhere to send at all, or no such assistant: clear errors.
    lonely = VapiFake(API_KEY)
    lonely.assistants["a2"] = {"id": "a2"}
    with pytest.raises(ValueError, match="no server URL"):
        await lonely.play_inbound_call("a2")
    with pytest.raises(KeyError):
        await lonely.play_inbound_call("missing")
    await lonely.close()


async def test_tool_calls_go_to_the_tool_server_and_reply_is_checked(vapi, receiver):
    book = await vapi.client.create_tool(function_tool("book_appointment", "Books", BOOKING_PARAMS,
                                                       server_url=receiver.url + "/tools", server_secret=SECRET))
    assistant = await vapi.client.create_assistant(name="A", system_prompt="p", server_url=receiver.url + "/hook",
                                                   server_secret=SECRET, tool_ids=[book.id])
    reply = await vapi.fake.send_tool_calls(assistant.id, "book_appointment", {"start": "2026-12-04T10:00"})
    assert receiver.got[-1]["path"] == "/tools" and receiver.got[-1]["verified"]
    assert json.loads(reply["results"][0]["result"]) == {"booked": {"start": "2026-12-04T10:00"}}
    sent = parse_server_message(receiver.got[-1]["raw"])
    assert isinstance(sent, ToolCalls) and sent.tool_calls[0].arguments == {"start": "2026-12-04T10:00"}
    # A function with no tool of its own goes to the assistant's server.
    await vapi.fake.send_tool_calls(assistant.id, "check_availability", {"date": "2026-12-04"})
    assert receiver.got[-1]["path"] == "/hook"
    with pytest.raises(ValueError, match="results"):
        await vapi.fake.send_tool_calls(assistant.id, "book_appointment", {}, url=receiver.url + "/rude")


def test_verify_server_message():
    assert verify_server_message({"X-Vapi-Secret": SECRET}, SECRET)
    assert verify_server_message({"x-vapi-secret": SECRET}, SECRET)  # header names are case-insensitive
    assert verify_server_message({"Authorization": f"Bearer {SECRET}"}, SECRET)
    assert not verify_server_message({"X-Vapi-Secret": SECRET + "x"}, SECRET)
    assert not verify_server_message({"X-Vapi-Secret": SECRET[:-1]}, SECRET)
    assert not verify_server_message({"Authorization": SECRET}, SECRET)  # no Bearer prefix
    assert not verify_server_message({}, SECRET)
    assert not verify_server_message({"X-Vapi-Secret": ""}, "")  # no secret configured: nothing verifies


# ------------------------------------------------------------------------------------ parsers on example payloads
def test_parse_status_update_example():
    message = parse_server_message(json.dumps(load("status_update_ended.json")).encode())
    assert isinstance(message, StatusUpdate)
    assert (message.call_id, message.status, message.ended_reason) == (
        "5c1b7a52-3f0e-4d8e-9a61-2f4b0c9d7e13", "ended", "assistant-said-end-call-phrase")


def test_parse_end_of_call_report_examples():
    report = parse_server_message(load("end_of_call_report.json"))
    assert isinstance(report, EndOfCallReport)
    assert report.duration_seconds == 195.5  # endedAt - startedAt: the schema has no duration
    assert report.cost == 0.2875 and report.ended_reason == "customer-ended-call"
    assert report.summary.startswith("Caller asked about Saturday") and "walk-ins" in report.transcript
    assert report.phone_number_id == "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4"
    assert report.customer_number == "+14155550142" and report.recording_url.endswith("5c1b7a52.wav")
    legacy = parse_server_message(load("end_of_call_report_legacy.json"))
    assert (legacy.duration_seconds, legacy.cost, legacy.ended_reason) == (42.5, 0.071, "silence-timed-out")
    assert legacy.summary.startswith("The caller stayed silent") and legacy.transcript.startswith("AI: Hello")
    assert legacy.recording_url.endswith("old.wav") and legacy.phone_number_id == "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4"


def test_parse_tool_calls_examples_and_reply():
    message = parse_server_message(load("tool_calls.json"))
    assert isinstance(message, ToolCalls)
    first, second = message.tool_calls
    assert (first.id, first.name, first.arguments) == (
        "call_8f2a61c04d", "check_availability", {"date": "2026-12-04", "timezone": "America/Los_Angeles"})
    assert (second.name, second.arguments["name"]) == ("book_appointment", "Sam Lee")
    reply = tool_calls_reply([(first, {"slots": ["10:00"]}), (second, RuntimeError("That slot was just taken"))])
    assert reply == {"results": [
        {"toolCallId": "call_8f2a61c04d", "name": "check_availability", "result": '{"slots": ["10:00"]}'},
        {"toolCallId": "call_1b7e93aa52", "name": "book_appointment", "error": "That slot was just taken"}]}
    nested = parse_server_message(load("tool_calls_nested.json"))
    assert [(c.id, c.name, dict(c.arguments)) for c in nested.tool_calls] == [
        ("call_c0ffee0001", "cancel_appointment", {"bookingUid": "bk_91"})]


def test_parse_rest_examples_and_bad_messages():
    from providers.vapi import assistant_from, call_from
    assistant = assistant_from(load("assistant.json"))
    assert assistant.system_prompt == "You answer the phone for a dental practice."
    assert assistant.server_url == "https://gateway.example.com/api/webhooks/vapi"
    assert assistant.tool_ids == ("7d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f",)
    assert (assistant.first_message_mode, assistant.voice["voiceId"]) == ("assistant-speaks-first", "rachel")
    call = call_from(load("call.json"))
    assert (call.duration_seconds, call.summary, call.customer_number, call.cost) == (
        30.0, "No answer.", "+14155550142", 0.05)
    other = parse_server_message({"message": {"type": "speech-update", "call": {"id": "c1"}}})
    assert isinstance(other, OtherMessage) and other.call_id == "c1"
    for bad in (b"not json", b"[]", {"message": {}}, {"message": {"type": "tool-calls", "toolCallList": [{"id": 1}]}},
                {"message": {"type": "tool-calls", "toolCallList": [
                    {"id": "c", "function": {"name": "f", "arguments": "{broken"}}]}}):
        with pytest.raises(ProviderError) as exc:
            parse_server_message(bad)
        assert exc.value.code == "malformed_server_message"
