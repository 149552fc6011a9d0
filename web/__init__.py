"""chat-web: the chat page in the browser (issue 11).

A small web server that serves one page (web/static: plain HTML, one JS file, CSS; no build step, no
CDN) and one WebSocket (`/ws`). Each browser session is one ordinary client of the broker, driven by
the project's own client: `zmq_chat.client.connection.Connection` over `ClientCore` (web.ackcore:
acks a private message only once the browser has it), CURVE with the broker key pinned at start
(zmq_chat.client.trust). No second implementation of the protocol lives here.

Modules: `ackcore` (the core that acks after the browser), `items` (protocol values -> JSON for the
page, pure), `session` (one browser session: its Connection, its transcript for resuming, its
commands), `server` (aiohttp application: page, WebSocket, security headers), `cli` (`chat-web`).

Why aiohttp rather than Starlette: one well-kept dependency gives the HTTP server, the WebSocket
server, TLS and a test client (aiohttp.test_utils), all on the asyncio loop that zmq.asyncio and the
client's Connection already use. Starlette would need an ASGI server (uvicorn), a WebSocket library
and httpx for its test client: three more dependencies for the same page.
"""
