"""The FastAPI app: the routes, each a thin call into the task store, and the middleware around them.

Adapting, predicting, reading task files and decoding images all run in the thread pool, never on
the event loop, so a slow adaptation holds up no other request; the learner is loaded once and
shared by every task made with it (``adapt`` never changes it). ``create_app`` builds the app from
settings; ``app_from_environment`` is the import string uvicorn's workers build it from.

    POST   /tasks                        multipart, one field per class (its name), one file per photo;
                                         ?finetune=auto fine-tunes the task on them
    GET    /tasks                        every task
    GET    /tasks/{id}                   classes with their image counts, method, threshold
    POST   /tasks/{id}/classes           multipart like POST /tasks: classes to add
    POST   /tasks/{id}/classes/remove    JSON {"classes": [names]}
    DELETE /tasks/{id}
    GET    /tasks/{id}/onnx              the task as one .onnx file (exported on first request)
    POST   /tasks/{id}/predict           multipart, one file per image, any field name; ?reject=auto|none|<number>,
                                         ?transductive=true (the images sent together refine the task)
    GET    /healthz                      status, model, method, version, and whether the model can fine-tune
                                         (``finetune``: does it take ?finetune=auto)
    GET    /metrics, GET / (the page)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from fewshot_sdk.errors import InputError
from fewshot_sdk.io.zoo import load
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.serve.access import ApiKeyCheck
from fewshot_sdk.serve.answers import prediction_json, read_finetune, read_reject, read_transductive
from fewshot_sdk.serve.errors import install_error_handlers
from fewshot_sdk.serve.limits import BodyLimit, Limits
from fewshot_sdk.serve.metrics import Metrics, MetricsMiddleware
from fewshot_sdk.serve.settings import ServeSettings, from_environment
from fewshot_sdk.serve.tasks_store import TaskStore
from fewshot_sdk.serve.uploads import decode_image, field_name, shown
from fewshot_sdk.version import __version__

PAGE = Path(__file__).resolve().parent / "page"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
#: Text fields of a form are names, never data: no more than this many bytes each.
MAX_TEXT_FIELD = 4096

T = TypeVar("T")


class RemoveClasses(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classes: list[str] = Field(min_length=1, description="the names of the classes to remove")


Upload = tuple[str | None, bytes]


async def read_uploads(request: Request, limits: Limits) -> list[tuple[str, Upload]]:
    """The multipart form's files as (field name, (file name, bytes)), in the order sent; text fields refused."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InputError(
            f"send images as multipart/form-data (got {shown(content_type, 60) or 'no content type'}): "
            "e.g. curl -F cat=@cat1.jpg -F dog=@dog1.jpg"
        )
    try:
        form = await request.form(
            max_files=limits.max_images, max_fields=limits.max_images, max_part_size=MAX_TEXT_FIELD
        )
    except HTTPException as exc:
        if "too many files" in str(exc.detail).lower():
            raise limits.too_many_images() from None
        raise InputError(f"the multipart body could not be read: {exc.detail}") from None
    try:
        uploads = []
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise InputError(f"form field {shown(field)!r} holds text, not a file: send each image as a file")
            uploads.append((field_name(field), (value.filename, await value.read())))
    finally:
        await form.close()
    if not uploads:
        raise InputError("the request holds no images: send one file per image in a multipart form")
    return uploads


def by_class(uploads: list[tuple[str, Upload]], max_pixels: int) -> dict[str, list[Any]]:
    """{class name (the field's name): [decoded images]}, classes in the order first sent."""
    classes: dict[str, list[Any]] = {}
    for field, (name, data) in uploads:
        classes.setdefault(field, []).append(decode_image(name, data, max_pixels))
    return classes


def fine_tunes(learner: Learner) -> bool:
    """Whether ``POST /tasks?finetune=auto`` is taken: the check ``adapt`` itself makes of its options."""
    try:
        learner.adapt_options({"finetune": "auto"})
    except InputError:
        return False
    return True


