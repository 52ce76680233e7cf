"""A local OpenAI-compatible HTTP server for tests and benchmarks: scripted replies, faults, latency.

It listens on 127.0.0.1 only, on a free port, in a background thread, and serves
``POST /v1/chat/completions`` and ``POST /v1/embeddings`` the way the OpenAI API does, so the real
``openai`` client talks to it over real HTTP.

* ``chat_reply(request_json) -> str``: the assistant's text (default: two numbered questions
  quoting the first words of the last user message).
* ``embed(text) -> list[float]``: the embedding (default: a hashed bag of words, so related texts
  are close and retrieval has signal).
* ``faults``: a list consumed one per request, in order, before normal handling. Each item is a
  dict: ``{"status": 429, "headers": {"Retry-After": "1"}}``, ``{"status": 500}``,
  ``{"delay": 3.0}`` (sleep, then answer normally: a client timeout), ``{"body": "not json"}``
  (malformed reply with status 200), ``{"drop": True}`` (close the connection without a reply);
  ``"echo_headers": True`` beside ``status`` quotes the request's headers (the API key) in the error;
  ``"echo_credentials": True`` quotes the ``Authorization`` value and, for ``Basic``, the decoded
  ``user:password`` (a careless server's "bad credentials" message).
  ``None`` means no fault for that request.
* ``path_faults``: {path suffix: [faults]}, consumed one per request to that path before ``faults``.
* ``latency``: seconds added to every request.
* ``limits``: OpenAI's documented embeddings limits, enforced as the API does (HTTP 400 with its
  messages): :data:`OPENAI_LIMITS` is ``{"max_input_tokens": 8192, "max_request_tokens": 300000,
  "max_inputs": 2048}``; ``count_tokens(text) -> int`` counts an input's tokens (default
  :func:`word_tokens`, words and punctuation marks; :func:`toy_encoding` builds a tiktoken encoding
  a client can share). ``usage`` in replies uses the same count.
* ``requests``: every request received, as ``(path, json_body, headers)`` (header names lower-case); ``count(path)``.

Example::

    with OpenAIServer(faults=[{"status": 429, "headers": {"Retry-After": "0"}}]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


def default_chat_reply(request: dict[str, Any]) -> str:
    last = request["messages"][-1]["content"]
    words = re.findall(r"\w+", last.split("---------------------")[-2] if "-----" in last else last)[:6]
    topic = " ".join(words) or "this text"
    return f"Here are two questions:\n1. What is known about {topic}?\n2. Why is {topic} important?"


def hashed_bag_of_words(text: str, dim: int = 64) -> list[float]:
    vec = np.zeros(dim, dtype=np.float64)
    for word in re.findall(r"\w+", text.lower()):
        h = int.from_bytes(hashlib.md5(word.encode()).digest()[:8], "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = np.linalg.norm(vec)
    if norm == 0:
        vec[0] = 1.0
        norm = 1.0
    return (vec / norm).tolist()


OPENAI_LIMITS = {"max_input_tokens": 8192, "max_request_tokens": 300_000, "max_inputs": 2048}


def word_tokens(text: str) -> int:
    """Words and punctuation marks: fewer than UTF-8 bytes, like any real tokenizer's count."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def toy_encoding(words):
    """A tiktoken ``Encoding`` in which each of ``words`` (with or without a leading space) is one token and
    anything else is one token per byte: a byte-level BPE like cl100k_base, built without a download."""
    import tiktoken

    ranks = {bytes([i]): i for i in range(256)}
    for word in sorted(set(words)):
        for form in (word, " " + word):
            data = form.encode()
            for end in range(2, len(data) + 1):
                ranks.setdefault(data[:end], len(ranks))
    return tiktoken.Encoding(name="toy", pat_str=r"""\s?\w+|\s?[^\w\s]+|\s+""", mergeable_ranks=ranks,
                             special_tokens={})


