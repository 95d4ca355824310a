"""`mnistlab serve`: the real uvicorn server in a subprocess, spoken to over HTTP, and its page in Chromium.

The server runs as users start it (`python -m mnistlab serve --port P`, the shipped model) on a free
localhost port. Good uploads (raw bytes and multipart) must answer exactly what `predict --json`
says of the same file; bad ones (empty, not an image, truncated, a decompression bomb, 50 MB with and
without Content-Length, blank paper, malformed multipart, bad query values) get a 4xx with one JSON
line; 96 requests from 16 threads at once get the answers they get one by one. Ctrl+C stops it
with exit 130, as `draw`. The page is driven in a real headless Chromium through playwright: digits drawn with the
mouse are read live, the bars and the model-input preview show what POST /predict says of the
canvas, Escape clears, and a screenshot is saved in the test's tmp dir (and copied to
/tmp/mnistlab_serve_page.png for people). The browser test skips, saying why, only where playwright
or a Chromium is missing or cannot start (.ci/run installs Debian's chromium).

The digits are drawn with tests/test_draw.py's strokes, so no dataset is needed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from drawn_digits import DIGITS, render
from mnistlab.reading.draw import CANVAS
from digit_styles import png_header_only
from mnistlab.reading.predict import SHIPPED

httpx = pytest.importorskip("httpx", reason="httpx is not installed (it is in the test extra)")
pytest.importorskip("fastapi", reason="the mnistlab[serve] extra is not installed")

STARTUP_S = 90  # torch import and model load on a busy CI machine
BODY_TIMEOUT_S = 6  # the module's server answers 408 to a body not all sent within this
SHOT_FOR_HUMANS = Path("/tmp/mnistlab_serve_page.png")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


class Server:
    def __init__(self, tmp: Path, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "serve.log", "w+")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "--port", str(self.port), *args],
                                        cwd=tmp, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mnistlab serve exited ({self.process.returncode}): {self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        pytest.fail(f"mnistlab serve did not answer within {STARTUP_S} s: {self.output()}")

    def output(self) -> str:
        return self.lines()[-3000:]

    def lines(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> tuple[int, str]:
        """Ctrl+C: uvicorn finishes the requests under way, then the command exits as draw does (130)."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30), self.output()
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = Server(tmp_path_factory.mktemp("serve"), "--ckpt", str(SHIPPED), "--body-timeout", str(BODY_TIMEOUT_S))
    yield app
    code, output = app.stop()
    assert code == 130 and output.endswith("Finished server process [{}]\nmnistlab serve: interrupted\n".format(
        app.process.pid)), f"Ctrl+C should stop the server cleanly: {output}"
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def drawings(tmp_path_factory) -> dict[str, Path]:
    """The digits of tests/test_draw.py as PNG files, dark ink on white."""
    folder = tmp_path_factory.mktemp("drawings")
    files = {}
    for digit, strokes in DIGITS.items():
        files[digit] = folder / f"drawn_{digit}.png"
        render(strokes()).save(files[digit])
    return files


def predict_json(path: Path, *extra) -> dict:
    """What `mnistlab predict --json` says of one file, in its own process."""
    result = subprocess.run([sys.executable, "-m", "mnistlab", "predict", str(path), "--json", "--ckpt", str(SHIPPED),
                             *extra], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    (found,) = json.loads(result.stdout)
    return found


def same_answer(got: dict, want: dict, name: str) -> None:
    assert got["path"] == name and set(got) == set(want)
    assert got["prediction"] == want["prediction"]
    assert [t["label"] for t in got["top_k"]] == [t["label"] for t in want["top_k"]]
    assert [t["probability"] for t in got["top_k"]] == pytest.approx([t["probability"] for t in want["top_k"]],
                                                                    abs=1e-6)


# ---------------------------------------------------------------- good requests

def test_health_and_the_page(server):
    health = httpx.get(f"{server.url}/health").json()
    assert health == {"status": "ok", "model": str(SHIPPED), "backend": "torch", "classes": list("0123456789")}
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and "{{MODEL}}" not in page.text and "default.pt  (torch)" in page.text
    assert "src=\"http" not in page.text and "href=\"http" not in page.text  # nothing from outside: works offline
    assert f"on http://127.0.0.1:{server.port}/ " in server.output()  # localhost unless told otherwise


def test_the_default_address_is_localhost():
    from mnistlab.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_upload_mb) == ("127.0.0.1", 8000, 16)


