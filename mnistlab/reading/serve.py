"""`mnistlab serve`: read digits over HTTP, and a page to draw them in the browser.

    POST /predict   an image as the request body, or as the multipart field `file`; answers with what
                    `mnistlab predict --json` prints for one image. Query: top_k (default 1),
                    preprocess (default true; false: the image is MNIST-style already), input (true
                    adds the 28x28 the model saw, grey levels 0-255, row by row)
    GET  /health    {"status": "ok", "model", "backend", "classes"}
    GET  /          the drawing page (page.html beside this file)
    GET  /openapi.json  the API described (OpenAPI 3.1): every body, status and JSON shape above
    (HEAD is answered wherever GET is.)

An upload goes through the very path of `mnistlab predict` (imaging.image's safe decoding, then
imaging.preprocess, then predict.classify), so the same image gets the same answer. Every error is
a 4xx with a one-line JSON body: {"error": ...} for a request that is wrong (400 empty or malformed,
408 a body not sent within the body timeout, 413 over the size limit, an unknown or repeated query
parameter 400 too), {"path": ..., "error": ...} as predict --json writes it for an image that
cannot be read as a digit (422: not an image, truncated, a decompression bomb, no ink).

Bodies are read up to the limit and no further, whatever Content-Length claims, and within
BODY_TIMEOUT_S: a client that stalls mid-body is answered 408 and its connection closed, and so is one
that stalls in its request head (headers_in_time), so stalled clients cannot hold the service's places
(limit_concurrency counts connections) for ever. A client that disconnects mid-upload is one log line.
The interactive /docs page is off: Swagger UI loads its scripts from a CDN, which an offline machine
cannot reach; /openapi.json is served. FastAPI, uvicorn and python-multipart are the optional extra
`mnistlab[serve]`, imported when the command runs.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request, imported in
# create_app) as objects; as strings it would look them up among this module's globals and fail.
import asyncio
import html
import logging
import os
import socket
import sys
import threading
from pathlib import Path

import numpy as np

from ..errors import UserError, one_line

PAGE = Path(__file__).resolve().parent / "page.html"
MAX_UPLOAD = 16 * 2**20  # bytes; a 48 MP phone JPEG is ~15 MB
# Uploads decoded at once: one image at the 50 MP limit of imaging.image takes ~1 GB while it is prepared.
DECODING_AT_ONCE = max(2, min(8, os.cpu_count() or 2))
INSTALL = "pip install 'mnistlab[serve]'"
BODY_TIMEOUT_S = 30.0  # the whole body: 16 MB at 5 Mbit/s; stalled or trickling clients are answered 408
QUERY = {"top_k", "preprocess", "input"}  # POST /predict's query parameters; every other route takes none


class Refused(Exception):
    """A request answered with a 4xx and one JSON line."""

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        super().__init__(body.get("error"))
        self.status, self.body, self.headers = status, body, headers


def run_server(ckpt: str | None, host: str = "127.0.0.1", port: int = 8000, max_upload: int = MAX_UPLOAD,
               body_timeout: float = BODY_TIMEOUT_S) -> int:
    # python-multipart is `python_multipart` since 0.0.13, `multipart` before (importing that name now warns).
    if not all(_importable(m) for m in ("fastapi", "uvicorn")) or not (
            _importable("python_multipart") or _importable("multipart")):
        raise UserError(f"mnistlab serve needs fastapi, uvicorn and python-multipart: {INSTALL}")
    import uvicorn

    from ..training.choice import find_checkpoint
    from .predict import load_classifier

    path, source = find_checkpoint(ckpt)
    # Bound here, before the model loads: a port in use is one line at once, not uvicorn's log and exit later.
    listening = _listen(host, port)
    try:
        classifier = load_classifier(path)
    except BaseException:
        listening.close()
        raise
    app = create_app(classifier, max_upload=max_upload, body_timeout=body_timeout)
    shown = f"[{host}]" if ":" in host else host
    print(f"mnistlab serve: {path} ({source}, {classifier.backend}) on http://{shown}:{port}/ "
          f"(POST /predict, GET /health; Ctrl+C stops)", file=sys.stderr, flush=True)
    # limit_concurrency: beyond 64 open requests uvicorn answers 503 at once instead of queueing without end.
    config = uvicorn.Config(app, log_level="info", limit_concurrency=64, timeout_keep_alive=5,
                            http=headers_in_time(body_timeout))
    uvicorn.Server(config).run(sockets=[listening])
    return 0


def headers_in_time(timeout: float):
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request's headers, which uvicorn lacks: a
    connection that has not sent a whole request head within `timeout` seconds of opening (or of its last
    answer) is answered 408 and closed. Stalled connections count towards limit_concurrency, so 64 of them
    would otherwise leave everyone else 503s."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    late = b'{"error":"the request head did not arrive within %g s"}' % timeout
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
              b"content-length: %d\r\n\r\n%s" % (len(late), late))

    class Protocol(H11Protocol):
        due = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self.arm()

        def on_response_complete(self):
            super().on_response_complete()
            self.arm()

        def connection_lost(self, exc):
            self.disarm()
            super().connection_lost(exc)

        def arm(self):
            self.disarm()
            self.due = self.loop.call_later(timeout, self.head_late)

        def disarm(self):
            if self.due is not None:
                self.due.cancel()

        def head_late(self):
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no whole head yet
                self.transport.write(answer)
                self.transport.close()

    return Protocol


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None (blocked, as the tests do)
        return False


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or one_line(exc)}") from None
    sock.listen(128)
    return sock


def create_app(classifier, max_upload: int = MAX_UPLOAD, body_timeout: float = BODY_TIMEOUT_S):
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    async def known_query(request: Request) -> None:
        check_query(request)

    # /docs and /redoc off: their pages load scripts from a CDN, of no use on an offline machine.
    app = FastAPI(title="mnistlab", version=_version(), docs_url=None, redoc_url=None,
                  dependencies=[Depends(known_query)])
    model_lock = threading.Lock()  # torch modules are not promised thread-safe; the model step is ~1 ms anyway
    decoding = asyncio.Semaphore(DECODING_AT_ONCE)
    page = PAGE.read_text(encoding="utf-8").replace("{{MODEL}}", html.escape(short_label(classifier)))
    health = {"status": "ok", "model": str(classifier.path), "backend": classifier.backend,
              "classes": list(classifier.classes)}
    docs = documented_responses()

    @app.exception_handler(Refused)
    async def refused(_request, exc: Refused):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"error": one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_query(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        return JSONResponse({"error": f"{first['loc'][-1]}: {one_line(first['msg'])}"}, status_code=400)

    @app.get("/", response_class=HTMLResponse, responses=docs["page"])
    async def index():
        return page

    @app.get("/health", responses=docs["health"])
    async def get_health():
        return health

    for route, endpoint in (("/", index), ("/health", get_health)):  # HEAD wherever GET (uvicorn sends no body)
        app.add_api_route(route, endpoint, methods=["HEAD"], include_in_schema=False,
                          response_class=HTMLResponse if route == "/" else JSONResponse)

    @app.post("/predict", responses=docs["predict"], openapi_extra={"requestBody": PREDICT_BODY})
    async def post_predict(request: Request, top_k: int = Query(1, ge=1, le=1000), preprocess: bool = True,
                           input: bool = False):  # noqa: A002  (the query parameter's name)
        data, name = await read_upload(request, max_upload, body_timeout)
        async with decoding:
            return await run_in_threadpool(read_digit, classifier, model_lock, data, name, top_k, preprocess, input)

    return app


def _version() -> str:
    from .._version import __version__

    return __version__


def check_query(request) -> None:
    """Every route refuses query parameters it does not read, and any given twice: `?multi=true` once read
    a row of four digits as one, silently."""
    allowed = QUERY if request.url.path == "/predict" else set()
    names = [name for name, _ in request.query_params.multi_items()]
    for name in names:
        if name not in allowed:
            known = f"; known: {', '.join(sorted(allowed))}" if allowed else "; this address takes none"
            raise Refused(400, {"error": f"unknown query parameter {one_line(name, 40)!r}{known}"})
        if names.count(name) > 1:
            raise Refused(400, {"error": f"query parameter {name!r} given more than once"})


# POST /predict's body as /openapi.json describes it (the endpoint reads the stream itself); empty is a 400.
_IMAGE = {"type": "string", "format": "binary", "minLength": 1}
PREDICT_BODY = {"required": True, "description": "an image (PNG, JPEG, ...) as the body, or as the multipart field "
                "`file`", "content": {"application/octet-stream": {"schema": _IMAGE}, "image/*": {"schema": _IMAGE},
                                      "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                                         "properties": {"file": _IMAGE}}}}}


def documented_responses() -> dict[str, dict]:
    """Each route's statuses with the JSON they carry, for /openapi.json (generated clients rely on it)."""
    from pydantic import BaseModel, Field

    class Error(BaseModel):
        error: str = Field(description="what is wrong, in one line")

    class ImageError(Error):
        path: str = Field(description="the upload's file name, or `upload` for a raw body")

    class Choice(BaseModel):
        label: str
        probability: float

    class Reading(BaseModel):  # what `predict --json` prints for one image
        path: str
        prediction: str
        confidence: float
        top_k: list[Choice]
        input: list[list[int]] | None = Field(None, description="with ?input=true: the 28x28 the model saw")

    class Health(BaseModel):
        status: str
        model: str
        backend: str
        classes: list[str]

    def error(what: str, model=Error) -> dict:
        return {"model": model, "description": what}

    # uvicorn's own answer beyond limit_concurrency, before the app sees the request
    busy = {503: {"description": "over 64 requests open at once (uvicorn's plain-text answer)",
                  "content": {"text/plain": {"schema": {"type": "string"}}}}}
    query = {400: error("an unknown or repeated query parameter"), **busy}
    as_json = {"content": {"application/json": {"schema": Error.model_json_schema()}}}  # the page's is HTML
    return {"page": {400: {**as_json, "description": query[400]["description"]}, **busy},
            "health": {200: {"model": Health}, **query},
            "predict": {**busy, 200: {"model": Reading, "description": "the digit read"},
                        400: error("empty or malformed body, a bad or unknown query parameter"),
                        408: error("the body was not sent within the body timeout"),
                        413: error("the body is over the size limit"),
                        422: error("the upload holds no readable digit (as predict --json says)", ImageError)}}


