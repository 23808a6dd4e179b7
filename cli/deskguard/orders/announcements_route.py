"""POST /v1/announcements/{device_uuid} of `deskguard serve`: a laptop's unexpired announcements
(deskguard.operators.announce), given only to a fetch signed with that laptop's device key, fresh and never
replayed (the order route's own check, Ingest.fetch). The answer is {"announcements": [envelope, ...]}: each one
signed with the order key, which the agent verifies itself (a server cannot forge one). Kept in its own file; the
server passes in its body reader and answer helpers (this module must not import deskguard.orders.server)."""

from __future__ import annotations

import datetime as dt
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..site import module_utils
from .ingest import Answer
from .refusals import REFUSALS

PATH = "/v1/announcements/{device_uuid}"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def handler(site, ingest, read_body, body_refused, as_response):
    """The route's endpoint. ``read_body``/``body_refused``/``as_response``: the server's body reader, its
    refusal exception and its Answer-to-Response helper (one way to read and answer for every route)."""
    from ..operators.announce import envelopes_for

    limit = module_utils("deskguard_protocol").LIMITS["fetch"]

    async def announcements(request: Request) -> Response:
        device_uuid = request.path_params["device_uuid"]

        def refuse(answer: Answer) -> Response:
            REFUSALS.refused("POST /v1/announcements", answer.status, answer.body.get("error"), request.client,
                             device=device_uuid)
            return as_response(answer)

        if not _UUID.match(device_uuid):
            return refuse(Answer.error(404, "unknown_device"))
        try:
            body = await read_body(request.headers.get("content-length"), request.receive, limit)
        except body_refused as refused:
            return refuse(refused.answer)
        except ClientDisconnect:
            return Response(status_code=400)
        refused = await run_in_threadpool(ingest.fetch, body, device_uuid)
        if refused is not None:
            return refuse(refused)
        try:
            found = await run_in_threadpool(envelopes_for, site, device_uuid, dt.datetime.now(dt.timezone.utc))
        except OSError:
            return as_response(Answer.error(503, "announcements_unavailable"))
        return JSONResponse({"announcements": found}, headers={"cache-control": "no-store"})

    return announcements
