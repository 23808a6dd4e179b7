"""POST /v1/announcements/{device_uuid} of `deskguard serve`: a laptop's unexpired announcements
(deskguard.operators.announce), given only to a fetch signed with that laptop's device key, fresh and never
replayed (the order route's own check: bodies.refused_fetch). The answer is {"announcements": [envelope, ...]}: each
one signed with the order key, which the agent verifies itself (a server cannot forge one)."""

from __future__ import annotations

import datetime as dt
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .bodies import as_response, refused_fetch
from .ingest import Answer
from .refusals import REFUSALS

PATH = "/v1/announcements/{device_uuid}"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def handler(site, ingest):
    """The route's endpoint."""
    from ..operators.announce import envelopes_for

    async def announcements(request: Request) -> Response:
        device_uuid = request.path_params["device_uuid"]
        if not _UUID.match(device_uuid):
            REFUSALS.refused("POST /v1/announcements", 404, "unknown_device", request.client, device=device_uuid)
            return as_response(Answer.error(404, "unknown_device"))
        refused = await refused_fetch(request, ingest, device_uuid, "POST /v1/announcements")
        if refused is not None:
            return refused
        try:
            found = await run_in_threadpool(envelopes_for, site, device_uuid, dt.datetime.now(dt.timezone.utc))
        except OSError:
            return as_response(Answer.error(503, "announcements_unavailable"))
        return JSONResponse({"announcements": found}, headers={"cache-control": "no-store"})

    return announcements
