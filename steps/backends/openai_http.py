"""The OpenAI-compatible HTTP backend (vLLM serve, SGLang, llama.cpp, TGI, OpenAI itself).

Chat message prompts go to `{base_url}/chat/completions`, plain-text prompts (Magpie's
pre-query templates) to `{base_url}/completions`. Each of the `n` samples of a prompt is its
own request with its own seed (`sampling.seed + k`), so they are independent draws on any
server, including those that ignore `n` — never n copies of one answer.

At most `config.concurrency` requests are in flight. `config.timeout_s` bounds each whole
request and a body is read up to 32 MiB. A timeout, a connection error, a 429 or a 5xx is
retried up to `config.retries` times with exponential backoff; other 4xx answers are not (the
request itself is wrong). A request that still fails comes back as a Completion with
`finish_reason="error"` and the reason, for `rows.py` to count and set aside.

The API key is read from the environment variable (or keys file entry) named by
`config.api_key_env` and sent only as a header; it is scrubbed from every error text.
"""
from __future__ import annotations

import asyncio
import json
import random
import threading
from typing import Any

from engine.cache.secrets import read_secret, scrub

from .base import Backend, BackendConfig, Completion, Prompt, Sampling

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _BodyTooLarge(Exception):
    """A response body past OpenAIBackend.max_body_bytes: the server is misbehaving."""


class OpenAIBackend(Backend):
    def __init__(self, config: BackendConfig, model: str, *, backoff_s: float = 0.5, max_backoff_s: float = 8.0):
        self.config = config
        self.model = str(model)
        self.base_url = config.base_url.rstrip("/")
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._api_key = read_secret(config.api_key_env) if config.api_key_env else None
        self.max_body_bytes = 32 << 20  # far above any answer max_tokens allows, logprobs included
        self.requests_sent = 0  # every HTTP attempt, retries included (for logs and tests)

    # ------------------------------------------------------------------ requests
    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    def _scrub(self, text: str) -> str:
        """Known secrets and token-shaped strings out of a server's text, whole: cut it after."""
        return scrub(text.replace(self._api_key, "***") if self._api_key else text)

    def request_for(self, prompt: Prompt, sampling: Sampling, sample: int) -> tuple[str, dict[str, Any]]:
        """The endpoint path and JSON body for sample number `sample` of `prompt`."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "n": 1,
            "seed": sampling.seed + sample,
        }
        if sampling.temperature > 0:
            body["top_p"] = sampling.top_p
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if isinstance(prompt, str):
            body["prompt"] = prompt
            if sampling.logprobs:
                body["logprobs"] = 1
            return "/completions", body
        body["messages"] = list(prompt)
        if sampling.logprobs:
            body["logprobs"] = True
        return "/chat/completions", body

    @staticmethod
    def parse_choice(path: str, data: Any) -> Completion:
        """One Completion from an OpenAI-style response body; any other shape is an error Completion."""
        def bad(why: str) -> Completion:
            return Completion(text="", finish_reason="error", error=why)

        if not isinstance(data, dict):
            return bad(f"response is a JSON {type(data).__name__}, not an object")
        choices = data.get("choices") or []
        if not choices:
            return bad("response has no choices")
        ch = choices[0] if isinstance(choices, list) else None
        if not isinstance(ch, dict):
            return bad("response choice is not an object")
        message = ch.get("message") if path == "/chat/completions" else ch
        if not isinstance(message, dict):
            return bad("response choice has no message object")
        text = message.get("content") if path == "/chat/completions" else message.get("text")
        if text is None:
            return bad("response choice has no text")
        if not isinstance(text, str):
            return bad(f"response text is not a string ({type(text).__name__})")
        lp = ch.get("logprobs") if isinstance(ch.get("logprobs"), dict) else {}
        if path == "/chat/completions":
            token_lp = [t.get("logprob") for t in (lp.get("content") or []) if isinstance(t, dict)] or None
        else:
            token_lp = lp.get("token_logprobs") or None
        reason = "length" if ch.get("finish_reason") == "length" else "stop"
        return Completion(text=text, finish_reason=reason, token_logprobs=token_lp)

    async def _post(self, client, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """Status and body of one request, read in chunks so a runaway body stops at MAX_BODY_BYTES."""
        async with client.stream("POST", self.base_url + path, json=body, headers=self._headers()) as r:
            raw = bytearray()
            async for chunk in r.aiter_bytes():
                raw += chunk
                if len(raw) > self.max_body_bytes:
                    raise _BodyTooLarge
            return r.status_code, bytes(raw)

    async def _one(self, client, sem: asyncio.Semaphore, path: str, body: dict[str, Any],
                   rng: random.Random) -> Completion:
        import httpx

        last = "no attempt made"
        for attempt in range(self.config.retries + 1):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + rng.random() / 2))  # jitter spreads a thundering herd
            async with sem:
                self.requests_sent += 1
                try:  # httpx's timeout is per read: a server trickling bytes would never hit it
                    status, raw = await asyncio.wait_for(self._post(client, path, body), self.config.timeout_s)
                except (httpx.TimeoutException, asyncio.TimeoutError):
                    last = f"timeout after {self.config.timeout_s:g}s"
                    continue
                except httpx.TransportError as e:
                    last = f"connection failed ({type(e).__name__})"
                    continue
                except _BodyTooLarge:
                    last = f"server sent more than {self.max_body_bytes >> 20} MiB"
                    break
            if status == 200:
                try:
                    return self.parse_choice(path, json.loads(raw))
                except ValueError:
                    last = "server sent a body that is not JSON"
                    continue
            last = f"server error {status}: {self._scrub(raw.decode('utf-8', 'replace'))[:200].strip()}"
            if status not in _RETRY_STATUS:
                break
        attempts = attempt + 1
        return Completion(text="", finish_reason="error",
                          error=f"{last} ({attempts} attempt{'s' if attempts > 1 else ''})")

    async def _run(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        import httpx

        n = max(1, sampling.n)
        sem = asyncio.Semaphore(max(1, self.config.concurrency))
        rng = random.Random(sampling.seed)
        limits = httpx.Limits(max_connections=max(1, self.config.concurrency),
                              max_keepalive_connections=max(1, self.config.concurrency))
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout_s), limits=limits) as client:
            # greedy samples are all the same answer: ask once and repeat it
            copies = 1 if sampling.temperature <= 0 else n
            tasks = []
            for p in prompts:
                for k in range(copies):
                    path, body = self.request_for(p, sampling, k)
                    tasks.append(self._one(client, sem, path, body, random.Random(rng.random())))
            flat = await asyncio.gather(*tasks)
        return [[flat[i * copies + (k if copies > 1 else 0)] for k in range(n)] for i in range(len(prompts))]

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        if not prompts:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._run(prompts, sampling))
        # called from inside an event loop (a notebook): run ours on a thread
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["out"] = asyncio.run(self._run(prompts, sampling))
            except BaseException as e:  # re-raised on the caller's thread
                box["err"] = e

        t = threading.Thread(target=target)
        t.start()
        t.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"
