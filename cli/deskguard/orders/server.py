"""`deskguard serve`: the HTTP side of docs/agent-protocol.md, as a Starlette app run by uvicorn.

POST /orders/{device_uuid} serves a published order file to its device only (a fetch signed with the device
key, fresh and not replayed; a plain GET is refused alike for every device), POST /v1/ack and POST /v1/checkin
take signed messages into the store (deskguard.orders.ingest), GET /healthz says whether the store answers. The
check-in, the one hot route, is a plain ASGI handler in front of the Starlette app (checkin_first). Bodies are read
as they arrive, never past the size limit and never for longer than BODY_DEADLINE seconds; request heads have
their own deadline (deskguard.orders.httpproto). Store work runs in worker threads so a slow disk never stalls
the event loop, and acknowledged/expired orders are settled in the background every SETTLE_EVERY seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..site import module_utils
from ..store import Store
from . import announcements_route
from .bodies import BodyRefused, as_response, read_body, refused_fetch, send_answer
from .ingest import OK, Answer, Ingest, claimed_device
from .refusals import REFUSALS

P = module_utils("deskguard_protocol")
SETTLE_EVERY = 300.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
log = logging.getLogger("deskguard.serve")


@dataclass(frozen=True)
class ServeConfig:
    site: Path
    orders_dir: Path
    done_grace_hours: float
    settle: bool = True


def create_app(config: ServeConfig, store: Store | None = None):
    from ..enrolment.route import enrol_route

    own_store = store is None
    store = store or Store.open(config.site)
    ingest = Ingest(store)

    async def post(kind: str, declared: str | None, receive, client) -> Answer | None:
        """The answer to a POST of ``kind``; None if the client went away before sending its body."""
        body = b""
        try:
            body = await read_body(declared, receive, P.LIMITS[kind])
        except BodyRefused as refused:
            answer = refused.answer
        except ClientDisconnect:
            return None
        else:
            if kind == "checkin":
                answer = await _checkin(ingest, body)
            else:
                answer = await run_in_threadpool(ingest.ack, body)
        if answer.status != 200:
            REFUSALS.refused(f"POST /v1/{kind}", answer.status, answer.body.get("error"), client,
                             device=lambda: claimed_device(body, kind))
        return answer

    async def ack(request: Request) -> Response:
        answer = await post("ack", request.headers.get("content-length"), request.receive, request.client)
        return Response(status_code=400) if answer is None else as_response(answer)

    async def order(request: Request) -> Response:
        """A signed fetch (POST) gets the device's order; anything refused is refused before the order file is
        looked at, so the answer says nothing about whether there is one. A plain GET (static hosting's way)
        gets the same refusal for every device. Every refusal goes to the refusal log, like the other routes'."""
        device_uuid = request.path_params["device_uuid"]
        route = f"{request.method} /orders"
        if request.method == "GET":
            REFUSALS.refused(route, 401, "signed_fetch_required", request.client, device=device_uuid)
            return as_response(Answer.error(401, "signed_fetch_required", "POST a fetch signed with the device key"))
        if not _UUID.match(device_uuid):
            REFUSALS.refused(route, 404, "no_order", request.client, device=device_uuid)
            return as_response(Answer.error(404, "no_order"))
        refused = await refused_fetch(request, ingest, device_uuid, route)
        if refused is not None:
            return refused
        try:
            data = await run_in_threadpool(_read_order, config.orders_dir / device_uuid)
        except FileNotFoundError:
            return as_response(Answer.error(404, "no_order"))
        except OSError:
            return as_response(Answer.error(503, "orders_unavailable"))
        return Response(data, media_type="application/json", headers={"cache-control": "no-store"})

    async def healthz(request: Request) -> Response:
        ok = await run_in_threadpool(ingest.healthy)
        return as_response(OK if ok else Answer.error(503, "store_unavailable"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(_settle_forever(store, config)) if config.settle else None
        try:
            yield
        finally:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            ingest.close()
            REFUSALS.flush()
            if own_store:
                store.close()

    app = Starlette(routes=[
        Route("/orders/{device_uuid}", order, methods=["GET", "POST"]),
        Route("/v1/ack", ack, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        enrol_route(config.site, store),   # POST /v1/enrol (docs/enrolment.md)
        Route(announcements_route.PATH, announcements_route.handler(config.site, ingest), methods=["POST"]),
    ], lifespan=lifespan)

    async def checkin_first(scope, receive, send) -> None:
        """POST /v1/checkin is answered here, ahead of Starlette's middleware, routing and Request/Response
        objects: they cost a sixth of a check-in's CPU (tests/bench/checkin.py). Everything else is Starlette's."""
        if scope["type"] != "http" or scope["path"] != "/v1/checkin" or scope["method"] != "POST":
            return await app(scope, receive, send)
        declared = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
        answer = await post("checkin", declared, receive, scope.get("client"))
        await send_answer(send, answer or Answer(400, {}))

    return checkin_first


async def _checkin(ingest: Ingest, body: bytes) -> Answer:
    """Parse on the event loop (CPU only, no thread hop); verifying and storing wait for the group-commit
    writer without holding a thread."""
    got = ingest.open_checkin(body)
    if isinstance(got, Answer):
        return got
    failure = await asyncio.wrap_future(ingest.writer.submit(got))
    return ingest.checkin_answer(failure)


def _read_order(path: Path) -> bytes:
    # An order file is small (8 KiB limit); anything larger is not ours to serve.
    with open(path, "rb") as fh:
        data = fh.read(P.LIMITS["order"] + 1)
    if len(data) > P.LIMITS["order"]:
        raise OSError(f"{path} is larger than an order can be")
    return data


async def _settle_forever(store: Store, config: ServeConfig) -> None:
    import datetime as dt

    grace = dt.timedelta(hours=config.done_grace_hours)
    while True:
        try:
            expired = await run_in_threadpool(store.expire_orders, actor="deskguard-serve")
            done = await run_in_threadpool(store.settle_orders, grace, actor="deskguard-serve")
            for o in expired + done:
                log.info("order %s is now %s", o.id, o.state)
        except Exception as exc:  # the server keeps serving; the next round tries again
            log.warning("settling orders failed: %s", " ".join(str(exc).split())[:200])
        await asyncio.sleep(SETTLE_EVERY)


def app_from_env():
    """The app for uvicorn worker processes (``--workers N``): the config comes in DESKGUARD_SERVE_CONFIG."""
    raw = json.loads(os.environ["DESKGUARD_SERVE_CONFIG"])
    return create_app(ServeConfig(Path(raw["site"]), Path(raw["orders_dir"]), raw["done_grace_hours"],
                                  raw.get("settle", True)))
