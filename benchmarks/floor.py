"""The floor of the serving benchmark: a bare ASGI app that does the least a forecast server
must do.

It reads each request body, parses it with orjson and answers ``{}``, served by
uvicorn with the options of ``flts serve`` (:func:`flts.api.app.uvicorn_options`: uvloop,
httptools, no access log; one worker) and driven by the same wrk load and bodies. What it
measures is HTTP over loopback, uvicorn's own cost and a JSON parse on this machine: no
forecast server run this way can be faster, so FLTS's figures are read as a fraction of it.

Run as ``python -m benchmarks.floor --port N``.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with 200 ``{}`` once its whole body is read and parsed."""
    if scope["type"] != "http":
        return  # lifespan: nothing to start or stop
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if body := b"".join(chunks):
        orjson.loads(body)  # the parse every JSON API pays; its result is not needed
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    import uvicorn

    from flts.api.app import uvicorn_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    options = {**uvicorn_options(5.0), "log_level": "warning", "lifespan": "off"}
    uvicorn.run(app, host="127.0.0.1", port=arguments.port, workers=1, **options)


if __name__ == "__main__":
    main()