def test_an_upload_answers_as_predict_json(server, drawings):
    for digit, path in drawings.items():
        want = predict_json(path, "--top-k", "3")
        assert want["prediction"] == digit
        raw = httpx.post(f"{server.url}/predict?top_k=3", content=path.read_bytes())
        assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
        same_answer(raw.json(), want, "upload")
        multipart = httpx.post(f"{server.url}/predict?top_k=3", files={"file": (path.name, path.read_bytes())})
        same_answer(multipart.json(), want, path.name)
    one = httpx.post(f"{server.url}/predict", content=drawings["7"].read_bytes()).json()
    same_answer(one, predict_json(drawings["7"]), "upload")  # top_k 1 by default, as predict's


def test_query_options(server, drawings, tmp_path):
    from mnistlab.imaging.preprocess import preprocess

    data = drawings["0"].read_bytes()
    everything = httpx.post(f"{server.url}/predict?top_k=50&input=true", content=data).json()
    assert len(everything["top_k"]) == 10  # as many as there are classes
    seen = np.asarray(everything["input"])
    assert seen.shape == (28, 28) and seen.dtype.kind == "i"
    assert np.array_equal(seen, np.clip(preprocess(drawings["0"]) * 255 + 0.5, 0, 255).astype(np.uint8))

    # preprocess=false: an MNIST-style 28x28 as it is, like predict --no-preprocess
    small = tmp_path / "mnist_style.png"
    Image.fromarray(seen.astype(np.uint8)).save(small)
    same_answer(httpx.post(f"{server.url}/predict?preprocess=false&top_k=2", content=small.read_bytes()).json(),
                predict_json(small, "--no-preprocess", "--top-k", "2"), "upload")


# ---------------------------------------------------------------- bad requests