def short_label(classifier) -> str:
    from .draw import short_path

    return f"{short_path(classifier.path)}  ({classifier.backend})"


async def read_upload(request, limit: int, timeout: float = BODY_TIMEOUT_S) -> tuple[bytes, str]:
    """The image bytes and a name for them: the multipart field `file`, else the whole body."""
    body = await read_body(request, limit, timeout)
    if not body:
        raise Refused(400, {"error": "empty body: send an image, as the body or as the multipart field 'file'"})
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return body, "upload"
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Refused(400, {"error": "multipart upload without a file field named 'file'"})
    data, name = await upload.read(), upload.filename or "upload"
    if not data:
        raise Refused(400, {"error": f"{name}: empty file"})
    return data, name


async def read_body(request, limit: int, timeout: float = BODY_TIMEOUT_S) -> bytes:
    """The request body, refused with 413 as soon as it is longer than `limit` bytes and with 408 when it has
    not all come within `timeout` seconds (the connection is closed: the rest of the body is never read)."""
    from starlette.requests import ClientDisconnect

    too_big = Refused(413, {"error": f"request body larger than the {limit / 2**20:g} MB limit"})
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    deadline, stream = loop.time() + timeout, request.stream().__aiter__()
    try:
        while True:  # asyncio.timeout() would do, from Python 3.11
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - loop.time()))
            except StopAsyncIteration:
                break
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
    except asyncio.TimeoutError:
        raise Refused(408, {"error": f"the request body did not arrive within {timeout:g} s ({size:,} bytes came)"},
                      headers={"Connection": "close"}) from None
    except ClientDisconnect:  # nobody to answer: one line in the log, not a traceback
        client = request.client.host if request.client else "a client"
        logging.getLogger("uvicorn.error").warning(f"{client} disconnected after sending {size:,} bytes of its body")
        raise Refused(400, {"error": "the client disconnected mid-upload"}) from None
    return b"".join(chunks)


def read_digit(classifier, model_lock, data: bytes, name: str, top_k: int, frame: bool, with_input: bool) -> dict:
    """What `predict --json` says of one image, for bytes; a Refused (422) when they hold no readable digit."""
    from ..imaging.image import ImageError, open_image_bytes
    from .predict import classify, describe
    from ..imaging.preprocess import preprocess

    try:
        digit = preprocess(open_image_bytes(data, name), frame=frame)
    except ImageError as exc:
        raise Refused(422, {"path": name, "error": one_line(str(exc).removeprefix(f"{name}: "))}) from None
    with model_lock:
        probs = classify(classifier, digit[None])[0]
    result = describe(name, probs, classifier.classes, top_k)
    if with_input:
        result["input"] = np.clip(digit * 255 + 0.5, 0, 255).astype(np.uint8).tolist()
    return result
