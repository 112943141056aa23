"""A loopback Hugging Face Hub stand-in serving a saved pipeline folder under a real repo id.

It answers what huggingface_hub and diffusers ask for a download: `model_info`
(`/api/models/<repo>[/revision/<rev>]`), the tree listing (`/api/models/<repo>/tree/<rev>`)
and `HEAD`/`GET` on `/<repo>/resolve/<rev>/<file>` with ETag, X-Repo-Commit and `Range`.
Options make it behave like a slow or broken network:

- `bytes_per_second`: throttle every file body (per connection);
- `drop_after`: close the connection once, after that many bytes of each file's first GET
  (huggingface_hub then resumes with `Range` in the same process);
- `stall`: bodies stop after the first chunk until `release()` (a download to kill); a file
  that fits in one chunk is answered whole, so its connection is free for the next request.
- `gated`: files are refused as the Hub refuses a gated repo's files to a visitor who has
  not accepted its terms (403, `X-Error-Code: GatedRepo`).

Another repo id is answered as the Hub answers a repo it lacks (`X-Error-Code:
RepoNotFound`); a file the repo lacks with `EntryNotFound`.

`requests` records (method, path, range) of everything that arrived.
Run `python -m testkit.hub_standin FOLDER [bytes_per_second]` to serve a folder; it prints its URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from testkit.loopback_server import LoopbackHTTPServer

log = logging.getLogger(__name__)

REPO_ID = "stabilityai/stable-diffusion-3.5-medium"
COMMIT = "a" * 40
CHUNK = 64 * 1024


class HubStandIn(LoopbackHTTPServer):
    """Serve `folder` as `repo_id` on 127.0.0.1 at a free port."""

    def __init__(
        self,
        folder: Path,
        *,
        repo_id: str = REPO_ID,
        bytes_per_second: float | None = None,
        drop_after: int | None = None,
        stall: bool = False,
        gated: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.gated = gated
        self.repo_id = repo_id
        self.bytes_per_second = bytes_per_second
        self.drop_after = drop_after
        self.requests: list[tuple[str, str, str]] = []
        self.body_bytes = 0  # file body bytes sent, all files together
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        self._released = threading.Event()
        if not stall:
            self._released.set()
        self.files = {
            p.relative_to(self.folder).as_posix(): p
            for p in sorted(self.folder.rglob("*"))
            if p.is_file()
        }
        self._etags = {
            name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in self.files.items()
        }
        super().__init__()

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self._closing.set()
        self._released.set()  # a held file body lets go, so shutdown does not wait on it
        super().stop()

    def paths_requested(self, method: str = "GET") -> list[str]:
        return [path for m, path, _ in self.requests if m == method]

    def file_gets(self) -> list[str]:
        """Repo files whose body was asked for (GET on /resolve/)."""
        marker = f"/{self.repo_id}/resolve/"
        out = []
        for path in self.paths_requested("GET"):
            if marker in path:
                out.append(path.split(marker, 1)[1].split("/", 1)[1])
        return out

    # --- answers -------------------------------------------------------------------------
    def model_info(self) -> dict[str, Any]:
        return {
            "id": self.repo_id,
            "modelId": self.repo_id,
            "sha": COMMIT,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": ["diffusers"],
            "siblings": [
                {"rfilename": name, "size": p.stat().st_size, "blobId": self._etags[name][:40]}
                for name, p in self.files.items()
            ],
        }

    def tree(self) -> list[dict[str, Any]]:
        return [
            {"type": "file", "path": name, "size": p.stat().st_size, "oid": self._etags[name][:40]}
            for name, p in self.files.items()
        ]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                log.debug(format, *args)

            def _json(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _not_found(self, code: str = "EntryNotFound", status: int = 404) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", f"stand-in: {code}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _route(self) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub._lock:
                    hub.requests.append((self.command, path, self.headers.get("Range", "")))
                api = f"/api/models/{hub.repo_id}"
                if path == api or path.startswith(api + "/revision/"):
                    self._json(hub.model_info())
                    return
                if path.startswith(api + "/tree/"):
                    self._json(hub.tree())
                    return
                marker = f"/{hub.repo_id}/resolve/"
                if path.startswith(marker):
                    _rev, _, name = path[len(marker) :].partition("/")
                    if hub.gated:
                        self._not_found("GatedRepo", 403)
                        return
                    if name in hub.files:
                        self._file(name)
                        return
                elif "/resolve/" in path or path.startswith("/api/models/"):
                    self._not_found("RepoNotFound")
                    return
                self._not_found()

            def _file(self, name: str) -> None:
                data_path = hub.files[name]
                size = data_path.stat().st_size
                start, status = 0, 200
                wanted = self.headers.get("Range", "")
                if wanted.startswith("bytes=") and self.command == "GET":
                    first = wanted[len("bytes=") :].split("-", 1)[0]
                    start, status = int(first or 0), 206
                self.send_response(status)
                self.send_header("ETag", f'"{hub._etags[name]}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                with hub._lock:
                    drop = hub.drop_after is not None and name not in hub._dropped
                    if drop:
                        hub._dropped.add(name)
                self._body(data_path, start, size, drop)

            def _body(self, data_path: Path, start: int, size: int, drop: bool) -> None:
                sent = 0
                began = time.monotonic()
                with open(data_path, "rb") as handle:
                    handle.seek(start)
                    while chunk := handle.read(CHUNK):
                        if drop and sent + len(chunk) > hub.drop_after:
                            chunk = chunk[: max(hub.drop_after - sent, 0)]
                        try:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                        except (BrokenPipeError, ConnectionResetError):
                            return  # the client went away (cancel, kill)
                        sent += len(chunk)
                        with hub._lock:
                            hub.body_bytes += len(chunk)
                        if drop and sent >= hub.drop_after:
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        if start + sent < size and not hub._released.is_set():
                            while not hub._released.wait(0.1):
                                if hub._closing.is_set():
                                    return
                        if hub.bytes_per_second:
                            ahead = sent / hub.bytes_per_second - (time.monotonic() - began)
                            if ahead > 0 and hub._closing.wait(ahead):
                                return

            do_GET = do_HEAD = _route  # noqa: N815 - http.server dispatches on these names

        return Handler


def main() -> None:
    """Serve a folder until killed; print the URL first (for scripts and benchmarks)."""
    folder = Path(sys.argv[1])
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else None
    server = HubStandIn(folder, bytes_per_second=rate).start()
    server.serve_until_killed()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    main()
