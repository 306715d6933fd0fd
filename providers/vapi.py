"""VAPI adapter: assistants, tools, files, calls and phone numbers, plus server-message checks.

Contract: ../shared/providers.md section 1. JSON over aiohttp (providers.http.JsonApi) with a Bearer
key. Lists are bare arrays; errors are NestJS-shaped and become ProviderError("vapi", ...).

Environment the wiring should read:
- ``VAPI_API_KEY``        private API key (Bearer). Unset: sandbox mode runs providers.fakes.vapi.
- ``VAPI_BASE_URL``       default ``https://api.vapi.ai`` (``DEFAULT_BASE_URL``).
- ``VAPI_WEBHOOK_SECRET`` the secret VAPI echoes in ``X-Vapi-Secret`` on server messages; we put it
  in each assistant's ``server.headers`` and check it with ``verify_server_message``.

Build ``VapiClient`` inside the running event loop and ``await client.close()`` when done. Reads,
deletes and PATCH updates (which set absolute values) are retried on timeouts, 429 and 5xx; creates
(assistant, tool, file, outbound call, number import) are tried once, since a repeat could duplicate.
Server messages (providers.vapi_messages, re-exported here): ``verify_server_message(headers, secret)``
then ``parse_server_message(body)``; answer tool-calls with ``tool_calls_reply(...)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

import aiohttp

from providers.errors import ProviderError
from providers.http import JsonApi
from providers.vapi_messages import (  # noqa: F401 - re-exported: the gateway imports these from here
    PROVIDER, SECRET_HEADER, EndOfCallReport, OtherMessage, ServerMessage, StatusUpdate, ToolCall, ToolCalls,
    artifact_field, duration_seconds_of, iso_z, number_or_none, parse_server_message, summary_of,
    tool_calls_reply, verify_server_message)

DEFAULT_BASE_URL = "https://api.vapi.ai"
_UNSET: Any = object()  # "leave this field as it is" in updates (None means "clear it")


# --------------------------------------------------------------------------- typed results
@dataclass(frozen=True)
class Assistant:
    id: str
    name: str | None
    first_message: str | None
    first_message_mode: str | None
    system_prompt: str | None
    voice: Mapping[str, Any] | None
    server_url: str | None
    tool_ids: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Tool:
    id: str
    type: str
    name: str | None  # function.name, when the tool has one
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class File:
    id: str
    name: str | None
    status: str | None  # processing | done | failed
    bytes: int | None
    url: str | None


@dataclass(frozen=True)
class Call:
    id: str
    type: str | None
    status: str | None
    assistant_id: str | None
    phone_number_id: str | None
    customer_number: str | None
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    ended_reason: str | None
    cost: float | None
    duration_seconds: float | None
    transcript: str | None
    summary: str | None
    recording_url: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class PhoneNumber:
    id: str
    number: str | None
    provider: str | None
    assistant_id: str | None
    name: str | None
    status: str | None
    sms_enabled: bool | None


# --------------------------------------------------------------------------- reading replies
def _system_prompt(model: Mapping[str, Any]) -> str | None:
    for message in model.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "system":
            return message.get("content")
    return None


def _dict(reply: Any, what: str) -> dict[str, Any]:
    if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
        raise ProviderError(PROVIDER, f"unexpected reply shape for {what}")
    return reply


def assistant_from(raw: Mapping[str, Any]) -> Assistant:
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    server = raw.get("server") if isinstance(raw.get("server"), dict) else {}
    return Assistant(id=raw["id"], name=raw.get("name"), first_message=raw.get("firstMessage"),
                     first_message_mode=raw.get("firstMessageMode"), system_prompt=_system_prompt(model),
                     voice=raw.get("voice"), server_url=server.get("url") or raw.get("serverUrl"),
                     tool_ids=tuple(model.get("toolIds") or ()), raw=raw)


def tool_from(raw: Mapping[str, Any]) -> Tool:
    function = raw.get("function") if isinstance(raw.get("function"), dict) else {}
    return Tool(id=raw["id"], type=str(raw.get("type")), name=function.get("name"), raw=raw)


def file_from(raw: Mapping[str, Any]) -> File:
    return File(id=raw["id"], name=raw.get("name"), status=raw.get("status"), bytes=raw.get("bytes"),
                url=raw.get("url"))


def call_from(raw: Mapping[str, Any]) -> Call:
    customer = raw.get("customer") if isinstance(raw.get("customer"), dict) else {}
    return Call(id=raw["id"], type=raw.get("type"), status=raw.get("status"), assistant_id=raw.get("assistantId"),
                phone_number_id=raw.get("phoneNumberId"), customer_number=customer.get("number"),
                created_at=raw.get("createdAt"), started_at=raw.get("startedAt"), ended_at=raw.get("endedAt"),
                ended_reason=raw.get("endedReason"), cost=number_or_none(raw.get("cost")),
                duration_seconds=duration_seconds_of(raw, {}),
                transcript=artifact_field(raw, "transcript"), summary=summary_of(raw),
                recording_url=artifact_field(raw, "recordingUrl"), raw=raw)


def phone_number_from(raw: Mapping[str, Any]) -> PhoneNumber:
    return PhoneNumber(id=raw["id"], number=raw.get("number"), provider=raw.get("provider"),
                       assistant_id=raw.get("assistantId"), name=raw.get("name"), status=raw.get("status"),
                       sms_enabled=raw.get("smsEnabled"))


# --------------------------------------------------------------------------- request bodies
def server_block(url: str, secret: str | None) -> dict[str, Any]:
    """A ``server`` object whose messages carry our secret in X-Vapi-Secret (1.7, API-only option)."""
    return {"url": url, "headers": {SECRET_HEADER: secret}} if secret else {"url": url}


def transfer_tool(number: str, *, message: str | None = None, description: str | None = None) -> dict[str, Any]:
    """A transferCall tool that forwards the caller to one phone number (1.3)."""
    destination: dict[str, Any] = {"type": "number", "number": number}
    if message is not None:
        destination["message"] = message
    if description is not None:
        destination["description"] = description
    return {"type": "transferCall", "destinations": [destination]}


def query_tool(name: str, file_ids: Sequence[str], *, description: str = "Business knowledge base",
               kb_name: str = "knowledge-base") -> dict[str, Any]:
    """A query tool over uploaded knowledge-base files (1.3; the knowledge-base provider is "google")."""
    return {"type": "query", "function": {"name": name},
            "knowledgeBases": [{"provider": "google", "name": kb_name, "description": description,
                                "fileIds": list(file_ids)}]}


def function_tool(name: str, description: str, parameters: Mapping[str, Any], *, server_url: str | None = None,
                  server_secret: str | None = None) -> dict[str, Any]:
    """A function tool (e.g. booking); its tool-calls go to server_url, else the assistant's server (1.3)."""
    body: dict[str, Any] = {"type": "function",
                            "function": {"name": name, "description": description, "parameters": dict(parameters)}}
    if server_url:
        body["server"] = server_block(server_url, server_secret)
    return body


