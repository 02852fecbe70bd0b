"""moto's S3 server with a traffic meter: how many bytes it sent, in how many requests.

The server is moto's own WSGI application (what ``moto_server`` runs), wrapped by a middleware
that counts every response body it sends and every request by method (a GET with a ``Range``
header counts as ``GET range``). ``GET /_refit/traffic`` answers the counts so far as JSON, so a
test or a benchmark in another process takes a reading before and after a read and subtracts.
The bytes are counted on the server side, whatever client library made the requests, so the
old and the new store code are measured alike.

Run it as its own process (``python -m tests.io.s3_counting --port 0``: it prints
``listening http://127.0.0.1:<port>`` once it accepts connections), or use
:func:`counting_s3_server`, which does that and stops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TRAFFIC_PATH = "/_refit/traffic"
#: moto accepts any credentials; the S3 clients only need some to sign their requests.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "refit-test", "AWS_SECRET_ACCESS_KEY": "refit-test-secret",
                    "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Traffic:
    """What the server sent: response body bytes and requests by method."""

    bytes_sent: int
    requests: dict[str, int]

    def __sub__(self, earlier: Traffic) -> Traffic:
        counts = {m: n - earlier.requests.get(m, 0) for m, n in sorted(self.requests.items())}
        return Traffic(self.bytes_sent - earlier.bytes_sent, {m: n for m, n in counts.items() if n})


class TrafficMeter:
    """WSGI middleware counting the response bytes and requests of the application it wraps."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._bytes = 0
        self._requests: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == TRAFFIC_PATH:
            with self._lock:
                body = json.dumps({"bytes_sent": self._bytes, "requests": dict(self._requests)}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        method = environ["REQUEST_METHOD"] + (" range" if environ.get("HTTP_RANGE") else "")
        return self._counted(method, self.app(environ, start_response))

    def _counted(self, method: str, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                with self._lock:
                    self._bytes += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            with self._lock:
                self._requests[method] += 1


def read_traffic(endpoint: str) -> Traffic:
    """The counts so far of the metered server at ``endpoint``."""
    with urllib.request.urlopen(endpoint + TRAFFIC_PATH, timeout=30) as response:
        payload = json.load(response)
    return Traffic(payload["bytes_sent"], payload["requests"])


@dataclass(frozen=True)
class MeteredServer:
    """The metered moto server running in ``process`` at ``endpoint``."""

    endpoint: str
    process: subprocess.Popen[str]

    def traffic(self) -> Traffic:
        return read_traffic(self.endpoint)


@contextmanager
def counting_s3_server(env: dict[str, str] | None = None) -> Iterator[MeteredServer]:
    """Start the metered moto server in its own process on a free port; stop it afterwards."""
    process = subprocess.Popen([sys.executable, "-m", "tests.io.s3_counting", "--port", "0"], cwd=REPO,
                               env={**os.environ, **TEST_CREDENTIALS, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"the metered moto server did not start (exit code {process.poll()}): {line!r}")
        yield MeteredServer(line.removeprefix("listening "), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(host: str, port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    server = make_server(host, port, TrafficMeter(DomainDispatcherApplication(create_backend_app)), threaded=True,
                         request_handler=MotoRequestHandler)
    print(f"listening http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    serve(options.host, options.port)
