"""A loopback server speaking the text-to-image and image-to-image task protocols, with a
real model behind it.

`POST {"inputs": prompt, "parameters": {...}}` → PNG bytes made by the tiny SD3 pipeline
with the request's seed, as a dedicated Inference Endpoint would answer. Image to image is
what `InferenceClient.image_to_image` sends to an endpoint URL: `{"inputs": <the source
image, base64>, "parameters": {"prompt": …, "strength": …, "seed": …, …}}` → the tiny
pipeline's image-to-image of it (`core.image_modes`). Query parameters on the URL make it
misbehave on purpose, so tests can meet every failure for real:

- `?text_only=1`: refuse image-to-image with 422, as an endpoint that makes images from
  text only would (a real one may as well answer nonsense: the app asks SD_REMOTE_IMAGE_TO_IMAGE).

- `?status=401` (any code): answer that status; `&retry_after=N` adds a Retry-After header.
- `?fail=N&status=503&key=K`: the first N requests with key K get `status`, then success.
- `?delay=S`: wait S seconds before answering (for timeouts and Stop).
- `?body=html`: answer 200 with a web page instead of an image.

Run `python -m testkit.loopback_server` to serve the demo pipeline; it prints its URL.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)


class LoopbackHTTPServer:
    """A threaded HTTP server on 127.0.0.1 at a free port, started and stopped by the test.

    Subclasses give `_handler_class()`; `_closing` is set on `stop()`, so handlers that
    wait can give up.
    """

    def __init__(self) -> None:
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def serve_until_killed(self) -> None:
        """Print the URL first (for scripts and benchmarks), then serve until interrupted."""
        print(self.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


class TextToImageServer(LoopbackHTTPServer):
    """Serve `pipe` on 127.0.0.1 at a free port; `requests` records what arrived."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.requests: list[dict[str, Any]] = []
        self.answered: list[str] = []  # paths of generations answered, late ones included
        self._pipe_lock = threading.Lock()  # one pipeline call at a time (it is not re-entrant)
        self._hits: Counter[str] = Counter()
        self._hits_lock = threading.Lock()
        super().__init__()

    def hit(self, key: str) -> int:
        """Count a request for `key`; return how many came before it."""
        with self._hits_lock:
            self._hits[key] += 1
            return self._hits[key] - 1

    def make_png(self, body: dict[str, Any]) -> bytes:
        from core.generation import GenerationRequest
        from core.local import run_pipeline

        params = body.get("parameters") or {}
        request = GenerationRequest(
            prompt=body["inputs"],
            negative_prompt=params.get("negative_prompt", ""),
            seed=int(params["seed"]),
            width=int(params.get("width", 512)),
            height=int(params.get("height", 512)),
            guidance_scale=float(params.get("guidance_scale", 4.5)),
            num_inference_steps=int(params.get("num_inference_steps", 2)),
        )
        with self._pipe_lock:
            images, _ = run_pipeline(self.pipe, request)
        buffer = io.BytesIO()
        images[0].save(buffer, format="PNG")
        return buffer.getvalue()

    def make_variation(self, body: dict[str, Any]) -> bytes:
        """Image to image of the base64 source in `inputs` (the strength's steps run)."""
        import base64

        from core.image_modes import prompt_embeddings, run_image_mode
        from core.sources import decode

        params = body.get("parameters") or {}
        source = decode(base64.b64decode(body["inputs"]), mode="RGB")
        guidance = float(params.get("guidance_scale", 4.5))
        with self._pipe_lock:
            embeds = prompt_embeddings(
                self.pipe,
                prompt=params["prompt"],
                negative_prompt=params.get("negative_prompt", ""),
                guidance_scale=guidance,
            )
            made = run_image_mode(
                self.pipe,
                mode="img2img",
                embeds=embeds,
                image=source,
                seed=int(params["seed"]),
                steps=int(params.get("num_inference_steps", 2)),
                guidance_scale=guidance,
                strength=float(params.get("strength", 0.6)),
            )
        buffer = io.BytesIO()
        made.image.save(buffer, format="PNG")
        return buffer.getvalue()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                log.debug(format, *args)

            def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in headers.items():
                        self.send_header(name.replace("_", "-"), value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout or Stop): nobody to answer

            def _error(self, status: int, message: str, **headers: str) -> None:
                body = json.dumps({"error": message}).encode()
                self._send(status, body, "application/json", **headers)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._error(400, "body is not JSON")
                    return
                server.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if "delay" in query and server._closing.wait(float(query["delay"])):
                    return
                status = int(query.get("status", 200))
                if "fail" in query:
                    earlier = server.hit(query.get("key", parts.path))
                    status = status if earlier < int(query["fail"]) else 200
                if status != 200:
                    extra = {}
                    if "retry_after" in query:
                        extra["Retry_After"] = query["retry_after"]
                    self._error(status, f"answered {status} on purpose", **extra)
                    return
                if query.get("body") == "html":
                    self._send(200, b"<html><body>Sign in</body></html>", "text/html")
                    return
                if "bomb" in query:  # bomb=side<N>: an N×N PNG of a few hundred kB
                    from testkit.hostile import bomb_png

                    side = int(query["bomb"].removeprefix("side"))
                    self._send(200, bomb_png(side, text=None), "image/png")
                    return
                if not isinstance(body, dict) or "seed" not in (body.get("parameters") or {}):
                    self._error(422, "inputs and parameters.seed are required")
                    return
                variation = "prompt" in body["parameters"]  # image to image: inputs is the image
                if variation and "text_only" in query:
                    self._error(422, "this endpoint runs text-to-image only")
                    return
                png = server.make_variation(body) if variation else server.make_png(body)
                server.answered.append(self.path)
                self._send(200, png, "image/png")

        return Handler


def main() -> None:
    """Serve the demo pipeline until killed; print the URL first (for scripts)."""
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    server = TextToImageServer(pipe).start()
    server.serve_until_killed()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    main()
