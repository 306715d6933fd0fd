"""The VAPI fake's calls, and the server messages it posts about them (providers.md 1.5, 1.7, 1.8).

A played inbound call posts ``status-update`` (queued, ringing, in-progress, ended), then one
``end-of-call-report`` with transcript, summary, cost and duration. ``send_tool_calls`` posts a
``tool-calls`` message and checks that the reply has the ``results[]`` shape VAPI requires.

Where messages go, as VAPI decides it: a function tool's own ``server`` for its tool-calls; else
the assistant's ``server`` (url plus its ``headers``, which is how our ``X-Vapi-Secret`` travels);
else the legacy ``serverUrl``/``serverUrlSecret`` pair (the secret goes in ``X-Vapi-Secret``); else
the fake-wide ``webhook_url`` with ``webhook_secret`` in ``X-Vapi-Secret``. VAPI does not retry
(no ``backoffPlan``), so neither does the fake: a failed post is recorded and the call goes on.
"""
from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Sequence

import aiohttp

from providers.vapi_messages import SECRET_HEADER, iso_z

if TYPE_CHECKING:
    from providers.fakes.vapi import VapiFake

PRICE_PER_MINUTE = 0.10  # USD; a round stand-in for VAPI's all-in per-minute cost
DEFAULT_TRANSCRIPT = (
    ("bot", "Thanks for calling, how can I help you today?"),
    ("user", "Hi, I'd like to book a cleaning next week."),
    ("bot", "Of course. Would Tuesday at ten in the morning work for you?"),
    ("user", "Yes, that's perfect. Thank you."),
    ("bot", "You're booked for Tuesday at ten. Goodbye!"),
)


@dataclass
class Delivery:
    type: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int | None  # None when the post failed (refused, timed out)
    reply: Any = None


@dataclass
class PlayedCall:
    call: dict[str, Any]
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return all(d.status is not None and 200 <= d.status < 300 for d in self.deliveries)


