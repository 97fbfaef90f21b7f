"""A real HTTP server on loopback that speaks the OpenAI Chat Completions and Responses APIs, for the escalation tests.

It checks every request (a decodable JPEG of the expected size as a base64 data URL, a JSON-schema
``response_format``, the expected prompt parts, the API key) and answers from a script of actions:
``Answer`` (JSON built from the request's own schema), ``Raw`` (any content, e.g. malformed JSON),
``Status`` (429 with Retry-After, 500...), ``Hang`` (no answer for a while). Problems are collected in
``server.problems`` so that a test can assert there were none.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import cv2
import numpy as np


@dataclass
class Received:
    body: dict
    prompt: str
    schema: dict | None
    image: np.ndarray | None
    api: str = "chat"
    at: float = field(default_factory=time.monotonic)
    problems: list[str] = field(default_factory=list)

    @property
    def event_ids(self) -> list[str]:
        items = ((self.schema or {}).get("properties", {}).get("events", {}).get("items", {}))
        return list(items.get("properties", {}).get("id", {}).get("enum", []))


@dataclass
class Answer:
    """A schema-shaped answer: counts not given are 0; every candidate event gets ``events_real``."""

    totals: dict[str, int] = field(default_factory=dict)
    zones: dict[str, dict[str, int]] = field(default_factory=dict)
    events_real: bool | None = None
    note: str = ""
    description: str = "a street scene"
    tokens: tuple[int, int] = (900, 60)
    extra: dict = field(default_factory=dict)  # merged into the answer (to break the schema on purpose)

    def content(self, received: Received) -> str:
        props = (received.schema or {}).get("properties", {})
        totals = {label: self.totals.get(label, 0) for label in props.get("totals", {}).get("required", [])}
        zones = {}
        for zone, zone_schema in props.get("zones", {}).get("properties", {}).items():
            given = self.zones.get(zone, {})
            zones[zone] = {label: given.get(label, 0) for label in zone_schema.get("required", [])}
        events = []
        if self.events_real is not None:
            events = [{"id": i, "real": self.events_real, "note": self.note} for i in received.event_ids]
        answer = {"totals": totals, "zones": zones, "events": events, "description": self.description}
        answer.update(self.extra)
        return json.dumps(answer)


@dataclass
class Raw:
    text: str
    tokens: tuple[int, int] = (900, 20)


@dataclass
class Status:
    code: int
    retry_after: float | None = None
    message: str = "scripted error"


@dataclass
class Hang:
    seconds: float
    then: Any = None  # the action answered after the hang (if the client still listens)


Action = Answer | Raw | Status | Hang | Callable[[Received], Any]


class FakeOpenAI:
    def __init__(
        self,
        api_key: str = "test-key",
        expect_long_side: int | None = None,
        expect_text: list[str] | None = None,
        default: Action | None = None,
    ):
        self.api_key = api_key
        self.expect_long_side = expect_long_side
        self.expect_text = expect_text or []
        self.default = default or Answer()
        self.script: deque[Action] = deque()
        self.received: list[Received] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.hanging = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def push(self, *actions: Action) -> None:
        self.script.extend(actions)

    def _next_action(self) -> Action:
        with self._lock:
            return self.script.popleft() if self.script else self.default

    # --- checks ---

    def check(self, headers, body: dict, api: str = "chat") -> Received:
        problems = []
        if self.api_key and headers.get("Authorization") != f"Bearer {self.api_key}":
            problems.append(f"bad Authorization header {headers.get('Authorization')!r}")
        prompt, image = body.get("instructions") or "", None
        messages = body.get("messages", []) if api == "chat" else body.get("input", [])
        for message in messages if isinstance(messages, list) else [{"content": messages}]:
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
            for part in parts:
                if part.get("type") in ("text", "input_text"):
                    prompt += part["text"] + "\n"
                elif part.get("type") == "image_url":
                    image = self._decode_image(part["image_url"].get("url", ""), problems)
                elif part.get("type") == "input_image":
                    image = self._decode_image(part.get("image_url", ""), problems)
        if image is None and not any("image" in p for p in problems):
            problems.append("no image in the request")
        if image is not None and self.expect_long_side and max(image.shape[:2]) != self.expect_long_side:
            problems.append(f"image long side {max(image.shape[:2])}, expected {self.expect_long_side}")
        if api == "chat":
            schema = self._schema(body.get("response_format"), problems)
        else:  # Responses: text.format = {"type": "json_schema", "name", "schema", "strict"}
            fmt = (body.get("text") or {}).get("format")
            schema = self._schema({"type": fmt.get("type"), "json_schema": fmt} if isinstance(fmt, dict) else fmt, problems)
        problems += [f"prompt lacks {text!r}" for text in self.expect_text if text not in prompt]
        if not body.get("model"):
            problems.append("no model named")
        return Received(body, prompt, schema, image, api=api, problems=problems)

    @staticmethod
    def _decode_image(url: str, problems: list[str]) -> np.ndarray | None:
        prefix = "data:image/jpeg;base64,"
        if not url.startswith(prefix):
            problems.append(f"image is not a base64 JPEG data URL: {url[:40]!r}")
            return None
        try:
            data = base64.b64decode(url[len(prefix):], validate=True)
        except ValueError:
            problems.append("image base64 does not decode")
            return None
        if not data.startswith(b"\xff\xd8"):
            problems.append("image bytes are not a JPEG")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            problems.append("image JPEG does not decode")
        return image

    @staticmethod
    def _schema(response_format: Any, problems: list[str]) -> dict | None:
        if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
            problems.append(f"response_format is not json_schema: {response_format!r}")
            return None
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            problems.append("response_format.json_schema.schema is not an object schema")
            return None
        missing = {"totals", "zones", "events", "description"} - set(schema.get("required", []))
        if missing:
            problems.append(f"schema does not require {sorted(missing)}")
        return schema

    # --- HTTP ---

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                routes = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}
                api = routes.get(self.path.rstrip("/"))
                if api is None:
                    self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    fake.problems.append("request body is not JSON")
                    self._json(400, {"error": {"message": "bad JSON", "type": "invalid_request_error"}})
                    return
                received = fake.check(self.headers, body, api)
                with fake._lock:
                    fake.received.append(received)
                    fake.problems += received.problems
                if received.problems:
                    self._json(400, {"error": {"message": "; ".join(received.problems), "type": "invalid_request_error"}})
                    return
                self._act(fake._next_action(), received)

            def _act(self, action: Action, received: Received) -> None:
                if callable(action) and not isinstance(action, (Answer, Raw, Status, Hang)):
                    action = action(received)
                if isinstance(action, Hang):
                    fake.hanging += 1
                    try:
                        fake._stop.wait(action.seconds)
                    finally:
                        fake.hanging -= 1
                    if action.then is None:
                        self.close_connection = True
                        return
                    action = action.then
                if isinstance(action, Status):
                    headers = {"Retry-After": f"{action.retry_after:g}"} if action.retry_after is not None else {}
                    self._json(action.code, {"error": {"message": action.message, "type": "scripted"}}, headers)
                    return
                content = action.content(received) if isinstance(action, Answer) else action.text
                prompt_tokens, completion_tokens = action.tokens
                build = completion if received.api == "chat" else response
                self._json(200, build(received.body.get("model", "fake"), content, prompt_tokens, completion_tokens))

            def _json(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        return Handler


def completion(model: str, content: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


def response(model: str, content: str, input_tokens: int, output_tokens: int) -> dict:
    """A Responses API object with one assistant message."""
    return {
        "id": f"resp_{time.monotonic_ns()}",
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": f"msg_{time.monotonic_ns()}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": content, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
