"""The aiohttp transport: failures mapped with whether the request may have been sent."""

from __future__ import annotations

import aiohttp
import pytest

from kling_async import (
    AiohttpTransport,
    DownloadStream,
    KlingError,
    NetworkError,
    RequestTimeoutError,
    SessionClosedError,
    Transport,
    TransportError,
)
from kling_async._transport import map_exception


def test_aiohttp_failures_are_mapped():
    """Connection failures, timeouts and local refusals become transport errors that say
    whether the request may have left."""
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        OSError(111, "refused"),
    )
    mapped = map_exception(refused, "http://h:1/v1/tasks/t")
    assert isinstance(mapped, NetworkError) and mapped.sent is False
    assert "http://h:1/v1/tasks/t" in str(mapped)
    lost = map_exception(aiohttp.ServerDisconnectedError())
    assert isinstance(lost, NetworkError) and lost.sent
    assert isinstance(map_exception(TimeoutError()), RequestTimeoutError)
    local = map_exception(ValueError("Newline or carriage return character detected"))
    assert type(local) is TransportError and local.sent is False
    assert isinstance(map_exception(RuntimeError("?")), KlingError)


def test_the_aiohttp_transport_is_a_transport():
    """The default transport satisfies the public Transport protocol."""
    assert isinstance(AiohttpTransport(), Transport)
    assert DownloadStream is not None


async def test_a_closed_transport_refuses_new_requests():
    """After close(), nothing is sent and nothing re-opens a connection pool."""
    transport = AiohttpTransport()
    await transport.close()
    with pytest.raises(SessionClosedError):
        await transport.send(
            "GET", "http://127.0.0.1:9/", headers={}, body=None, timeout=1.0, max_bytes=10
        )