def bad_requests(drawings) -> list[tuple[str, dict, int, str]]:
    """(name, httpx.request arguments, status, words in the error)."""
    good = drawings["7"].read_bytes()

    def chunks():  # a 50 MB body with no Content-Length (chunked)
        for _ in range(50):
            yield bytes(2**20)

    blank = png(Image.new("L", (200, 200), 255))
    return [
        ("empty body", {"content": b""}, 400, "empty body"),
        ("not an image", {"content": b"hello, this is text\n" * 50}, 422, "not an image"),
        ("truncated", {"content": good[: len(good) // 2]}, 422, "truncated or corrupt"),
        ("bomb", {"content": png_header_only(100_000, 100_000)}, 422, "decompression bomb"),
        ("56 megapixels", {"content": png_header_only(8000, 7000)}, 422, "too large"),
        ("blank paper", {"content": blank}, 422, "no ink"),
        ("50 MB", {"content": bytes(50 * 2**20)}, 413, "larger than the 16 MB limit"),
        ("50 MB chunked", {"content": chunks()}, 413, "larger than the 16 MB limit"),
        ("multipart, no file field", {"files": {"picture": ("a.png", good)}}, 400, "without a file field named 'file'"),
        ("multipart, empty file", {"files": {"file": ("a.png", b"")}}, 400, "a.png: empty file"),
        ("malformed multipart", {"content": b"--x\r\nnonsense", "headers": {"content-type": "multipart/form-data"}},
         400, "boundary"),
        ("top_k=0", {"content": good, "params": {"top_k": 0}}, 400, "top_k"),
        ("top_k=abc", {"content": good, "params": {"top_k": "abc"}}, 400, "top_k"),
    ]


def test_bad_requests_get_a_4xx_and_one_json_line(server, drawings):
    for name, kwargs, status, words in bad_requests(drawings):
        response = httpx.post(f"{server.url}/predict", timeout=60, **kwargs)
        assert response.status_code == status, (name, response.status_code, response.text)
        assert response.headers["content-type"] == "application/json", name
        assert "\n" not in response.text and words in response.json()["error"], (name, response.text)
    for method, path, status in [("GET", "/predict", 405), ("POST", "/health", 405), ("GET", "/nothing", 404)]:
        response = httpx.request(method, f"{server.url}{path}")
        assert response.status_code == status and set(response.json()) == {"error"}
    assert "Traceback" not in server.output()


def test_an_image_error_reads_as_predict_json(server, tmp_path):
    """{"path", "error"}, as predict --json writes a file it cannot read."""
    (tmp_path / "note.png").write_text("not an image")
    response = httpx.post(f"{server.url}/predict", files={"file": ("note.png", b"not an image")})
    assert response.status_code == 422 and response.json() == {"path": "note.png",
                                                              "error": "not an image (or not a raster format mnistlab reads, such as PNG or JPEG)"}
    cli = subprocess.run([sys.executable, "-m", "mnistlab", "predict", "note.png", "--json", "--ckpt", str(SHIPPED)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert json.loads(cli.stdout) == [response.json()]


def test_head_is_answered_where_get_is(server):
    for path in ("/", "/health"):
        got, head = httpx.get(f"{server.url}{path}"), httpx.head(f"{server.url}{path}")
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"]


def test_unknown_or_repeated_query_parameters_are_refused(server, drawings):
    """`?multi=true` once read a row of four digits as one digit, silently."""
    good = drawings["7"].read_bytes()
    for path, params, words in [("/predict", {"multi": "true"}, "unknown query parameter 'multi'"),
                                ("/predict", {"topk": "3"}, "unknown query parameter 'topk'; known: input"),
                                ("/predict", [("top_k", "1"), ("top_k", "3")], "'top_k' given more than once"),
                                ("/health", {"x": "1"}, "unknown query parameter 'x'"),
                                ("/", {"x": "1"}, "unknown query parameter 'x'")]:
        method = "POST" if path == "/predict" else "GET"
        response = httpx.request(method, f"{server.url}{path}", params=params, content=good if method == "POST" else None)
        assert response.status_code == 400 and response.headers["content-type"] == "application/json", (path, params)
        assert "\n" not in response.text and words in response.json()["error"], response.text


def raw_request(server, body_part: bytes, declared: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT_S + 30)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                 b"Content-Length: %d\r\n\r\n" % declared + body_part)
    return sock


def test_a_stalled_body_is_answered_408_while_others_are_served(server, drawings):
    good = drawings["7"].read_bytes()
    stalled = [raw_request(server, good[:len(good) // 2], len(good)) for _ in range(3)]
    for _ in range(3):  # the stalled clients hold nothing the others need
        assert httpx.post(f"{server.url}/predict", content=good, timeout=60).json()["prediction"] == "7"
    for sock in stalled:
        with sock:
            answer = b""
            while chunk := sock.recv(65536):  # the server closes the connection after answering
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"application/json" in head, answer
        assert json.loads(body) == {"error": f"the request body did not arrive within {BODY_TIMEOUT_S} s "
                                             f"({len(good) // 2:,} bytes came)"}
    assert "Traceback" not in server.output()


def test_a_stalled_request_head_is_answered_408_while_others_are_served(server, drawings):
    """uvicorn has no deadline for headers; its connections count towards limit_concurrency (64)."""
    stalled = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT_S + 30)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        stalled.append(sock)
    good = drawings["7"].read_bytes()
    assert httpx.post(f"{server.url}/predict", content=good, timeout=60).json()["prediction"] == "7"
    for sock in stalled:
        with sock:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body) == {
            "error": f"the request head did not arrive within {BODY_TIMEOUT_S} s"}, answer
    assert "Traceback" not in server.output()


def test_a_client_leaving_mid_upload_is_one_log_line(server, drawings):
    good = drawings["7"].read_bytes()
    before = server.lines().count("\n")
    raw_request(server, good[:100], len(good)).close()
    deadline = time.monotonic() + 10
    while server.lines().count("\n") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # anything more it would print
    new = server.lines().splitlines()[before:]
    assert len(new) == 1 and "disconnected after sending 100 bytes" in new[0], new


def test_openapi_describes_the_body_and_every_status(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    body = predict["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["required"] == ["file"]
    assert body["application/octet-stream"]["schema"]["format"] == "binary"
    assert set(predict["responses"]) == {"200", "400", "408", "413", "422", "503"}
    assert httpx.get(f"{server.url}/docs").status_code == 404  # off (offline machines): docs say so


def test_schemathesis_finds_nothing(server):
    """Generated requests against the live service, with schemathesis's default checks (schemathesis.toml at the
    root allows POST /predict's documented 422 for schema-valid bytes that are no picture of a digit)."""
    runner = Path(sys.executable).with_name("schemathesis")
    if not runner.exists():
        pytest.skip("schemathesis is not installed (it is in the test extra)")
    result = subprocess.run([str(runner), "--config-file", str(REPO / "schemathesis.toml"), "--no-color", "run",
                             f"{server.url}/openapi.json", "--max-examples", "25", "--seed", "1"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Traceback" not in server.output()


# ---------------------------------------------------------------- many at once

def test_concurrent_requests_get_their_own_answers(server, drawings):
    bodies = [drawings[d].read_bytes() for d in sorted(drawings)] + [b"junk", png(Image.new("L", (64, 64), 255))]
    alone = [httpx.post(f"{server.url}/predict?top_k=3", content=b) for b in bodies]
    expected = [(r.status_code, r.json()) for r in alone]
    assert [code for code, _ in expected] == [200, 200, 200, 422, 422]

    jobs = [i % len(bodies) for i in range(96)]
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: client.post(f"{server.url}/predict?top_k=3", content=bodies[i]), jobs))
    for i, response in zip(jobs, answers):
        code, want = expected[i]
        assert response.status_code == code
        if code == 200:
            same_answer(response.json(), want, "upload")
        else:
            assert response.json() == want
    assert httpx.get(f"{server.url}/health").status_code == 200


# ---------------------------------------------------------------- starting it wrong

def test_a_port_in_use_is_one_line(server):
    result = subprocess.run([sys.executable, "-m", "mnistlab", "serve", "--port", str(server.port)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"mnistlab serve: error: cannot listen on 127.0.0.1:{server.port}: Address already in use\n"


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "a port is 1 to 65535"),
    (["--max-upload-mb", "0"], "must be at least 1"),
    (["--ckpt", "/no/such.pt", "--port", "{free}"], "checkpoint not found: /no/such.pt"),
])
def test_usage_mistakes(cli, args, message):
    code, out, err = cli("serve", *[a.format(free=free_port()) for a in args])
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_a_missing_extra_is_named():
    code = ("import sys; sys.modules['fastapi'] = None\nfrom mnistlab.cli import main\n"
            "sys.exit(main(['serve']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and result.stderr == ("mnistlab serve: error: mnistlab serve needs fastapi, uvicorn "
                                                       "and python-multipart: pip install 'mnistlab[serve]'\n")


# ---------------------------------------------------------------- the page in a real browser

def find_browser() -> str | None:
    given = os.environ.get("MNISTLAB_CHROMIUM")
    if given:
        return given
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright (the Python package) is not installed: pip install playwright")
    executable = find_browser()
    if executable is None:
        pytest.skip(f"no Chromium found ({', '.join(BROWSERS)} on PATH, or $MNISTLAB_CHROMIUM); "
                    f"apt-get install chromium")
    with sync_playwright() as driver:
        try:
            chromium = driver.chromium.launch(executable_path=executable, args=BROWSER_ARGS, timeout=60_000)
        except Error as exc:
            pytest.skip(f"{executable} cannot start: {' '.join(str(exc).split())[:300]}")
        yield chromium
        chromium.close()


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=2)
        page.mouse.up()


def settled(page) -> dict:
    """What the page shows once the last answer is in."""
    page.wait_for_function("document.body.dataset.busy === '0' && document.body.dataset.state !== 'empty'",
                           timeout=30_000)
    return page.evaluate("""() => ({
        digit: document.getElementById('digit').textContent,
        confidence: document.getElementById('confidence').textContent,
        bars: [...document.querySelectorAll('.bar')].map(b => [b.dataset.label, Number(b.dataset.p),
                                                               b.querySelector('.pct').textContent]),
        preview: Array.from(document.getElementById('input').getContext('2d')
                            .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0)),
        canvas: document.getElementById('pad').toDataURL('image/png'),
        shown: Number(document.body.dataset.shown),
    })""")


def test_the_page_in_chromium(server, browser, tmp_path):
    import base64

    page = browser.new_page(viewport={"width": 820, "height": 580})
    problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{server.url}/")
    assert page.inner_text("#digit") == "?" and page.inner_text("#confidence") == "draw a digit"
    assert page.locator("#pad").bounding_box()["width"] == CANVAS

    for digit, strokes in DIGITS.items():
        page.keyboard.press("Escape")
        draw(page, strokes())
        shown = settled(page)
        assert shown["digit"] == digit, shown["digit"]
        # Everything shown is what POST /predict says of the canvas as it stands.
        drawing = base64.b64decode(shown["canvas"].split(",", 1)[1])
        answer = httpx.post(f"{server.url}/predict?top_k=3&input=true", content=drawing).json()
        assert [b[0] for b in shown["bars"]] == [t["label"] for t in answer["top_k"]]
        assert [b[1] for b in shown["bars"]] == pytest.approx([t["probability"] for t in answer["top_k"]], abs=1e-6)
        assert shown["confidence"].endswith(" sure") and shown["bars"][0][2] in shown["confidence"]
        assert shown["preview"] == [v for row in answer["input"] for v in row]

    # Live: answers arrive while the stroke is still being drawn, not only on release.
    page.keyboard.press("Escape")
    before = page.evaluate("Number(document.body.dataset.shown)")
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.52 * CANVAS, box["y"] + 0.18 * CANVAS)
    page.mouse.down()
    for i in range(1, 41):  # 2 s of drawing: answers every 0.1 s, time for them even on a busy machine
        page.mouse.move(box["x"] + 0.52 * CANVAS, box["y"] + (0.18 + 0.64 * i / 40) * CANVAS)
        page.wait_for_timeout(50)
    during = page.evaluate("Number(document.body.dataset.shown)")
    page.mouse.up()
    assert during > before, "no prediction while the stroke was being drawn"
    assert settled(page)["digit"] == "1"

    page.keyboard.press("Escape")  # clears: paper, "?", no bars
    assert page.inner_text("#digit") == "?" and page.locator(".bar.hidden").count() == 3
    white = page.evaluate("document.getElementById('pad').getContext('2d').getImageData(0, 0, 392, 392).data"
                          ".reduce((a, b) => Math.min(a, b), 255)")
    assert white == 255

    draw(page, DIGITS["7"]())
    assert settled(page)["digit"] == "7"
    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:
        assert image.size == (820, 580)
    try:
        shutil.copyfile(shot, SHOT_FOR_HUMANS)
    except OSError:
        pass  # a convenience copy only
    assert problems == []
    page.close()
