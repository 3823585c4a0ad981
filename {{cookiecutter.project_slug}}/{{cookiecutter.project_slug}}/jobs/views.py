"""The jobs API (start with 202, poll, stream over SSE), the queue-depth panel and the jobs page."""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.shortcuts import render

from {{ cookiecutter.project_slug }}.core.http import (
    SIGN_IN,
    ApiError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    NotSignedInError,
    error_response,
    json_api,
    json_body,
)

from . import kinds, selectors, services
from .errors import UnknownJobError
from .hub import hub
from .models import Job
from .queues import queue_depths, requeue_dead


def parse_job_id(job_id: str) -> uuid.UUID:
    """Return ``job_id`` as a UUID, or raise the same 404 an unknown id gets."""
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise UnknownJobError(f"No job with id {job_id[:80]!r}: job ids are UUIDs.") from None


@json_api("POST")
def upload_create(request: HttpRequest) -> HttpResponse:
    """Return a one-use form that uploads a file straight to storage (presigned POST)."""
    data = json_body(
        request,
        {"kind": str, "filename": str, "content_type": str, "size": int},
        ("kind", "filename", "content_type", "size"),
    )
    form = services.upload_create(
        owner=request.user,
        kind=data["kind"],
        filename=data["filename"],
        content_type=data["content_type"],
        size=data["size"],
        request=request,
    )
    return JsonResponse(form, status=201)


@json_api("GET", "POST")
def jobs(request: HttpRequest) -> HttpResponse:
    """List the user's jobs (GET) or start one from a finished upload (POST: 202 Accepted)."""
    if request.method == "GET":
        return JsonResponse({"jobs": [selectors.job_state(job, request) for job in selectors.jobs_of(request.user)]})
    data = json_body(request, {"kind": str, "upload": str}, ("kind", "upload"))
    job = services.job_start(owner=request.user, kind=data["kind"], upload=data["upload"])
    urls = selectors.job_urls(job)
    body = {"id": str(job.id), "kind": job.kind, "status": "pending", "urls": urls}
    # 202: accepted, not done. The worker does the job; the client polls or streams the Location.
    return JsonResponse(body, status=202, headers={"Location": urls["status"]})


@json_api("GET")
def job(request: HttpRequest, job_id: str) -> HttpResponse:
    """Return the job's status, progress, timestamps, error and result links, without waiting."""
    found = selectors.job_for(request.user, parse_job_id(job_id))
    return JsonResponse(selectors.job_state(found, request))


@json_api("POST")
def job_cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """Cancel the job (409 once it is final) and return its state, now ``cancelled``."""
    found = selectors.job_for(request.user, parse_job_id(job_id))
    services.job_cancel(found)
    return JsonResponse(selectors.job_state(found, request))


@json_api("GET")
def queues(request: HttpRequest) -> HttpResponse:
    """Return per pool queue the messages waiting, unacknowledged, dead-lettered, and owed in all."""
    return JsonResponse(queue_depths())


@json_api("GET", login=False)
def queues_owed(request: HttpRequest) -> HttpResponse:
    """Return what each pool owes (waiting + unacknowledged), for the autoscaler; bearer token only."""
    token = settings.QUEUE_METRICS_TOKEN
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(offered.encode(), token.encode()):
        # The same answer with no token configured and a wrong one: nothing to probe for.
        raise NotFoundError("Not found.")
    depths = queue_depths()
    status = 503 if depths["error"] or None in depths["owed"].values() else 200
    return JsonResponse({"owed": depths["owed"], "error": depths["error"]}, status=status)


@json_api("POST")
def queue_requeue_dead(request: HttpRequest, queue: str) -> HttpResponse:
    """Publish the dead-lettered messages of ``queue`` to it again (staff only) and return how many moved."""
    if not request.user.is_staff:
        raise ForbiddenError("Only staff may requeue dead-lettered messages.")
    return JsonResponse({"queue": queue, "requeued": requeue_dead(queue)})


async def job_events(request: HttpRequest, job_id: str) -> HttpResponseBase:
    """Stream the job's state as server-sent events until it reaches a final state."""
    if request.method != "GET":
        message = f"Method {request.method} is not allowed here; allowed: GET."
        return error_response(MethodNotAllowedError(message), Allow="GET")
    user = await request.auser()
    try:
        if not user.is_authenticated:
            raise NotSignedInError(SIGN_IN)
        found = await selectors.ajob_for(user, parse_job_id(job_id))
    except ApiError as exc:
        return error_response(exc)
    response = StreamingHttpResponse(event_stream(found, request), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx must pass events through, not buffer them
    return response


def sse(event: str, data: dict[str, Any]) -> str:
    """Return one server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def event_stream(found: Job, request: HttpRequest | None = None) -> AsyncIterator[str]:
    """Yield an event on every status or progress change, a ping comment when idle, and stop at the end."""
    ping_every = settings.JOBS_SSE_PING_SECONDS
    poll_every = settings.JOBS_SSE_POLL_SECONDS
    deadline = time.monotonic() + settings.JOBS_SSE_MAX_SECONDS
    statuses = hub(selectors.STATE_FIELDS)
    # EventSource reconnects after this many milliseconds when the stream ends before the job does.
    yield f"retry: {int(poll_every * 1000) + 1000}\n\n"
    last: tuple[Any, ...] | None = None
    last_sent = time.monotonic()
    version = 0
    try:
        while True:
            now = time.monotonic()
            wait = max(0.0, min(ping_every - (now - last_sent), deadline - now))
            version, row = await statuses.wait(found.task_key, version, timeout=wait)
            # Presigned links change on every read: only status and progress decide whether to send.
            state = await sync_to_async(selectors.shape, thread_sensitive=False)(found, row, request)
            seen = (state["status"], state["progress"], state["error"], state["note"])
            now = time.monotonic()
            if seen != last:
                yield sse("status", state)
                last, last_sent = seen, now
            if state["final"]:
                return
            if now - last_sent >= ping_every:
                yield ": ping\n\n"  # keeps proxies and load balancers from closing an idle stream
                last_sent = now
            if now >= deadline:
                return  # bounded streams: the browser reconnects and gets the current state first
    finally:
        statuses.forget(found.task_key)


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """Render the jobs page: upload a file, watch the jobs, download the results."""
    context = {
        "jobs": [selectors.job_state(job, request) for job in selectors.jobs_of(request.user)],
        "kinds": [kind.describe() for kind in kinds.all_kinds()],
        "poll_ms": int(settings.JOBS_SSE_POLL_SECONDS * 1000),
    }
    return render(request, "jobs/index.html", context)