def create_app(settings: ServeSettings, learner: Learner | None = None) -> FastAPI:
    """The service over ``settings.tasks``; ``learner``: one already loaded (tests, embedding), else the settings'."""
    settings.check()
    learner = learner if learner is not None else load(settings.model)
    store = TaskStore(settings.tasks, learner, settings.model)
    limits = settings.limits
    metrics = Metrics()
    finetune = fine_tunes(learner)  # asked once: the page turns its fine-tuning checkbox off where it is False
    # Swagger's pages load their scripts from a CDN: the service works offline, so only /openapi.json is served.
    app = FastAPI(title="fewshot-sdk serve", version=__version__, docs_url=None, redoc_url=None)
    app.state.store = store
    app.state.metrics = metrics
    install_error_handlers(app)

    async def off_loop(work: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(work, *args)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": settings.model,
            "method": learner.method,
            "finetune": finetune,
            "version": __version__,
        }

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/page/{name}", include_in_schema=False)
    async def page_file(name: str) -> FileResponse:
        if name not in PAGE_FILES:  # three known files; a name is never joined to a path unchecked
            raise HTTPException(404, f"no page file {shown(name)!r}")
        return FileResponse(PAGE / name, media_type=PAGE_FILES[name])

    @app.get("/tasks")
    async def list_tasks() -> dict[str, Any]:
        return {"tasks": [info.as_json() for info in await off_loop(store.list)]}

    @app.post("/tasks", status_code=201)
    async def create_task(request: Request, finetune: str | None = None) -> dict[str, Any]:
        options = read_finetune(finetune)  # a bad value is refused before the upload is read
        uploads = await read_uploads(request, limits)

        def work() -> dict[str, Any]:
            return store.create(by_class(uploads, limits.max_pixels), **options).as_json()

        return await off_loop(work)

    @app.get("/tasks/{task_id}")
    async def show_task(task_id: str) -> dict[str, Any]:
        return (await off_loop(store.info, task_id)).as_json()

    @app.delete("/tasks/{task_id}", status_code=204)
    async def delete_task(task_id: str) -> Response:
        await off_loop(store.delete, task_id)
        return Response(status_code=204)

    @app.post("/tasks/{task_id}/classes")
    async def add_classes(task_id: str, request: Request) -> dict[str, Any]:
        await off_loop(store.info, task_id)  # an unknown task is 404 before its upload is read
        uploads = await read_uploads(request, limits)

        def work() -> dict[str, Any]:
            return store.add_classes(task_id, by_class(uploads, limits.max_pixels)).as_json()

        return await off_loop(work)

    @app.post("/tasks/{task_id}/classes/remove")
    async def remove_classes(task_id: str, body: RemoveClasses) -> dict[str, Any]:
        return (await off_loop(store.remove_classes, task_id, body.classes)).as_json()

    @app.get("/tasks/{task_id}/onnx")
    async def download_onnx(task_id: str) -> FileResponse:
        path = await off_loop(store.onnx_file, task_id)
        return FileResponse(path, media_type="application/octet-stream", filename=f"task-{task_id}.onnx")

    @app.post("/tasks/{task_id}/predict")
    async def predict(
        task_id: str, request: Request, reject: str | None = None, transductive: str | None = None
    ) -> dict[str, Any]:
        together = read_transductive(transductive)  # a bad value is refused before the upload is read
        task = await off_loop(store.task, task_id)  # 404 before the upload is read
        uploads = await read_uploads(request, limits)

        def work() -> dict[str, Any]:
            images = [decode_image(name, data, limits.max_pixels) for _, (name, data) in uploads]
            prediction = task.predict(images, reject=read_reject(reject, task), transductive=together)
            return prediction_json(prediction, [shown(name) for _, (name, _) in uploads])

        return await off_loop(work)

    # Outermost last: metrics time everything; CORS answers preflights before the key is asked for.
    app.add_middleware(BodyLimit, limits=limits)
    if settings.api_key:
        app.add_middleware(ApiKeyCheck, api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_from_environment() -> FastAPI:
    """The app of ``fewshot serve``'s settings, passed in the environment (how uvicorn's workers build it)."""
    return create_app(from_environment())
