"""Run a platform sandbox in the foreground: `python -m sandboxes linkedin --port 8701`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from importlib import import_module

import tornado.web

from dispatcher.settings import PLATFORMS
from sandboxes.base import serve


def app_factory(platform: str) -> Callable[[], tornado.web.Application]:
    """`sandboxes.<platform>.make_app`, found by convention."""
    factory: Callable[[], tornado.web.Application] = import_module(f"sandboxes.{platform}").make_app
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one sandbox until interrupted; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m sandboxes",
        description="Serve a local imitation of an ad platform; control API under /_sandbox/.",
    )
    parser.add_argument("platform", choices=sorted(PLATFORMS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8701, help="0 picks a free port")
    parser.add_argument(
        "--no-record-bodies",
        action="store_true",
        help="keep only event counts and ids (for benchmarks)",
    )
    parser.add_argument(
        "--rate-limit", type=int, default=None, help="calls per token per window (default: ours)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = serve(app_factory(args.platform), args.host, args.port)
    if args.rate_limit is not None:
        server.sandbox.configure({"rate_limit": args.rate_limit}, as_default=True)
    if args.no_record_bodies:
        server.sandbox.configure({"record_bodies": False}, as_default=True)
    print(f"{args.platform} sandbox on {server.url} (control API: {server.url}/_sandbox/)")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