class OpenAIServer:
    def __init__(self, *, chat_reply: Callable[[dict], str] = default_chat_reply,
                 embed: Callable[[str], list[float]] = hashed_bag_of_words,
                 faults: list[dict | None] | None = None, latency: float = 0.0,
                 path_faults: dict[str, list[dict | None]] | None = None,
                 limits: dict[str, int] | None = None, count_tokens: Callable[[str], int] = word_tokens):
        self.chat_reply = chat_reply
        self.embed = embed
        self.faults = list(faults or [])
        self.path_faults = {k: list(v) for k, v in (path_faults or {}).items()}
        self.latency = latency
        self.limits = dict(limits or {})
        self.count_tokens = count_tokens
        self.refused: list[str] = []  # the messages of limit refusals sent
        self.requests: list[tuple[str, dict, dict]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:  # noqa: PYI034 - the server, started
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def count(self, path_suffix: str = "") -> int:
        with self._lock:
            return sum(1 for path, _, _ in self.requests if path.endswith(path_suffix))

    # --- request handling --------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        with self._lock:
            self.requests.append((handler.path, body, {k.lower(): v for k, v in handler.headers.items()}))
            queue = next((q for suffix, q in self.path_faults.items() if handler.path.endswith(suffix) and q), None)
            fault = queue.pop(0) if queue else self.faults.pop(0) if self.faults else None
        if self.latency:
            time.sleep(self.latency)
        if fault:
            if fault.get("drop"):
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            if "delay" in fault:
                time.sleep(fault["delay"])
            elif "status" in fault:
                message = "scripted fault"
                if fault.get("echo_headers"):  # a careless server that quotes the request, key included
                    message += f" for request with headers {dict(handler.headers.items())}"
                if fault.get("echo_credentials"):  # ...or that says which credentials it refused
                    import base64

                    value = handler.headers.get("Authorization", "")
                    scheme, _, token = value.partition(" ")
                    message += f"; refused credentials {token}"
                    if scheme.lower() == "basic":
                        message += f" ({base64.b64decode(token).decode(errors='replace')})"
                self._send(handler, fault["status"], {"error": {"message": message, "type": "server_error"}},
                           fault.get("headers"))
                return
            elif "body" in fault:
                self._send_raw(handler, 200, fault["body"].encode(), {})
                return
        if handler.path.endswith("/chat/completions"):
            self._send(handler, 200, self._chat(body))
        elif handler.path.endswith("/embeddings"):
            refusal = self._over_limits(body)
            if refusal is not None:
                with self._lock:
                    self.refused.append(refusal["error"]["message"])
                self._send(handler, 400, refusal)
            else:
                self._send(handler, 200, self._embeddings(body))
        else:
            self._send(handler, 404, {"error": {"message": f"no route {handler.path}"}})

    def _chat(self, body: dict) -> dict:
        text = self.chat_reply(body)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(text.split())
        return {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _over_limits(self, body: dict) -> dict | None:
        """OpenAI's refusal of a request over its documented limits (its messages), or None."""
        if not self.limits:
            return None
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        if len(inputs) > self.limits.get("max_inputs", len(inputs)):
            return {"error": {"message": f"'$.input' is invalid: at most {self.limits['max_inputs']} inputs",
                              "type": "invalid_request_error", "param": None, "code": None}}
        counts = [self.count_tokens(str(t)) for t in inputs]
        longest = max(counts, default=0)
        limit = self.limits.get("max_input_tokens")
        if limit and longest > limit:
            return {"error": {"message": f"This model's maximum context length is {limit} tokens, however you "
                                         f"requested {longest} tokens ({longest} in your prompt; 0 for the "
                                         "completion). Please reduce your prompt; or completion length.",
                              "type": "invalid_request_error", "param": None, "code": None}}
        total, most = sum(counts), self.limits.get("max_request_tokens")
        if most and total > most:
            return {"error": {"message": f"Requested {total} tokens, max {most} tokens per request",
                              "type": "max_tokens_per_request", "param": None, "code": "max_tokens_per_request"}}
        return None

    def _embeddings(self, body: dict) -> dict:
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        data = [{"object": "embedding", "index": i, "embedding": self.embed(t)} for i, t in enumerate(inputs)]
        tokens = sum(self.count_tokens(str(t)) for t in inputs)
        return {"object": "list", "data": data, "model": body.get("model", "test-embed"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @staticmethod
    def _send(handler, status: int, payload: dict, headers: dict | None = None) -> None:
        OpenAIServer._send_raw(handler, status, json.dumps(payload).encode(), headers or {})

    @staticmethod
    def _send_raw(handler, status: int, data: bytes, headers: dict) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a test interrupted it): nothing to deliver
