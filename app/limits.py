"""Request body limits, enforced while the body streams in rather than after it was spooled."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ApiError

# Room for the multipart boundaries and the small form fields around the files.
FORM_OVERHEAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class BodyLimit:
    """The body limit of one route.

    Attributes:
        field: the request field named in the error.
        setting: the FRAGILITY_ setting behind the limit, or None for a fixed limit.
        setting_bytes: the setting's value; the limit is that plus FORM_OVERHEAD_BYTES.
    """

    field: str
    setting: str | None = None
    setting_bytes: int = 0

    @property
    def limit_bytes(self) -> int:
        """Largest accepted request body, in bytes."""
        return self.setting_bytes + FORM_OVERHEAD_BYTES

    def message(self) -> str:
        """Return the 413 error detail, which names the limit and the setting that raises it."""
        if self.setting is None:
            return (
                f"{self.field}: the request body is over the limit of {self.limit_bytes} bytes "
                "for this route; send a smaller body"
            )
        return (
            f"{self.field}: the request body is over the limit of {self.limit_bytes} bytes, "
            f"which is {self.setting} ({self.setting_bytes}) plus {FORM_OVERHEAD_BYTES} bytes "
            f"for the rest of the form; send a smaller file or raise {self.setting}"
        )


class BodyLimitMiddleware:
    """Reject a request whose body exceeds the limit of its route with 413 and a JSON error.

    A Content-Length over the limit is rejected before any byte is read. A chunked body is
    counted as it arrives and rejected when it passes the limit.

    Args:
        app: the ASGI app to wrap.
        limit_for: maps (method, path) to the route's BodyLimit, or None for requests without
            a limit of their own.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], BodyLimit | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.limit_for(scope["method"], scope["path"])
        if rule is None:
            await self.app(scope, receive, send)
            return
        limit, field, message = rule.limit_bytes, rule.field, rule.message()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, {"detail": message, "field": field})
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    raise ApiError(413, message, field)
            return event

        await self.app(scope, counting_receive, send)


async def _send_json(send: Send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
