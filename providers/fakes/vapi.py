"""A local fake of the VAPI REST API, and the server messages (webhooks) VAPI sends (providers.md 1).

    fake = VapiFake(api_key="sk-test", webhook_url="http://127.0.0.1:8080/api/webhooks/vapi",
                    webhook_secret="...")           # both optional: fallback target for assistants without a server
    server = await FakeServer(fake.app).start()     # point VapiClient at server.url
    played = await fake.play_inbound_call(assistant_id, seconds=90, caller="+15555550123")
    reply = await fake.send_tool_calls(assistant_id, "book_appointment", {"start": "..."})
    await fake.close(); await server.stop()

Like the real service it checks the Bearer key (401), mints UUIDs, answers lists as bare arrays,
errors in NestJS shape (``{"message", "error", "statusCode"}``), 404 for unknown ids, 201 on create,
and rejects properties it does not know (NestJS whitelisting). State lives in plain dicts
(``assistants``, ``tools``, ``files``, ``calls``, ``phone_numbers``) that tests may read; every
webhook it posts is appended to ``deliveries``. Fault injection: ``fake.faults.fail_next(...)``.
"""
from __future__ import annotations

import hmac
import json
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from providers.fakes.server import FAULTS, Faults, make_app
from providers.fakes.vapi_calls import CallPlayer, Delivery, PlayedCall  # noqa: F401 - re-exported
from providers.vapi_messages import iso_z

FIRST_MESSAGE_MODES = {"assistant-speaks-first", "assistant-speaks-first-with-model-generated-message",
                       "assistant-waits-for-user"}
ASSISTANT_FIELDS = {
    "name", "metadata", "firstMessage", "firstMessageMode", "model", "voice", "transcriber", "server",
    "serverUrl", "serverUrlSecret",  # legacy forms, still accepted (1.2)
    "serverMessages", "clientMessages", "voicemailDetection", "voicemailMessage", "endCallMessage",
    "endCallPhrases", "maxDurationSeconds", "analysisPlan", "artifactPlan", "startSpeakingPlan",
    "stopSpeakingPlan", "credentialIds", "hooks", "compliancePlan", "backgroundSound", "silenceTimeoutSeconds",
}
TOOL_TYPES = {"transferCall", "function", "query", "endCall", "dtmf", "sms", "apiRequest"}
TOOL_FIELDS = {"type", "function", "server", "messages", "destinations", "knowledgeBases", "async", "metadata"}
PHONE_FIELDS = {"provider", "number", "twilioAccountSid", "twilioAuthToken", "twilioApiKey", "twilioApiSecret",
                "assistantId", "squadId", "workflowId", "name", "server", "smsEnabled", "fallbackDestination"}
CALL_FIELDS = {"assistantId", "assistant", "assistantOverrides", "phoneNumberId", "customer", "customers", "name",
               "schedulePlan", "squadId", "workflowId"}
REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NestError(Exception):
    """Becomes a NestJS-style error reply."""

    def __init__(self, status: int, message: str | list[str]) -> None:
        super().__init__(str(message))
        self.status = status
        self.message = message


def nest_reply(status: int, message: str | list[str]) -> web.Response:
    return web.json_response({"message": message, "error": REASONS.get(status, "Error"), "statusCode": status},
                             status=status)


def now_iso() -> str:
    return iso_z(datetime.now(timezone.utc))