# --------------------------------------------------------------------------- the client
class VapiClient:
    def __init__(self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0, attempts: int = 3,
                 backoff: float = 0.2) -> None:
        self._api = JsonApi(PROVIDER, base_url, {"Authorization": f"Bearer {api_key}"}, timeout=timeout,
                            attempts=attempts, backoff=backoff)

    async def close(self) -> None:
        await self._api.close()

    async def _one(self, method: str, path: str, what: str, **kw: Any) -> dict[str, Any]:
        return _dict(await self._api.request(method, path, **kw), what)

    # assistants ----------------------------------------------------------------
    async def get_assistant(self, assistant_id: str) -> Assistant:
        return assistant_from(await self._one("GET", f"/assistant/{assistant_id}", "assistant"))

    async def create_assistant(self, *, name: str, system_prompt: str, first_message: str | None = None,
                               first_message_mode: str | None = None, voice: Mapping[str, Any] | None = None,
                               server_url: str | None = None, server_secret: str | None = None,
                               tool_ids: Sequence[str] = (), model: str = "gpt-4o", model_provider: str = "openai",
                               metadata: Mapping[str, Any] | None = None) -> Assistant:
        body: dict[str, Any] = {"name": name, "model": {"provider": model_provider, "model": model,
                                "messages": [{"role": "system", "content": system_prompt}]}}
        if tool_ids:
            body["model"]["toolIds"] = list(tool_ids)
        for key, value in (("firstMessage", first_message), ("firstMessageMode", first_message_mode),
                           ("voice", dict(voice) if voice else None),
                           ("metadata", dict(metadata) if metadata else None)):
            if value is not None:
                body[key] = value
        if server_url:
            body["server"] = server_block(server_url, server_secret)
        return assistant_from(await self._one("POST", "/assistant", "assistant", json_body=body))

    async def update_assistant(self, assistant_id: str, *, name: Any = _UNSET, system_prompt: Any = _UNSET,
                               first_message: Any = _UNSET, first_message_mode: Any = _UNSET, voice: Any = _UNSET,
                               server_url: Any = _UNSET, server_secret: str | None = None,
                               tool_ids: Any = _UNSET) -> Assistant:
        """Change only the given fields. ``model`` must be sent whole (provider and model are required
        inside it), so the current assistant is read first and its model edited (1.2)."""
        body: dict[str, Any] = {}
        for key, value in (("name", name), ("firstMessage", first_message),
                           ("firstMessageMode", first_message_mode), ("voice", voice)):
            if value is not _UNSET:
                body[key] = value
        if server_url is not _UNSET:
            body["server"] = server_block(server_url, server_secret) if server_url else None
        if system_prompt is not _UNSET or tool_ids is not _UNSET:
            current = await self.get_assistant(assistant_id)
            model = json.loads(json.dumps(current.raw.get("model") or {}))  # a deep copy to edit
            if system_prompt is not _UNSET:
                others = [m for m in model.get("messages") or []
                          if not (isinstance(m, dict) and m.get("role") == "system")]
                model["messages"] = [{"role": "system", "content": system_prompt}] + others
            if tool_ids is not _UNSET:
                model["toolIds"] = list(tool_ids)
            body["model"] = model
        # Setting fields to given values is safe to repeat, so PATCH is retried like PUT.
        return assistant_from(await self._one("PATCH", f"/assistant/{assistant_id}", "assistant", json_body=body,
                                              idempotent=True))

    # tools -----------------------------------------------------------------------
    async def create_tool(self, spec: Mapping[str, Any]) -> Tool:
        """``spec`` from transfer_tool(), query_tool() or function_tool()."""
        return tool_from(await self._one("POST", "/tool", "tool", json_body=dict(spec)))

    async def update_tool(self, tool_id: str, spec: Mapping[str, Any]) -> Tool:
        # A tool's type cannot change, and update bodies do not carry it.
        body = {k: v for k, v in spec.items() if k != "type"}
        return tool_from(await self._one("PATCH", f"/tool/{tool_id}", "tool", json_body=body, idempotent=True))

    # files -----------------------------------------------------------------------
    async def upload_file(self, filename: str, content: bytes, *, content_type: str = "text/plain",
                          purpose: str | None = None) -> File:
        form = aiohttp.FormData()
        form.add_field("file", content, filename=filename, content_type=content_type)
        if purpose:
            form.add_field("purpose", purpose)
        return file_from(await self._one("POST", "/file", "file", data=form))

    async def delete_file(self, file_id: str) -> None:
        await self._api.request("DELETE", f"/file/{file_id}")

    # calls -----------------------------------------------------------------------
    async def list_calls(self, *, assistant_id: str | None = None, phone_number_id: str | None = None,
                         created_after: datetime | None = None, created_before: datetime | None = None,
                         updated_after: datetime | None = None, updated_before: datetime | None = None,
                         limit: int = 100) -> list[Call]:
        """Calls matching every given filter (bounds are inclusive), for reconciliation (1.5)."""
        params: dict[str, str] = {"limit": str(limit)}
        for key, value in (("assistantId", assistant_id), ("phoneNumberId", phone_number_id)):
            if value:
                params[key] = value
        for key, moment in (("createdAtGe", created_after), ("createdAtLe", created_before),
                            ("updatedAtGe", updated_after), ("updatedAtLe", updated_before)):
            if moment is not None:
                params[key] = iso_z(moment)
        reply = await self._api.request("GET", "/call", params=params)
        if not isinstance(reply, list):
            raise ProviderError(PROVIDER, "unexpected reply shape for call list")
        return [call_from(_dict(item, "call")) for item in reply]

    async def get_call(self, call_id: str) -> Call:
        return call_from(await self._one("GET", f"/call/{call_id}", "call"))

    async def create_outbound_call(self, *, assistant_id: str, phone_number_id: str, customer_number: str,
                                   customer_name: str | None = None,
                                   variable_values: Mapping[str, Any] | None = None) -> Call:
        """Dials out. Never retried: a second POST would ring the customer twice."""
        customer: dict[str, Any] = {"number": customer_number}
        if customer_name:
            customer["name"] = customer_name
        body: dict[str, Any] = {"assistantId": assistant_id, "phoneNumberId": phone_number_id, "customer": customer}
        if variable_values:
            body["assistantOverrides"] = {"variableValues": dict(variable_values)}
        return call_from(await self._one("POST", "/call", "call", json_body=body))

    # phone numbers -----------------------------------------------------------------
    async def import_twilio_number(self, *, number: str, twilio_account_sid: str, twilio_auth_token: str,
                                   assistant_id: str | None = None, name: str | None = None,
                                   server_url: str | None = None, server_secret: str | None = None,
                                   sms_enabled: bool | None = None) -> PhoneNumber:
        """Note: VAPI rewrites the Twilio number's voice (and SMS unless sms_enabled=False) webhooks (1.6)."""
        body: dict[str, Any] = {"provider": "twilio", "number": number, "twilioAccountSid": twilio_account_sid,
                                "twilioAuthToken": twilio_auth_token}
        for key, value in (("assistantId", assistant_id), ("name", name), ("smsEnabled", sms_enabled)):
            if value is not None:
                body[key] = value
        if server_url:
            body["server"] = server_block(server_url, server_secret)
        return phone_number_from(await self._one("POST", "/phone-number", "phone number", json_body=body))

    async def update_phone_number(self, phone_number_id: str, *, assistant_id: Any = _UNSET, name: Any = _UNSET,
                                  server_url: Any = _UNSET, server_secret: str | None = None) -> PhoneNumber:
        body: dict[str, Any] = {}
        for key, value in (("assistantId", assistant_id), ("name", name)):
            if value is not _UNSET:
                body[key] = value
        if server_url is not _UNSET:
            body["server"] = server_block(server_url, server_secret) if server_url else None
        return phone_number_from(await self._one("PATCH", f"/phone-number/{phone_number_id}", "phone number",
                                                 json_body=body, idempotent=True))

    async def delete_phone_number(self, phone_number_id: str) -> None:
        await self._api.request("DELETE", f"/phone-number/{phone_number_id}")
