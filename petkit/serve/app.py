"""The HTTP API and web page of ``petkit serve`` (FastAPI).

Every error is JSON ``{"error": "one line", "hint": "..."}`` with its 4xx status; an unexpected
exception is a 500 with a generic message (the traceback goes to the server log only). Write
endpoints need the API key when one is configured (``Authorization: Bearer KEY`` or
``X-API-Key: KEY``). Request bodies over the upload limit are refused with 413 before they are
read in full, chunked or not.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from importlib import resources
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from petkit import __version__
from petkit.errors import PetkitError
from petkit.serve.gallery import IDENTITY_HINT, PHOTO_ID, check_identity
from petkit.serve.service import Service, UploadRefused

log = logging.getLogger("petkit.serve")
STATIC = ("index.html", "app.js", "style.css")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


# module level: FastAPI resolves the (string) annotations of the endpoints in this module's namespace
Photos = Annotated[list[UploadFile], File(description="One or more photos (JPEG, PNG, WebP, HEIC, AVIF)")]
TopK = Annotated[int, Form(ge=1, le=100, description="How many identities to return")]
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=1000)]


class ApiError(Exception):
    def __init__(self, status: int, message: str, hint: str | None = None, headers: dict | None = None):
        self.status, self.message, self.hint, self.headers = status, message, hint, headers


def _error(status: int, message: str, hint: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": message.splitlines()[0][:500] if message else "error"}
    if hint:
        body["hint"] = hint
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes gets 413 (by Content-Length, or while it streams in)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        hint = f"send at most {self.limit // (1024 * 1024)} MB per request (--max-upload-mb)"
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                return await _error(400, "Content-Length is not a number")(scope, receive, send)
            if too_big:
                return await _error(413, f"the request body ({int(declared)} bytes) is over the upload limit", hint)(scope, receive, send)
        if declared is not None:
            return await self.app(scope, receive, send)
        # no length declared (chunked): read the body here, at most the limit, then hand it on
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await _error(413, "the request body is over the upload limit", hint)(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def create_app(service: Service, api_key: str | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(title="petkit lost-pet finder", version=__version__, lifespan=lifespan,
                  description="Identify an animal from photos against enrolled individuals, and manage the gallery.")
    app.add_middleware(BodyLimit, limit=service.settings.max_upload_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.hint, exc.headers)

    @app.exception_handler(UploadRefused)
    async def refused(request: Request, exc: UploadRefused):
        return _error(exc.status, exc.message, exc.hint)

    @app.exception_handler(PetkitError)
    async def petkit_error(request: Request, exc: PetkitError):
        return _error(422, exc.message, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}", "see /docs for the request format")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal error", "the server log has the details")

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "this change needs the service's API key", "send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                           {"WWW-Authenticate": "Bearer"})

    writes = [Depends(require_key)]

    async def read_photos(photos: list[UploadFile]):
        if not photos:
            raise ApiError(422, "no photo sent", "send one or more files in the 'photos' field")
        if len(photos) > service.settings.max_photos:
            raise ApiError(413, f"{len(photos)} photos in one request; the limit is {service.settings.max_photos}", "send them in several requests")
        decoded = []
        for n, upload in enumerate(photos, start=1):
            data = await upload.read()
            decoded.append(await run_in_threadpool(service.decode, data, f"photo {n}"))
        return decoded

    def identity_param(identity: str) -> str:
        try:
            return check_identity(identity)
        except PetkitError:
            raise ApiError(422, f"identity {identity[:60]!r} is not a valid name", IDENTITY_HINT) from None

    @app.post("/v1/identify", summary="Who is this? Top identities for photos of one animal, and match/unknown")
    async def identify(photos: Photos, top_k: TopK = 5):
        return await service.identify(await read_photos(photos), top_k)

    @app.post("/v1/identities/{identity}/photos", status_code=201, summary="Enrol photos of an identity (new or known)", dependencies=writes)
    async def enrol(identity: str, photos: Photos):
        identity = identity_param(identity)
        decoded = await read_photos(photos)
        try:
            done = await service.enrol(identity, decoded)
        except PetkitError as exc:
            if "already enrolled" in exc.message:
                raise ApiError(409, exc.message, exc.hint) from None
            raise
        return {"identity": identity, "photos": done}

    @app.get("/v1/identities", summary="Enrolled identities, in enrolment order")
    async def identities(offset: Offset = 0, limit: Limit = 100):
        everyone = service.gallery.identities()
        return {"total": len(everyone), "offset": offset,
                "identities": [{"identity": name, "photos": n} for name, n in everyone[offset:offset + limit]]}

    @app.get("/v1/identities/{identity}", summary="One identity's photos")
    async def identity(identity: str):
        identity = identity_param(identity)
        try:
            photos = service.gallery.photos_of(identity)
        except KeyError:
            raise ApiError(404, f"identity {identity!r} is not enrolled") from None
        return {"identity": identity, "photos": [{"id": p, "thumbnail": f"/v1/photos/{p}/thumbnail"} for p in photos]}

    @app.delete("/v1/identities/{identity}", summary="Forget an identity and all its photos", dependencies=writes)
    async def delete_identity(identity: str):
        identity = identity_param(identity)
        try:
            removed = await run_in_threadpool(service.gallery.delete_identity, identity)
        except KeyError:
            raise ApiError(404, f"identity {identity!r} is not enrolled") from None
        return {"identity": identity, "deleted_photos": removed}

    @app.delete("/v1/photos/{photo_id}", summary="Forget one photo", dependencies=writes)
    async def delete_photo(photo_id: str):
        if not PHOTO_ID.fullmatch(photo_id):
            raise ApiError(422, "a photo id is 32 hexadecimal digits", "use an id that an enrolment or identify answer gave")
        try:
            identity = await run_in_threadpool(service.gallery.delete_photo, photo_id)
        except KeyError:
            raise ApiError(404, f"photo {photo_id} is not enrolled") from None
        return {"photo": photo_id, "identity": identity}

    @app.get("/v1/photos/{photo_id}/thumbnail", summary="The enrolled photo, small (JPEG)")
    async def thumbnail(photo_id: str):
        if not PHOTO_ID.fullmatch(photo_id) or service.gallery.identity_of(photo_id) is None:
            raise ApiError(404, f"photo {photo_id[:40]} is not enrolled")
        path = service.gallery.thumbnail_path(photo_id)
        if not path.is_file():
            raise ApiError(404, f"photo {photo_id} has no thumbnail (enrolled from embeddings whose photo was unreadable)")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/health", summary="Model, gallery size, threshold and version")
    async def health():
        return service.health()

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(_static("index.html"), headers=_page_headers())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in STATIC:
            raise ApiError(404, f"no such file: {name[:60]}")
        return Response(_static(name), media_type=TYPES["." + name.rsplit(".", 1)[1]], headers=_page_headers())

    return app


def _static(name: str) -> str:
    return resources.files("petkit.serve").joinpath("static", name).read_text(encoding="utf-8")


def _page_headers() -> dict:
    # the page loads only its own script and style and the gallery's thumbnails; blob: for the preview of a chosen photo
    return {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
