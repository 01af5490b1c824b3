"""The event stream of an open page (server-sent events), fed by the hub.

``/events?q=FILTER`` serves the limits page, ``/events?limit=NAME`` a limit's page. Events:
``limits`` (the rows of the plain limits), ``templates`` (each template's totals and
busiest instances), ``limit`` (the limit, its holders and queue, each queued request with
why it waits), ``history`` and ``sample`` (chart points), ``status`` (whether sampling works).
The browser's EventSource reconnects by itself after ``retry`` milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pggcl.ui.live import Hub, LimitsTopic, LimitTopic, Topic
from pggcl.ui.state import ui_state

#: Seconds between comments on an idle stream, so that proxies keep it open.
KEEPALIVE = 15.0


class EventStream(Response):
    """A response that streams a subscriber's events until the browser goes away."""

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, topic: Topic) -> None:
        # Like StreamingResponse: no body, so no content-length.
        self.hub, self.topic = hub, topic
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.hub.subscribe(self.topic)

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            sub.close()

        watcher = asyncio.get_running_loop().create_task(watch_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await _body(send, b"retry: 2000\n\n")
            while not sub.closed:
                batch = await sub.next(KEEPALIVE)
                if sub.closed:
                    break
                text = "".join(f"event: {event}\ndata: {data}\n\n" for event, data in batch)
                await _body(send, (text or ": keep-alive\n\n").encode())
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the browser went away mid-write
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.hub.unsubscribe(sub)


async def _body(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def events(request: Request) -> Response:
    name = request.query_params.get("limit")
    topic: Topic = (
        LimitTopic(name)
        if name is not None
        else LimitsTopic(request.query_params.get("q", "").strip())
    )
    return EventStream(ui_state(request).hub, topic)
