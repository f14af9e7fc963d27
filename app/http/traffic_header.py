"""``TrafficHeaderMiddleware``: the request's headers for sticky routing, and
``X-Triton-Serve-Target`` on responses that a public model name's target served.

Pure ASGI: the context variable it sets is seen by the route, and the header is
added as the response starts (a stream's headers go before its first event).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.router.traffic import TARGET_HEADER, TrafficRequest, traffic_request

__all__ = ["TrafficHeaderMiddleware"]

_TARGET = TARGET_HEADER.lower().encode("latin-1")


class TrafficHeaderMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope["headers"]

        def lookup(name: str) -> str | None:
            wanted = name.encode("latin-1")
            for key, value in raw:
                if key.lower() == wanted:
                    return bytes(value).decode("latin-1")
            return None

        request = TrafficRequest(lookup)

        async def send_with_target(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = request.header_value()
                if value is not None:
                    headers = list(message.get("headers", []))
                    headers.append((_TARGET, value.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        token = traffic_request.set(request)
        try:
            await self.app(scope, receive, send_with_target)
        finally:
            traffic_request.reset(token)
