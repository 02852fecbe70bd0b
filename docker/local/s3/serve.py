"""moto's S3 server with its objects kept on disk, for refit-local/s3:moto (the stack test only).

moto keeps buckets in memory; MinIO, which this image stands in for, keeps them on its volume,
and the stack test takes the stack down and up again expecting every report to be there. So
this server loads the buckets from ``<data>/moto-s3.pickle`` at start, and writes them back
atomically every ``--every`` seconds when something changed and on SIGTERM (``docker stop``).
moto's own keys are picklable (they write their bytes into the pickle); a state written by
another moto release is refused, named, rather than half-loaded.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

import moto
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer


def backend():
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def fingerprint() -> tuple:
    """Changes whenever a bucket or an object does (names, sizes and etags)."""
    for _ in range(20):  # requests change the dicts while this reads them: read again
        try:
            return tuple(sorted((name, key.name, key.etag, key.size) for name, bucket in list(backend().buckets.items())
                                for key in list(bucket.keys.values()))) + tuple(sorted(backend().buckets))
        except RuntimeError:
            time.sleep(0.05)
    return ()


def load(path: Path) -> None:
    if not path.exists():
        return
    state = pickle.loads(path.read_bytes())
    if state.get("moto") != moto.__version__:
        sys.exit(f"s3-server: {path} was written by moto {state.get('moto')}, this is {moto.__version__}; "
                 "move it away to start empty")
    backend().buckets.update(state["buckets"])
    print(f"s3-server: {len(state['buckets'])} bucket(s) loaded from {path}", flush=True)


def save(path: Path) -> None:
    for _ in range(20):
        try:
            payload = pickle.dumps({"moto": moto.__version__, "buckets": dict(backend().buckets)})
            break
        except RuntimeError:  # changed while pickled: again
            time.sleep(0.05)
    else:
        print("s3-server: state not saved: the buckets kept changing", flush=True)
        return
    partial = path.with_suffix(".partial")
    partial.write_bytes(payload)
    os.replace(partial, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("/data"))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()
    state = args.data / "moto-s3.pickle"
    load(state)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    print(f"s3-server: moto {moto.__version__} S3 on {args.host}:{args.port}, state in {state}", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    saved = fingerprint()
    while not stopping.wait(args.every):
        current = fingerprint()
        if current != saved:
            save(state)
            saved = current
    server.stop()
    save(state)
    print(f"s3-server: state saved to {state}", flush=True)


if __name__ == "__main__":
    main()
