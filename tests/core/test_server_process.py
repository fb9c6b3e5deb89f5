"""A real process: ``Server.run`` on uvloop stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blocks.core.rpc import connect_channel

pytestmark = pytest.mark.process

STARTUP_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 20.0

# The child serves a slow method, prints its port once serving, and on stop writes a marker
# file from a component stop hook (the stand-in for flushing storage).
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path

    import grpc
    from blocks.core.server import Server, ServerState

    marker = Path(sys.argv[1])
    server = Server(name="child", token="child-token")
    events = []

    async def slow(request, context):
        print("slow-start", flush=True)
        await asyncio.sleep(0.5)
        events.append("slow-done")
        return b"done"

    server.add_generic_handlers(grpc.method_handlers_generic_handler(
        "blocks.test.Slow", {"Slow": grpc.unary_unary_rpc_method_handler(slow)}))

    async def announce():
        while server.state is not ServerState.SERVING:
            await asyncio.sleep(0.01)
        print(server.port, flush=True)

    tasks = []
    server.add_component(start=lambda: tasks.append(asyncio.ensure_future(announce())),
                         stop=lambda: marker.write_text(",".join(events + ["stopped"])))
    server.run(grace_s=5)
    print("exited", flush=True)
    """
)


def read_line(child: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's next stdout line, or a failure after ``timeout_s`` (never a hang)."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout_s)
    if not ready:
        pytest.fail(f"child printed nothing within {timeout_s} s")
    return child.stdout.readline().strip()


async def slow_call_then_health(port: int) -> tuple[bytes, int]:
    channel = connect_channel(f"127.0.0.1:{port}", token="child-token")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        result = await channel.unary_unary("/blocks.test.Slow/Slow")(b"", timeout=10)
        return result, int(reply.status)
    finally:
        await channel.close()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_process_gracefully(tmp_path: Path, signal_number: int) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "stopped.txt"
    child = subprocess.Popen(
        [sys.executable, str(script), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port_line = read_line(child, STARTUP_TIMEOUT_S)
        assert port_line.isdigit(), port_line
        port = int(port_line)

        async def body() -> tuple[bytes, int]:
            call = asyncio.ensure_future(slow_call_then_health(port))
            # Signal only once Slow is running in the child, so that the drain is exercised.
            assert await asyncio.to_thread(read_line, child, STARTUP_TIMEOUT_S) == "slow-start"
            child.send_signal(signal_number)
            return await asyncio.wait_for(call, 15)

        result, status = uvloop.run(body())
        assert (result, status) == (b"done", health_pb2.HealthCheckResponse.SERVING)
        stdout, stderr = child.communicate(timeout=EXIT_TIMEOUT_S)
        assert child.returncode == 0, stderr
        assert stdout.strip() == "exited", stdout
        assert marker.read_text() == "slow-done,stopped"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=EXIT_TIMEOUT_S)
