"""What one request may bring: bytes in its body, images, and pixels per image.

Each limit is checked where it can first be known, before the work it would cost: the body's size
from its ``Content-Length`` and again while it streams in (a chunked upload has no length), the
number of images while the form is parsed, and each image's pixels from its header before it is
decoded. Beyond a limit the answer is 413 with the limit and the option that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fewshot_sdk.serve.errors import TooLarge, error_response

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """The service's limits; the defaults fit a few dozen phone photos in one request."""

    max_request_bytes: int = 64 * MIB
    max_images: int = 64
    max_pixels: int = 40_000_000

    def too_many_images(self) -> TooLarge:
        return TooLarge(f"too many images in one request: at most {self.max_images} (fewshot serve --max-images)")

    def too_large(self, size: int | None = None) -> TooLarge:
        what = f"{size:,} bytes" if size is not None else "more"
        return TooLarge(
            f"the request body is {what}, above the {self.max_request_bytes:,}-byte limit "
            "(fewshot serve --max-request-mb): send fewer or smaller images per request"
        )


class BodyLimit:
    """ASGI middleware: a body above ``limits.max_request_bytes`` is refused with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_request_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error_response(400, "the Content-Length header is not a number")(scope, receive, send)
                return
            if size > limit:
                await error_response(413, self.limits.too_large(size))(scope, receive, send)
                return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self.limits.too_large()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except TooLarge as exc:  # raised while streaming, outside any handler
            if started:
                raise
            await error_response(413, exc)(scope, receive, send)
