"""Every failure a client can cause answers a 4xx with the SDK's one-line message as ``{"error": "..."}``.

The SDK raises ``fs.InputError`` / ``fs.CheckpointError`` with a line naming the culprit and what to
do; the service passes that line on, with the status that says whose move it is: 400 for a bad
request, 404 for an unknown task, 409 for a stored task this server cannot use or one being changed
by another request, 413 for a request beyond the limits (401 for a missing API key: ``access``). A bug of the
server's own is a 500 whose body says only that, never a traceback: that stays in the server's log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from fewshot_sdk.errors import AdaptationError, CheckpointError, FewShotError, InputError

log = logging.getLogger("fewshot_sdk.serve")


class ServeError(InputError):
    """A request the service refuses, with the HTTP status that says why."""

    status_code = 400


class UnknownTask(ServeError):
    status_code = 404


class TooLarge(ServeError):
    status_code = 413


class Busy(ServeError):
    """The task is being changed by another request (in this process or another replica)."""

    status_code = 409


def status_for(exc: FewShotError) -> int:
    if isinstance(exc, ServeError):
        return exc.status_code
    if isinstance(exc, CheckpointError):
        return 409  # the stored task is unusable: the request is fine, the state it names is not
    if isinstance(exc, AdaptationError):
        return 422
    return 400


def one_line(message: object) -> str:
    """A message as one line: a client shows it as it is, and a log line stays one line."""
    return " ".join(str(message).split()) or "bad request"


def error_response(status: int, message: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: where, and what is wrong."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "the request body"
        if error.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'malformed')})")
        else:
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    async def sdk_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FewShotError)
        return error_response(status_for(exc), exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, describe_validation(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        headers: dict[str, Any] | None = getattr(exc, "headers", None)
        return error_response(exc.status_code, exc.detail, headers)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; the server's log has the details")

    app.add_exception_handler(FewShotError, sdk_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, server_error)
