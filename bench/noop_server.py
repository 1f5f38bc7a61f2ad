"""The load generator's ceiling: a server that answers every request with the same 200.

It reads only what HTTP/1.1 keep-alive needs (the headers, then Content-Length bytes) and does
no other work, so the rate the benchmark's client reaches against it is the client's own limit
on this machine: a side measured near it is capped by the client, not by itself.
"""

from __future__ import annotations

import argparse
import asyncio

BODY = b'{"status":"accepted"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if not line:
            break  # the client closed the connection
        await reader.readexactly(length)
        writer.write(RESPONSE)
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
