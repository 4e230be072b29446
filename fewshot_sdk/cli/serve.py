"""``fewshot serve``: the HTTP service and its page (:mod:`fewshot_sdk.serve`).

FastAPI and uvicorn come with the ``serve`` extra and are imported only when this command runs, so
the other commands start as fast as before and a base install lists this command without them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated

import typer

from fewshot_sdk.cli.errors import clean_errors, fail

SERVE_EXTRA = 'pip install -c constraints.txt -e ".[serve]"'
#: The import names of the serve extra's packages (python-multipart imports as python_multipart).
SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart")


@clean_errors
def serve(
    tasks: Annotated[Path, typer.Option(help="Folder the tasks are kept in (made if missing).")] = Path(
        "fewshot-tasks"
    ),
    model: Annotated[
        str, typer.Option(help="Bundled model name or checkpoint folder that new tasks adapt (photos: the default).")
    ] = "protonet-photos",
    host: Annotated[str, typer.Option(help="Address to listen on; other than loopback needs --api-key.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(help="Key every request must send (X-API-Key); default: the FEWSHOT_API_KEY variable."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (uvicorn --workers) over the one folder.")] = 1,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="A web origin allowed to call the API (repeatable).")
    ] = None,
    max_request_mb: Annotated[int, typer.Option("--max-request-mb", min=1, help="Largest request body, MiB.")] = 64,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Most images in one request.")] = 64,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", min=1, help="Most pixels in one image (width x height).")
    ] = 40_000_000,
) -> None:
    """Serve tasks over HTTP: create them from photos, grow, shrink, predict, download ONNX; a page at /."""
    missing = [name for name in SERVE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"fewshot serve needs {', '.join(missing)}, from the serve extra: {SERVE_EXTRA}")
    import uvicorn

    from fewshot_sdk.registry import zoo_path
    from fewshot_sdk.serve.limits import MIB, Limits
    from fewshot_sdk.serve.settings import API_KEY_VARIABLE, ServeSettings

    settings = ServeSettings(
        tasks=tasks.resolve(),
        model=model,
        host=host,
        port=port,
        api_key=api_key or os.environ.get(API_KEY_VARIABLE) or None,
        cors_origins=tuple(cors_origin or ()),
        limits=Limits(max_request_bytes=max_request_mb * MIB, max_images=max_images, max_pixels=max_pixels),
    ).check()
    typer.echo(f"fewshot serve: http://{host}:{port}/ ({model}; tasks in {settings.tasks})", err=True)
    if workers == 1:
        from fewshot_sdk.serve.app import create_app

        app = create_app(settings)  # a bad model or folder fails here, in one line
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    # Workers build the app themselves from an import string and the settings in the environment.
    if zoo_path(model) is None and not Path(model).is_dir():
        fail(f"no checkpoint folder or bundled model named {model!r}")
    os.environ.update(settings.to_environment())
    uvicorn.run(
        "fewshot_sdk.serve.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