class CallPlayer:
    def __init__(self, fake: "VapiFake", *, webhook_url: str | None, webhook_secret: str | None) -> None:
        self.fake = fake
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.deliveries: list[Delivery] = []
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def new_call(self, kind: str, assistant_id: str | None, phone_number_id: str | None, customer: dict[str, Any],
                 *, status: str, assistant_overrides: Any = None) -> dict[str, Any]:
        stamp = iso_z(datetime.now(timezone.utc))
        call: dict[str, Any] = {
            "id": str(uuid.uuid4()), "orgId": self.fake.org_id, "type": kind, "status": status,
            "assistantId": assistant_id, "phoneNumberId": phone_number_id, "customer": dict(customer),
            "phoneCallProvider": "twilio", "phoneCallProviderId": "CA" + secrets.token_hex(16),
            "createdAt": stamp, "updatedAt": stamp,
        }
        if assistant_overrides is not None:
            call["assistantOverrides"] = assistant_overrides
        self.fake.calls[call["id"]] = call
        return call

    # -- where a message goes --------------------------------------------------------------------
    def _target(self, assistant: dict[str, Any], tool: dict[str, Any] | None,
                url: str | None) -> tuple[str, dict[str, str], float]:
        for owner in (tool or {}, assistant):
            server = owner.get("server")
            if isinstance(server, dict) and server.get("url"):
                return (url or server["url"], {str(k): str(v) for k, v in (server.get("headers") or {}).items()},
                        float(server.get("timeoutSeconds") or 20))
        if assistant.get("serverUrl"):
            secret = assistant.get("serverUrlSecret")
            return url or assistant["serverUrl"], ({SECRET_HEADER: secret} if secret else {}), 20.0
        target = url or self.webhook_url
        if not target:
            raise ValueError("the assistant has no server URL and the fake has no webhook_url")
        return target, ({SECRET_HEADER: self.webhook_secret} if self.webhook_secret else {}), 20.0

    async def _post(self, kind: str, target: tuple[str, dict[str, str], float], message: dict[str, Any]) -> Delivery:
        url, headers, timeout = target
        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        body = {"message": message}
        delivery = Delivery(type=kind, url=url, headers=dict(headers), body=body, status=None)
        try:
            async with self._session.post(url, data=json.dumps(body), timeout=aiohttp.ClientTimeout(total=timeout),
                                          headers={**headers, "Content-Type": "application/json"}) as resp:
                delivery.status = resp.status
                raw = await resp.read()
                try:
                    delivery.reply = json.loads(raw) if raw else None
                except ValueError:
                    delivery.reply = raw.decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError):
            pass  # VAPI does not retry by default (1.7): record it and go on
        self.deliveries.append(delivery)
        return delivery

    def _envelope(self, kind: str, call: dict[str, Any], assistant: dict[str, Any]) -> dict[str, Any]:
        phone = self.fake.phone_numbers.get(call.get("phoneNumberId") or "")
        message = {"type": kind, "timestamp": int(time.time() * 1000), "call": dict(call),
                   "customer": call.get("customer"), "assistant": assistant}
        if phone:
            message["phoneNumber"] = self.fake.public_view(phone)
        return message

    def _assistant(self, assistant_id: str) -> dict[str, Any]:
        assistant = self.fake.assistants.get(assistant_id)
        if assistant is None:
            raise KeyError(f"no assistant {assistant_id} in the VAPI fake")
        return assistant

    # -- a whole inbound call --------------------------------------------------------------------
    async def play_inbound_call(self, assistant_id: str, *, seconds: float = 60, caller: str = "+15555550123",
                                phone_number_id: str | None = None, ended_reason: str = "customer-ended-call",
                                transcript: Sequence[tuple[str, str]] = DEFAULT_TRANSCRIPT,
                                summary: str = "The caller booked a cleaning for Tuesday at 10am.",
                                url: str | None = None) -> PlayedCall:
        """Plays a finished call of ``seconds`` (back-dated, so no waiting). ``phone_number_id`` defaults
        to a number whose assistant is this one, if any; ``url`` overrides the webhook target."""
        assistant = self._assistant(assistant_id)
        target = self._target(assistant, None, url)
        if phone_number_id is None:
            phone_number_id = next((p["id"] for p in self.fake.phone_numbers.values()
                                    if p.get("assistantId") == assistant_id), None)
        call = self.new_call("inboundPhoneCall", assistant_id, phone_number_id, {"number": caller}, status="queued")
        played = PlayedCall(call=call)
        ended = datetime.now(timezone.utc)
        started = ended - timedelta(seconds=seconds)
        for status in ("queued", "ringing", "in-progress", "ended"):
            call["status"] = status
            call["updatedAt"] = iso_z(datetime.now(timezone.utc))
            if status == "in-progress":
                call["startedAt"] = iso_z(started)
            message = self._envelope("status-update", call, assistant)
            message["status"] = status
            if status == "ended":
                call.update(endedAt=iso_z(ended), endedReason=ended_reason)
                message.update(call=dict(call), endedReason=ended_reason)
            played.deliveries.append(await self._post("status-update", target, message))

        cost = round(seconds / 60 * PRICE_PER_MINUTE, 4)
        lines, messages = [], []
        step = seconds / max(len(transcript), 1)
        for i, (role, text) in enumerate(transcript):
            lines.append(f"{'AI' if role == 'bot' else 'User'}: {text}")
            messages.append({"role": role, "message": text, "secondsFromStart": round(i * step, 2),
                             "time": int((started + timedelta(seconds=i * step)).timestamp() * 1000)})
        artifact = {"transcript": "\n".join(lines) + "\n", "messages": messages,
                    "recordingUrl": f"https://recordings.fake.invalid/{call['id']}.wav"}
        call.update(cost=cost, costBreakdown={"total": cost, "vapi": cost}, artifact=artifact,
                    analysis={"summary": summary, "successEvaluation": "true"},
                    updatedAt=iso_z(datetime.now(timezone.utc)))
        report = self._envelope("end-of-call-report", call, assistant)
        # The schema lists these fields; real reports also carry durationSeconds/durationMs (1.7).
        report.update(endedReason=ended_reason, cost=cost, costs=[{"type": "vapi", "cost": cost,
                      "minutes": round(seconds / 60, 4)}], startedAt=call["startedAt"], endedAt=call["endedAt"],
                      durationSeconds=float(seconds), durationMs=int(seconds * 1000), artifact=artifact,
                      analysis=call["analysis"])
        played.deliveries.append(await self._post("end-of-call-report", target, report))
        return played

    # -- tool calls ------------------------------------------------------------------------------
    async def send_tool_calls(self, assistant_id: str, name: str, arguments: dict[str, Any], *,
                              call_id: str | None = None, url: str | None = None) -> dict[str, Any]:
        """Posts one tool-calls message for ``name`` (the function tool among the assistant's toolIds
        decides where it goes) and returns the reply after checking its shape; ValueError if wrong."""
        assistant = self._assistant(assistant_id)
        tool_ids = (assistant.get("model") or {}).get("toolIds") or []
        tool = next((self.fake.tools[t] for t in tool_ids if t in self.fake.tools
                     and (self.fake.tools[t].get("function") or {}).get("name") == name), None)
        call = self.fake.calls.get(call_id or "") or self.new_call(
            "inboundPhoneCall", assistant_id, None, {"number": "+15555550123"}, status="in-progress")
        tool_call = {"id": "call_" + secrets.token_hex(12), "type": "function",
                     "function": {"name": name, "arguments": json.dumps(arguments)}}  # a string, per the schema
        message = self._envelope("tool-calls", call, assistant)
        message["toolCallList"] = [tool_call]
        message["toolWithToolCallList"] = [{
            "type": "function", "function": (tool or {}).get("function") or {"name": name},
            "server": (tool or {}).get("server"), "messages": (tool or {}).get("messages") or [],
            "toolCall": tool_call}]
        delivery = await self._post("tool-calls", self._target(assistant, tool, url), message)
        reply = delivery.reply
        if delivery.status != 200:
            raise ValueError(f"tool-calls reply was HTTP {delivery.status}, not 200")
        results = reply.get("results") if isinstance(reply, dict) else None
        ids = [r.get("toolCallId") for r in results if isinstance(r, dict)] if isinstance(results, list) else None
        if ids != [tool_call["id"]]:
            raise ValueError(f"tool-calls reply must be {{results: [{{toolCallId, result|error}}]}}, got {reply!r}")
        entry = results[0]
        if not isinstance(entry.get("result", entry.get("error")), str):
            raise ValueError("each tool-calls result needs a string result or error")
        return reply
