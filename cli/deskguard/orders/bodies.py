"""Reading a request's body within its limits, answering with an Answer, and the signed fetch: the one way
every route of `deskguard serve` (orders, check-ins, acknowledgements, announcements, enrolment) reads and
answers, so none can be laxer than another. Request heads have their own deadline and bound
(deskguard.orders.httpproto)."""

from __future__ import annotations

import asyncio
import json
import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..site import module_utils
from .ingest import Answer
from .refusals import REFUSALS

P = module_utils("deskguard_protocol")
# Seconds to receive a whole body (a 256 KiB check-in needs < 1 s on a poor line); tests shorten it.
BODY_DEADLINE = float(os.environ.get("DESKGUARD_SERVE_BODY_DEADLINE", "10"))


class BodyRefused(Exception):
    def __init__(self, answer: Answer):
        self.answer = answer


async def read_body(declared: str | None, receive, limit: int, deadline: float | None = None) -> bytes:
    """The request body from the ASGI ``receive``, refused (413) as soon as it is known to be over ``limit`` (a
    Content-Length ``declared`` above it, or the bytes received so far), and refused (408) if it takes longer
    than ``deadline`` seconds. ClientDisconnect if the client goes away."""
    if declared is not None:
        if not declared.isdigit():
            raise BodyRefused(Answer.error(400, "malformed", "bad Content-Length"))
        if int(declared) > limit:
            raise BodyRefused(Answer.error(413, "oversized", f"limit {limit} bytes"))
    chunks, size = [], 0
    deadline = BODY_DEADLINE if deadline is None else deadline
    try:
        async with asyncio.timeout(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(Answer.error(413, "oversized", f"limit {limit} bytes"))
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyRefused(Answer.error(408, "timeout", f"the body took more than {deadline:.0f} s")) from None
    return b"".join(chunks)


def as_response(answer: Answer, headers: dict | None = None) -> Response:
    if answer.status in (408, 413):   # the rest of the body is unread
        headers = {**(headers or {}), "connection": "close"}
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


async def send_answer(send, answer: Answer) -> None:
    """``answer`` as a raw ASGI response, the same bytes and headers as as_response's."""
    body = json.dumps(answer.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if answer.status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refused_fetch(request: Request, ingest, device_uuid: str, route: str) -> Response | None:
    """None if the request is a fetch signed with ``device_uuid``'s device key, fresh and never replayed
    (Ingest.fetch), read within the fetch limit; else the refusal to answer with, logged under ``route``."""
    def refuse(answer: Answer) -> Response:
        REFUSALS.refused(route, answer.status, answer.body.get("error"), request.client, device=device_uuid)
        return as_response(answer)

    try:
        body = await read_body(request.headers.get("content-length"), request.receive, P.LIMITS["fetch"])
    except BodyRefused as refused:
        return refuse(refused.answer)
    except ClientDisconnect:
        return Response(status_code=400)
    refused = await run_in_threadpool(ingest.fetch, body, device_uuid)
    return None if refused is None else refuse(refused)
