"""A minimal OpenAI-compatible SSE server on raw asyncio, for tests and overhead.

It streams `max_tokens` token chunks ("tok ") after `ttft_ms`, `itl_ms` apart
(a request may override both with body fields fake_ttft_ms / fake_itl_ms),
then a usage chunk and `data: [DONE]`, exactly in vLLM's shape (chat streams
start with a role-only chunk). Optional: count prompt tokens with a real
tokenizer and simulate a block prefix cache (cached_tokens), fail every n-th
request, expose vLLM-named Prometheus gauges at /metrics, and log what it
received at /debug/requests. No framework: with zero delays its own cost per
chunk is one socket write, so measured latencies are the client's.

    python -m llmd_ray.bench.fake_server --port 8199 [--ttft-ms 0 --itl-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from dataclasses import dataclass


@dataclass
class FakeOptions:
    model: str = "tiny-llama"
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens_per_chunk: int = 1
    fail_every: int = 0          # every n-th completion request answers HTTP 500
    tokenizer: str | None = None  # count prompt tokens with this tokenizer dir
    block_size: int = 16          # prefix-cache simulation granularity (needs tokenizer)


class FakeServer:
    def __init__(self, opts: FakeOptions | None = None, host: str = "127.0.0.1", port: int = 0):
        self.o, self.host, self.port = opts or FakeOptions(), host, port
        self.log: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.n_requests = 0
        self.cached_blocks: set[bytes] = set()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tok = None
        if self.o.tokenizer:
            from transformers import AutoTokenizer  # noqa: PLC0415
            self._tok = AutoTokenizer.from_pretrained(self.o.tokenizer, local_files_only=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeServer:
        self._server = await asyncio.start_server(self._conn, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            await asyncio.sleep(0)

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    # -- HTTP ---------------------------------------------------------------
    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                await self._route(method, path, headers, body, writer)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _reply(writer, status: int, body: bytes, ctype: str = "application/json") -> None:
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body)

    async def _route(self, method, path, headers, body, writer) -> None:
        if method == "GET" and path == "/v1/models":
            self._reply(writer, 200, json.dumps({"object": "list", "data": [{"id": self.o.model, "object": "model"}]}).encode())
        elif method == "GET" and path == "/health":
            self._reply(writer, 200, b"")
        elif method == "GET" and path == "/metrics":
            self._reply(writer, 200, self._metrics().encode(), "text/plain; version=0.0.4")
        elif method == "GET" and path == "/debug/requests":
            self._reply(writer, 200, json.dumps(self.log).encode())
        elif method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            await self._generate(path.endswith("chat/completions"), headers, json.loads(body), writer)
        else:
            self._reply(writer, 404, b'{"error": "not found"}')
        await writer.drain()

    def _metrics(self) -> str:
        lines = []
        for name, value in (("num_requests_running", self.in_flight), ("num_requests_waiting", 0),
                            ("kv_cache_usage_perc", min(1.0, self.in_flight / 64))):
            lines += [f"# TYPE vllm:{name} gauge", f'vllm:{name}{{engine="0",model_name="{self.o.model}"}} {float(value)}']
        return "\n".join(lines) + "\n"

    # -- generation ---------------------------------------------------------
    def _prompt_ids(self, chat: bool, req: dict) -> list:
        if self._tok is None:
            text = " ".join(m["content"] for m in req["messages"]) if chat else req["prompt"]
            return text.split()
        if chat:
            out = self._tok.apply_chat_template(req["messages"], add_generation_prompt=True, tokenize=True)
            return list(out["input_ids"] if hasattr(out, "keys") else out)
        return self._tok.encode(req["prompt"])

    def _cache(self, ids: list) -> int:
        if self._tok is None:
            return 0
        bs, h, hit, full = self.o.block_size, hashlib.sha1(), 0, True
        for i in range(0, len(ids) - bs + 1, bs):
            h.update(repr(ids[i:i + bs]).encode())
            key = h.digest()
            if full and key in self.cached_blocks:
                hit += bs
            else:
                full = False
                self.cached_blocks.add(key)
        return hit

    async def _generate(self, chat: bool, headers: dict, req: dict, writer) -> None:
        self.n_requests += 1
        ids = self._prompt_ids(chat, req)
        self.log.append({"t": time.time(), "chat": chat, "session": headers.get("x-session-id"),
                         "n_messages": len(req.get("messages", [])), "prompt_tokens": len(ids),
                         "max_tokens": req.get("max_tokens"), "ignore_eos": req.get("ignore_eos")})
        if self.o.fail_every and self.n_requests % self.o.fail_every == 0:
            self._reply(writer, 500, b'{"error": {"message": "injected failure"}}')
            return
        cached, n = self._cache(ids), int(req.get("max_tokens") or 16)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            def send(obj) -> None:
                data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))

            ttft_ms, itl_ms = req.get("fake_ttft_ms", self.o.ttft_ms), req.get("fake_itl_ms", self.o.itl_ms)
            if ttft_ms:
                await asyncio.sleep(ttft_ms / 1e3)
            base = {"id": f"cmpl-{self.n_requests}", "model": self.o.model}
            if chat:
                send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            sent, k = 0, max(1, self.o.tokens_per_chunk)
            while sent < n:
                m = min(k, n - sent)
                sent += m
                fin = "length" if sent == n else None
                choice = {"index": 0, "delta": {"content": "tok " * m}} if chat else {"index": 0, "text": "tok " * m}
                send({**base, "choices": [{**choice, "finish_reason": fin}]})
                await writer.drain()
                if itl_ms and sent < n:
                    await asyncio.sleep(itl_ms / 1e3)
            send({**base, "choices": [], "usage": {"prompt_tokens": len(ids), "completion_tokens": n,
                  "total_tokens": len(ids) + n, "prompt_tokens_details": {"cached_tokens": cached}}})
            send(b"[DONE]")
            writer.write(b"0\r\n\r\n")
        finally:
            self.in_flight -= 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8199)
    for f in ("ttft_ms", "itl_ms"):
        p.add_argument("--" + f.replace("_", "-"), type=float, default=0.0)
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--model", default="tiny-llama")
    a = p.parse_args(argv)
    opts = FakeOptions(model=a.model, ttft_ms=a.ttft_ms, itl_ms=a.itl_ms, tokens_per_chunk=a.tokens_per_chunk,
                       fail_every=a.fail_every, tokenizer=a.tokenizer)

    async def serve() -> None:
        srv = await FakeServer(opts, a.host, a.port).start()
        print(f"fake SSE server on {srv.url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
