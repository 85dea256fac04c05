"""A small OpenAI-compatible server on 127.0.0.1 for the backend tests and benchmark.

Answers are deterministic in (prompt, seed). The served model name picks a behaviour:
    "echo"    answers at once
    "slow"    sleeps `slow_s` before answering (timeouts)
    "trickle" sends one space every 0.1 s for `slow_s`, then the answer (a whole-request timeout)
    "huge"    sends 40 MiB of spaces, then the answer (the client's body limit)
    "flaky"   answers 503 to the first request of every (prompt, seed), then normally
    "broken"  answers 500 to every prompt containing BAD, 400 to prompts containing INVALID
    "latency" sleeps `latency_s` per request (throughput benchmark: I/O-bound like a real server)
    "leaky"   answers a prompt "LEAK n" with a 401 whose plain-text body (LEAKY_BODY characters)
             holds the client's API key at character n, as a careless server echoing headers does
    ODD_BODIES names  answer 200 with that JSON body (a list, choices that are not objects...)
    a path   answers 400 "model '…' not found", as `transformers serve` does when given a cache path
             instead of the name it serves
The server counts requests and the most requests it ever had in flight at once.
"""

import asyncio
import hashlib
import json
import socket
import threading
import time
from typing import Any

LEAKY_BODY = 400
# served names whose every answer is a 200 with a body no OpenAI server sends
ODD_BODIES: dict[str, Any] = {
    "list-body": ["not", "an", "object"],
    "string-choice": {"choices": ["oops"]},
    "string-message": {"choices": [{"message": "oops"}]},
    "number-content": {"choices": [{"message": {"content": 42}}]},
}


def leaky_body(key: str, offset: int) -> str:
    return ("." * offset + key + "." * LEAKY_BODY)[:LEAKY_BODY]


def _text(prompt: str, seed: Any) -> str:
    return f"re[{prompt[-40:]}] seed={seed} h={hashlib.sha256(f'{prompt}|{seed}'.encode()).hexdigest()[:6]}"


class FakeOpenAIServer:
    def __init__(self, slow_s: float = 1.0, latency_s: float = 0.02, api_key: str | None = None):
        self.slow_s, self.latency_s, self.api_key = slow_s, latency_s, api_key
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: set[str] = set()
        self.auth_headers: list[str | None] = []
        self._server = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def reset(self) -> None:
        self.requests.clear()
        self.seen.clear()
        self.auth_headers.clear()
        self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _spaces_then_answer(self, model: str, prompt: str):
        """Leading whitespace is valid JSON: "trickle" sends a space every 0.1 s for `slow_s`,
        "huge" 40 MiB of them at once, then a normal answer."""
        if model == "trickle":
            for _ in range(int(self.slow_s / 0.1)):
                yield b" "
                await asyncio.sleep(0.1)
        else:
            for _ in range(40):
                yield b" " * (1 << 20)
        choice = {"index": 0, "message": {"role": "assistant", "content": _text(prompt, 0)}, "finish_reason": "stop"}
        yield json.dumps({"choices": [choice]}).encode()

    def app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

        app = FastAPI()

        async def handle(request: Request, chat: bool):
            body = await request.json()
            self.requests.append(body)
            self.auth_headers.append(request.headers.get("authorization"))
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                # a careless server that echoes what it got: the client must scrub it
                return JSONResponse({"error": f"bad key {request.headers.get('authorization')}"}, status_code=401)
            prompt = body["messages"][-1]["content"] if chat else body["prompt"]
            model = body.get("model")
            if model == "leaky" and prompt.startswith("LEAK "):
                key = (request.headers.get("authorization") or "").removeprefix("Bearer ")
                return PlainTextResponse(leaky_body(key, int(prompt.split()[1])), status_code=401)
            if str(model).startswith("/"):
                return JSONResponse({"error": f"model '{model}' not found"}, status_code=400)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if model == "slow":
                    await asyncio.sleep(self.slow_s)
                elif model == "latency":
                    await asyncio.sleep(self.latency_s)
                else:
                    await asyncio.sleep(0.01)  # long enough for concurrent requests to overlap
                if model == "flaky":
                    key = f"{prompt}|{body.get('seed')}"
                    if key not in self.seen:
                        self.seen.add(key)
                        return JSONResponse({"error": "try again"}, status_code=503)
                if model == "broken" and "BAD" in prompt:
                    return JSONResponse({"error": "internal"}, status_code=500)
                if model == "broken" and "INVALID" in prompt:
                    return JSONResponse({"error": "invalid request"}, status_code=400)
            finally:
                self.in_flight -= 1
            if model in ODD_BODIES:
                return JSONResponse(ODD_BODIES[model])
            if model in ("trickle", "huge"):
                return StreamingResponse(self._spaces_then_answer(model, prompt), media_type="application/json")
            text = _text(prompt, body.get("seed"))
            max_tokens = body.get("max_tokens", 16)
            finish = "length" if max_tokens < 3 else "stop"
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": "x", "logprob": -0.5}, {"token": "y", "logprob": -1.5}]}
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish}
                if body.get("logprobs"):
                    choice["logprobs"] = {"token_logprobs": [-0.25, -0.75]}
            return {"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
                    "model": model, "choices": [choice]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await handle(request, True)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await handle(request, False)

        return app

    def __enter__(self) -> "FakeOpenAIServer":
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="error",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 20
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
