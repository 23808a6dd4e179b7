"""POST /v1/enrol in `deskguard serve`: the same hardening as the check-in route (the request head's deadline
and size bound in the protocol, the body read with its limit and deadline, every refusal logged rate-limited and
never the body), plus a rate limit of its own before the body is read. The decision is deskguard.enrolment.intake's.
"""

from __future__ import annotations

import logging
import math

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..orders.bodies import BodyRefused, as_response, read_body
from ..orders.ingest import Answer
from ..orders.refusals import REFUSALS
from ..site import module_utils
from .intake import Intake, load_config
from .ratelimit import RateLimit

E = module_utils("deskguard_enrol")
log = logging.getLogger("deskguard.serve")


def enrol_route(site, store) -> Route:
    """The route, with the site's enrolment and VPN settings read once (a site without them answers 503)."""
    config, why_not = load_config(site)
    if config is None:
        log.warning("enrolment is off on this server: %s", " ".join(why_not.split())[:200])
    intake = Intake(store, config)
    limit = RateLimit(config.enrolment.rate_per_minute if config else 60)

    async def enrol(request: Request) -> Response:
        client = request.client
        wait = limit.take(client[0] if client else None)
        if wait is not None:
            return _refuse(Answer.error(429, "rate_limited"), client, {"retry-after": str(math.ceil(wait)),
                                                                      "connection": "close"})
        try:
            body = await read_body(request.headers.get("content-length"), request.receive, E.LIMIT)
        except BodyRefused as refused:
            return _refuse(refused.answer, client)
        except ClientDisconnect:
            return Response(status_code=400)
        answer = await run_in_threadpool(intake.enrol, body)
        if answer.status != 200:
            return _refuse(answer, client)
        return JSONResponse(answer.body, headers={"cache-control": "no-store"})

    return Route(E.PATH, enrol, methods=["POST"])


def _refuse(answer: Answer, client, headers: dict | None = None) -> Response:
    REFUSALS.refused("POST /v1/enrol", answer.status, answer.body.get("error"), client)
    return as_response(answer, headers)
