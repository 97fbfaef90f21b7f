"""The API client: the official OpenAI SDK against any OpenAI-compatible endpoint (Chat Completions or the
Responses API), and where the endpoint is (on this site or not)."""

from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from monitor.config import EscalationConfig
from monitor.escalation.prompt import SYSTEM_PROMPT

SCHEMA_NAME = "camera_check"


def endpoint_on_site(config: EscalationConfig) -> bool:
    if config.on_site is not None:
        return config.on_site
    host = urlparse(config.base_url).hostname if config.base_url else None
    if not host:
        return False
    if host == "localhost" or host.endswith((".local", ".lan", ".internal", ".home.arpa")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


@dataclass(frozen=True)
class RawAnswer:
    """The model's reply, whichever API carried it. ``content`` None: no text came back."""

    content: str | None
    refusal: str | None
    input_tokens: int | None
    output_tokens: int | None


class ModelClient:
    """The official OpenAI SDK against any OpenAI-compatible endpoint: Chat Completions, or the Responses API."""

    def __init__(self, config: EscalationConfig):
        import openai

        self.config = config
        api_key = config.api_key.reveal() if config.api_key else os.environ.get("OPENAI_API_KEY", "not-needed")
        self.client = openai.OpenAI(
            base_url=config.base_url, api_key=api_key, timeout=config.timeout_s, max_retries=config.max_retries
        )

    def ask(self, text: str, jpeg: bytes, schema: dict) -> RawAnswer:
        data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        temperature = {"temperature": self.config.temperature} if self.config.temperature is not None else {}
        if self.config.api == "responses":
            return self._ask_responses(text, data_url, schema, temperature)
        response = self.client.chat.completions.create(
            model=self.config.model,
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": data_url}},
                    ],
                },
            ],
            response_format={"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema}},
            max_tokens=self.config.max_output_tokens,
            **temperature,
        )
        usage = response.usage
        try:
            message = response.choices[0].message
        except (AttributeError, IndexError, TypeError):
            message = None
        return RawAnswer(
            getattr(message, "content", None),
            getattr(message, "refusal", None),
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
        )

    def _ask_responses(self, text: str, data_url: str, schema: dict, temperature: dict) -> RawAnswer:
        response = self.client.responses.create(
            model=self.config.model,
            instructions=SYSTEM_PROMPT,
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}, {"type": "input_image", "image_url": data_url}],
                }
            ],
            text={"format": {"type": "json_schema", "name": SCHEMA_NAME, "strict": True, "schema": schema}},
            max_output_tokens=self.config.max_output_tokens,
            **temperature,
        )
        refusal = next(
            (
                part.refusal
                for item in response.output or []
                for part in getattr(item, "content", None) or []
                if getattr(part, "type", None) == "refusal"
            ),
            None,
        )
        usage = response.usage
        return RawAnswer(
            response.output_text or None,
            refusal,
            getattr(usage, "input_tokens", None),
            getattr(usage, "output_tokens", None),
        )

    def close(self) -> None:
        self.client.close()




def classify_error(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIStatusError):
        return "http_error"
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error"
    return "error"
