"""The web application: `GET /` the page, `POST /api/caption` a caption, `GET /api/health` the server's state.

Built on Starlette (a small, well-kept ASGI toolkit; uvicorn serves it): the page and API need routing,
multipart uploads and async waiting for the workers, not a framework's validation or templating.

Sturdy under load: at most `workers + queue` uploads are admitted at once; the rest get 503 with Retry-After
at once, so memory stays bounded. An admitted upload that takes longer than `timeout` seconds gets 504.
Every bad request gets a 4xx with one JSON message {"error": ...}, and the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from captioner.data.images import ImageError
from captioner.serve.captioning import MAX_BEAM, caption_upload, make_pool, warm_up

PAGE = Path(__file__).resolve().parent / "static" / "index.html"
VIEWER = Path(__file__).resolve().parent.parent / "visualize" / "static"  # drawing shared with the HTML report
MAX_UPLOAD_BYTES = 10 * 2**20
RETRY_AFTER_SECONDS = 2


@dataclasses.dataclass
class Settings:
    models: dict[str, str]  # name -> .keras path, chosen by whoever starts the server, never by a request
    default_model: str
    workers: int = 2
    queue: int = 16  # uploads waiting for a worker beyond those being captioned
    timeout: float = 30.0  # seconds an upload may take, waiting included
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    default_beam: int = 3
    url: str = ""  # printed once the workers are ready


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(settings: Settings) -> Starlette:
    state = {"pool": None, "admitted": 0, "captioned": 0, "refused": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        """The workers start (and caption a blank image each) before the first request is served."""
        state["pool"] = make_pool(settings.models, settings.workers)
        await asyncio.get_running_loop().run_in_executor(None, warm_up, state["pool"], settings.workers,
                                                         settings.default_model)
        if settings.url:
            print(f"Serving {', '.join(settings.models)} at {settings.url}  (Ctrl-C stops)", flush=True)
        try:
            yield
        finally:
            state["pool"].shutdown(wait=True, cancel_futures=True)  # the workers end with the server

    async def page(request: Request):
        return FileResponse(PAGE, media_type="text/html; charset=utf-8")

    async def health(request: Request):
        return JSONResponse({"status": "ok", "models": list(settings.models), "default_model": settings.default_model,
                             "workers": settings.workers, "queue": settings.queue, "in_flight": state["admitted"],
                             "captioned": state["captioned"], "refused_busy": state["refused"],
                             "max_upload_bytes": settings.max_upload_bytes, "max_beam": MAX_BEAM,
                             "default_beam": settings.default_beam})

    async def caption(request: Request):
        length = request.headers.get("content-length")
        if length is None:
            return error(411, "send the upload with a Content-Length header")
        if not length.isdigit() or int(length) > settings.max_upload_bytes:
            return error(413, f"upload of {length} bytes is over the limit of {settings.max_upload_bytes:,} bytes")
        if state["admitted"] >= settings.workers + settings.queue:
            state["refused"] += 1
            return error(503, "busy: every worker and queue place is taken; try again shortly",
                         {"Retry-After": str(RETRY_AFTER_SECONDS)})
        state["admitted"] += 1
        try:
            return await _caption(request)
        finally:
            state["admitted"] -= 1

    async def _caption(request: Request):
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error(415, "send the photo as multipart/form-data, in a field named 'image'")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as problem:  # the multipart parser's own errors: malformed bodies, too many parts
            return error(400, f"malformed upload: {problem}")
        try:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                return error(400, "no file in the field 'image'")
            name = Path(upload.filename or "upload").name[:200]
            model = form.get("model") or settings.default_model
            if model not in settings.models:
                return error(400, f"unknown model {str(model)[:50]!r}; this server has {', '.join(settings.models)}")
            beam = form.get("beam") or str(settings.default_beam)
            if not (isinstance(beam, str) and beam.isdigit() and 1 <= int(beam) <= MAX_BEAM):
                return error(400, f"beam must be a whole number from 1 to {MAX_BEAM}, not {str(beam)[:20]!r}")
            data = await upload.read()
        finally:
            await form.close()  # the upload's spooled temporary file, if it grew past memory
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(state["pool"], caption_upload, model, data, name, int(beam))
            result = await asyncio.wait_for(future, settings.timeout)
        except ImageError as problem:
            return error(422 if "pixels" not in str(problem) else 413, str(problem))
        except asyncio.TimeoutError:
            return error(504, f"captioning took longer than {settings.timeout:g} s; the server is overloaded")
        except BrokenProcessPool:  # a worker died (out of memory?): start a fresh pool for the next uploads
            state["pool"] = make_pool(settings.models, settings.workers)
            return error(503, "a captioning worker stopped; try again", {"Retry-After": str(RETRY_AFTER_SECONDS)})
        state["captioned"] += 1
        return JSONResponse(result)

    routes = [
        Route("/", page),
        Route("/api/health", health),
        Route("/api/caption", caption, methods=["POST"]),
        Mount("/static/viewer", StaticFiles(directory=VIEWER), name="viewer"),
        Mount("/static", StaticFiles(directory=PAGE.parent), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: lambda request, exc: error(404, f"no such page: {request.url.path}"),
                                         405: lambda request, exc: error(405, f"{request.method} is not allowed here"),
                                         Exception: lambda request, exc: error(500, "internal error; see the server's log")})
