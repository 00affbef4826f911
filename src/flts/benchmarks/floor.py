"""The measurement floor of ``flts bench serve``: an ASGI app that does nothing.

It reads each request body and answers ``{}``, served by uvicorn with the same options as
``flts serve`` (:func:`flts.api.app.uvicorn_options`) and driven by the same Locust users and
payloads. What it measures is the harness itself on this machine: HTTP over loopback,
uvicorn's own cost, and Locust sharing the cores. A forecast can be no faster than this, so
the floor is what FLTS's figures are read against (a latency target below the floor cannot
be met by any server measured this way).

Run as ``python -m flts.benchmarks.floor --port N``.
"""

from __future__ import annotations

import argparse
from typing import Any

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with 200 ``{}`` once its body is read."""
    if scope["type"] != "http":
        return  # lifespan: nothing to start or stop
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    import uvicorn

    from flts.api.app import uvicorn_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    options = {**uvicorn_options(5.0), "log_level": "warning", "lifespan": "off"}
    uvicorn.run(app, host="127.0.0.1", port=arguments.port, **options)


if __name__ == "__main__":
    main()