class VapiFake:
    def __init__(self, api_key: str, *, webhook_url: str | None = None, webhook_secret: str | None = None) -> None:
        self.api_key = api_key
        self.org_id = str(uuid.uuid4())
        self.assistants: dict[str, dict[str, Any]] = {}
        self.tools: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.file_contents: dict[str, bytes] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.phone_numbers: dict[str, dict[str, Any]] = {}
        self.player = CallPlayer(self, webhook_url=webhook_url, webhook_secret=webhook_secret)
        self.app = make_app(client_max_size=20 * 1024 * 1024)
        self.app.middlewares.append(self._auth_and_errors)
        r = self.app.router
        for name, store in (("assistant", self.assistants), ("tool", self.tools), ("file", self.files),
                            ("call", self.calls), ("phone-number", self.phone_numbers)):
            r.add_get(f"/{name}/{{id}}", self._getter(store))
            r.add_delete(f"/{name}/{{id}}", self._deleter(store))
        r.add_get("/assistant", self._lister(self.assistants))
        r.add_post("/assistant", self.create_assistant)
        r.add_patch("/assistant/{id}", self.update_assistant)
        r.add_get("/tool", self._lister(self.tools))
        r.add_post("/tool", self.create_tool)
        r.add_patch("/tool/{id}", self.update_tool)
        r.add_get("/file", self._lister(self.files))
        r.add_post("/file", self.upload_file)
        r.add_get("/file/{id}/content", self.file_content)  # what a file's ``url`` points at
        r.add_get("/call", self.list_calls)
        r.add_post("/call", self.create_call)
        r.add_get("/phone-number", self._lister(self.phone_numbers))
        r.add_post("/phone-number", self.create_phone_number)
        r.add_post("/phone-number/import/twilio", self.import_twilio_legacy)
        r.add_patch("/phone-number/{id}", self.update_phone_number)

    # -- test API -----------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self.app[FAULTS]

    @property
    def deliveries(self) -> list[Delivery]:
        return self.player.deliveries

    async def play_inbound_call(self, assistant_id: str, **kw: Any) -> PlayedCall:
        """See CallPlayer.play_inbound_call: status updates, then an end-of-call report, posted as webhooks."""
        return await self.player.play_inbound_call(assistant_id, **kw)

    async def send_tool_calls(self, assistant_id: str, name: str, arguments: dict[str, Any],
                              **kw: Any) -> dict[str, Any]:
        """See CallPlayer.send_tool_calls: one tool-calls message; returns the checked ``results`` reply."""
        return await self.player.send_tool_calls(assistant_id, name, arguments, **kw)

    async def close(self) -> None:
        await self.player.close()

    # -- plumbing -------------------------------------------------------------------------------
    @web.middleware
    async def _auth_and_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.api_key}".encode()):
            return nest_reply(401, "Invalid Key. Check that you are sending your private API key as a Bearer token.")
        try:
            return await handler(request)
        except NestError as exc:
            return nest_reply(exc.status, exc.message)
        except web.HTTPException as exc:  # no such route, or a body too large
            if exc.status < 400:
                raise
            return nest_reply(exc.status, f"Cannot {request.method} {request.path}")

    @staticmethod
    async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise NestError(400, "Unexpected token in JSON body") from None
        except ConnectionResetError:  # the client gave up (e.g. an injected timeout): nobody to answer
            raise NestError(400, "connection lost") from None
        if not isinstance(body, dict):
            raise NestError(400, ["body must be an object"])
        unknown = sorted(set(body) - allowed)
        if unknown:  # NestJS whitelisting with forbidNonWhitelisted
            raise NestError(400, [f"property {k} should not exist" for k in unknown])
        return body

    @staticmethod
    def _find(store: dict[str, dict[str, Any]], request: web.Request) -> dict[str, Any]:
        item = store.get(request.match_info["id"])
        if item is None:
            raise NestError(404, "Not Found")
        return item

    def _new(self, store: dict[str, dict[str, Any]], fields: dict[str, Any]) -> dict[str, Any]:
        stamp = now_iso()
        item = {"id": str(uuid.uuid4()), "orgId": self.org_id, **fields, "createdAt": stamp, "updatedAt": stamp}
        store[item["id"]] = item
        return item

    @staticmethod
    def _patch(item: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        item.update(changes)  # nested objects are replaced whole, as assumed in 1.2
        item["updatedAt"] = now_iso()
        return item

    def _getter(self, store: dict[str, dict[str, Any]]) -> Handler:
        async def get(request: web.Request) -> web.Response:
            return web.json_response(self.public_view(self._find(store, request)))
        return get

    def _deleter(self, store: dict[str, dict[str, Any]]) -> Handler:
        async def delete(request: web.Request) -> web.Response:
            item = self._find(store, request)
            del store[item["id"]]
            self.file_contents.pop(item["id"], None)
            return web.json_response(self.public_view(item))  # VAPI answers a delete with the deleted object
        return delete

    def _lister(self, store: dict[str, dict[str, Any]]) -> Handler:
        async def list_(request: web.Request) -> web.Response:
            items = sorted(store.values(), key=lambda i: i["createdAt"], reverse=True)
            return web.json_response([self.public_view(i) for i in items[: self._limit(request)]])
        return list_

    @staticmethod
    def _limit(request: web.Request) -> int:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            raise NestError(400, ["limit must be a number"]) from None
        if not 0 <= limit <= 1000:
            raise NestError(400, ["limit must not be greater than 1000"])
        return limit

    @staticmethod
    def public_view(item: dict[str, Any]) -> dict[str, Any]:
        # Stored secrets are never echoed back (a phone number's Twilio auth token or API secret).
        return {k: v for k, v in item.items() if k not in ("twilioAuthToken", "twilioApiSecret")}

    # -- assistants -----------------------------------------------------------------------------
    @staticmethod
    def _check_assistant(body: dict[str, Any]) -> None:
        problems = []
        model = body.get("model")
        if model is not None:
            if not isinstance(model, dict) or not isinstance(model.get("provider"), str):
                problems.append("model.provider must be one of the supported providers")
            if not isinstance(model, dict) or not isinstance(model.get("model"), str):
                problems.append("model.model must be a string")
            elif any(not isinstance(m, dict) or "role" not in m for m in model.get("messages") or []):
                problems.append("model.messages each must have a role")
        if "firstMessageMode" in body and body["firstMessageMode"] not in FIRST_MESSAGE_MODES:
            problems.append("firstMessageMode must be one of: " + ", ".join(sorted(FIRST_MESSAGE_MODES)))
        server = body.get("server")
        if server is not None and (not isinstance(server, dict) or not isinstance(server.get("url"), str)):
            problems.append("server.url must be a URL address")
        if problems:
            raise NestError(400, problems)

    async def create_assistant(self, request: web.Request) -> web.Response:
        body = await self._body(request, ASSISTANT_FIELDS)
        self._check_assistant(body)
        return web.json_response(self._new(self.assistants, body), status=201)

    async def update_assistant(self, request: web.Request) -> web.Response:
        item = self._find(self.assistants, request)
        body = await self._body(request, ASSISTANT_FIELDS)
        self._check_assistant(body)
        return web.json_response(self._patch(item, body))

    # -- tools ----------------------------------------------------------------------------------
    def _check_tool(self, tool: dict[str, Any]) -> None:
        kind, problems = tool.get("type"), []
        if kind not in TOOL_TYPES:
            problems.append("type must be one of: " + ", ".join(sorted(TOOL_TYPES)))
        if kind == "transferCall":
            for d in tool.get("destinations") or []:
                if not isinstance(d, dict) or d.get("type") not in ("number", "sip", "assistant"):
                    problems.append("destinations each must have type number, sip or assistant")
                elif d["type"] == "number" and not (isinstance(d.get("number"), str) and d["number"].startswith("+")):
                    problems.append("destinations.number must be a valid phone number in E.164 format")
        if kind in ("function", "query"):
            function = tool.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                problems.append("function.name must be a string")
        if kind == "query":
            bases = tool.get("knowledgeBases")
            if not isinstance(bases, list) or not bases:
                problems.append("knowledgeBases must contain at least 1 elements")
            for kb in bases if isinstance(bases, list) else []:
                if not isinstance(kb, dict) or kb.get("provider") != "google" or not kb.get("name"):
                    problems.append("knowledgeBases.provider must be google, and knowledgeBases.name is required")
                elif any(f not in self.files for f in kb.get("fileIds") or []):
                    problems.append("knowledgeBases.fileIds must name uploaded files")
        if problems:
            raise NestError(400, problems)

    async def create_tool(self, request: web.Request) -> web.Response:
        body = await self._body(request, TOOL_FIELDS)
        self._check_tool(body)
        return web.json_response(self._new(self.tools, body), status=201)

    async def update_tool(self, request: web.Request) -> web.Response:
        item = self._find(self.tools, request)
        body = await self._body(request, TOOL_FIELDS)
        if body.get("type", item["type"]) != item["type"]:
            raise NestError(400, ["type cannot be changed"])
        self._check_tool({**item, **body})
        return web.json_response(self._patch(item, body))

    # -- files ----------------------------------------------------------------------------------
    async def upload_file(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise NestError(400, "Multipart: Boundary not found")
        form = await request.post()
        part = form.get("file")
        if not isinstance(part, web.FileField):
            raise NestError(400, "file is required")
        content = part.file.read()
        meta = form.get("metadata")
        item = self._new(self.files, {
            "object": "file", "status": "done", "name": part.filename, "originalName": part.filename,
            "bytes": len(content), "purpose": form.get("purpose") or "assistant", "mimetype": part.content_type,
            "metadata": json.loads(meta) if isinstance(meta, str) and meta else None,
        })
        item.update(key=item["id"], path=f"files/{item['id']}", bucket="fake-vapi-files",
                    url=f"{request.url.origin()}/file/{item['id']}/content")
        self.file_contents[item["id"]] = content
        return web.json_response(item, status=201)

    async def file_content(self, request: web.Request) -> web.Response:
        item = self._find(self.files, request)
        return web.Response(body=self.file_contents[item["id"]], content_type=item.get("mimetype") or "text/plain")

    # -- calls ----------------------------------------------------------------------------------
    async def list_calls(self, request: web.Request) -> web.Response:
        q = request.query
        items = list(self.calls.values())
        for key in ("id", "assistantId", "phoneNumberId"):
            if key in q:
                items = [c for c in items if c.get(key) == q[key]]
        for field in ("createdAt", "updatedAt"):
            for op, test in (("Gt", lambda a, b: a > b), ("Lt", lambda a, b: a < b),
                             ("Ge", lambda a, b: a >= b), ("Le", lambda a, b: a <= b)):
                if field + op in q:
                    bound = _parse_time(q[field + op], field + op)
                    items = [c for c in items if test(_parse_time(c[field], field), bound)]
        items.sort(key=lambda c: c["createdAt"], reverse=True)
        return web.json_response(items[: self._limit(request)])

    async def create_call(self, request: web.Request) -> web.Response:
        body = await self._body(request, CALL_FIELDS)
        problems = []
        if "phoneNumberId" in body and not isinstance(body["phoneNumberId"], str):
            problems.append("phoneNumberId must be a UUID")  # null is rejected; leave the key out (1.5)
        elif body.get("phoneNumberId") not in self.phone_numbers:
            problems.append("phoneNumberId must name an existing phone number")
        if not ("assistant" in body or body.get("assistantId") in self.assistants):
            problems.append("assistantId must name an existing assistant, or assistant must be given")
        customer = body.get("customer")
        if not isinstance(customer, dict) or not str(customer.get("number", "")).startswith("+"):
            problems.append("customer.number must be a valid phone number in E.164 format")
        if problems:
            raise NestError(400, problems)
        call = self.player.new_call("outboundPhoneCall", body.get("assistantId"), body["phoneNumberId"],
                                    customer, status="queued", assistant_overrides=body.get("assistantOverrides"))
        return web.json_response(call, status=201)

    # -- phone numbers ----------------------------------------------------------------------------
    def _check_phone(self, body: dict[str, Any], creating: bool) -> None:
        problems = []
        if creating:
            if body.get("provider") != "twilio":
                problems.append("provider must be one of: twilio, vonage, telnyx, byo-phone-number, vapi")
            if not str(body.get("number", "")).startswith("+"):
                problems.append("number must be a valid phone number in E.164 format")
            if not body.get("twilioAccountSid"):
                problems.append("twilioAccountSid must be a string")
            if not (body.get("twilioAuthToken") or (body.get("twilioApiKey") and body.get("twilioApiSecret"))):
                problems.append("twilioAuthToken, or twilioApiKey with twilioApiSecret, is required")
            if any(p["number"] == body.get("number") for p in self.phone_numbers.values()):
                problems.append("Number Already Exists")
        if body.get("assistantId") is not None and body["assistantId"] not in self.assistants:
            problems.append("assistantId must name an existing assistant")
        if problems:
            raise NestError(400, problems)

    async def create_phone_number(self, request: web.Request) -> web.Response:
        body = await self._body(request, PHONE_FIELDS)
        self._check_phone(body, creating=True)
        item = self._new(self.phone_numbers, {"status": "active", "smsEnabled": True, **body})
        return web.json_response(self.public_view(item), status=201)

    async def import_twilio_legacy(self, request: web.Request) -> web.Response:
        # The deprecated import endpoint names the number twilioPhoneNumber (1.6).
        body = await self._body(request, (PHONE_FIELDS - {"provider", "number"}) | {"twilioPhoneNumber"})
        body = {"provider": "twilio", "number": body.pop("twilioPhoneNumber", None), **body}
        self._check_phone(body, creating=True)
        item = self._new(self.phone_numbers, {"status": "active", "smsEnabled": True, **body})
        return web.json_response(self.public_view(item), status=201)

    async def update_phone_number(self, request: web.Request) -> web.Response:
        item = self._find(self.phone_numbers, request)
        body = await self._body(request, PHONE_FIELDS - {"provider", "number"})
        self._check_phone(body, creating=False)
        return web.json_response(self.public_view(self._patch(item, body)))


def _parse_time(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise NestError(400, [f"{name} must be a valid ISO 8601 date string"]) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
