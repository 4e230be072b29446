"""What ``fewshot serve`` was given, the rule on where it may listen, and how its workers receive it.

The service binds to the loopback address unless told otherwise, and listening anywhere else needs
an API key (``--api-key`` or ``FEWSHOT_API_KEY``): a service that adapts and stores whatever it is
sent must not be open to a network by accident. uvicorn's ``--workers`` starts fresh processes that
build the app from an import string, so the settings travel to them in the environment
(``FEWSHOT_SERVE_SETTINGS``, JSON; the key only ever in ``FEWSHOT_API_KEY``).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fewshot_sdk.errors import InputError
from fewshot_sdk.serve.limits import Limits

API_KEY_VARIABLE = "FEWSHOT_API_KEY"
SETTINGS_VARIABLE = "FEWSHOT_SERVE_SETTINGS"
#: The bundled photo model: the page is for photos.
DEFAULT_MODEL = "protonet-photos"
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class ServeSettings:
    tasks: Path
    model: str = DEFAULT_MODEL
    host: str = LOCALHOST
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)

    def check(self) -> ServeSettings:
        """Refuse what cannot be served safely, in one line, before anything is loaded."""
        if self.api_key is not None and len(self.api_key) < 16:
            raise InputError(
                f"the API key is {len(self.api_key)} characters; use 16 or more (e.g. openssl rand -hex 16)"
            )
        if not is_loopback(self.host) and not self.api_key:
            raise InputError(
                f"binding to {self.host} opens the service beyond this machine: give an API key with --api-key "
                f"or {API_KEY_VARIABLE}, or bind to {LOCALHOST}"
            )
        if "*" in self.cors_origins and self.api_key is None:
            raise InputError(
                "--cors-origin '*' lets any web page drive the service: name the origins, or set an API key"
            )
        limits = self.limits
        if min(limits.max_request_bytes, limits.max_images, limits.max_pixels) < 1:
            raise InputError(f"limits must be positive, got {limits}")
        return self

    def to_environment(self) -> dict[str, str]:
        """The variables a worker process reads back with :func:`from_environment`."""
        public = asdict(self)
        public.pop("api_key")
        public["tasks"] = str(self.tasks)
        variables = {SETTINGS_VARIABLE: json.dumps(public)}
        if self.api_key:
            variables[API_KEY_VARIABLE] = self.api_key
        return variables


def from_environment() -> ServeSettings:
    raw = os.environ.get(SETTINGS_VARIABLE)
    if raw is None:
        raise InputError(f"{SETTINGS_VARIABLE} is not set: start the service with `fewshot serve`")
    values = json.loads(raw)
    return ServeSettings(
        tasks=Path(values["tasks"]),
        model=values["model"],
        host=values["host"],
        port=values["port"],
        api_key=os.environ.get(API_KEY_VARIABLE) or None,
        cors_origins=tuple(values["cors_origins"]),
        limits=Limits(**values["limits"]),
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
