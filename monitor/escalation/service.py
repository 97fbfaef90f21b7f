"""The escalation service, shared by all cameras: a bounded queue and worker threads that check the limits,
encode the frame, call the model, validate its answer, save the frame for the learning loop, and reply to
the camera that asked. Nothing here runs on a camera's frame path."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Protocol

from monitor.common import clean_text
from monitor.config import AppConfig, ConfigError, EscalationConfig
from monitor.escalation.client import ModelClient, RawAnswer, classify_error, endpoint_on_site
from monitor.escalation.limits import Budget, CircuitBreaker
from monitor.escalation.prompt import EncodedImage, build_prompt, encode_image, image_tokens, money
from monitor.escalation.records import DatasetWriter
from monitor.escalation.request import EscalationOutcome, EscalationRequest
from monitor.escalation.schema import AnswerRejected, answer_schema, count_limits, parse_answer

log = logging.getLogger(__name__)

MAX_TOKENS = 10_000_000  # a usage figure beyond this (or negative, or not an integer) is the endpoint lying


class EscalationEvents(Protocol):
    def escalation(self, camera: str, reason: str, outcome: str, seconds: float | None = None, cost: float = 0.0) -> None: ...
    def escalation_state(self, budget_remaining: float, circuit_open: bool) -> None: ...


class EscalationService:
    """Bounded queue (full: the oldest request is dropped and counted) and worker threads that call the model."""

    def __init__(
        self,
        config: EscalationConfig,
        events: EscalationEvents,
        dataset: DatasetWriter | None = None,
        client: ModelClient | None = None,
        budget_ledger: Path | None = None,
    ):
        self.config = config
        self.events = events
        self.dataset = dataset
        self.client = client or ModelClient(config)
        self.budget = Budget(config.daily_budget, ledger=budget_ledger)
        self.breaker = CircuitBreaker(config.circuit_breaker.failures, config.circuit_breaker.cooldown_s)
        self.on_site = endpoint_on_site(config)
        self._queue: queue.Queue[EscalationRequest] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"escalation-{i}", daemon=True) for i in range(config.workers)
        ]

    def start(self) -> None:
        self._report_state()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.close()

    def close(self) -> None:
        self.client.close()

    def submit(self, request: EscalationRequest) -> None:
        """Never blocks: a full queue loses its oldest request (counted as ``dropped``)."""
        while True:
            try:
                self._queue.put_nowait(request)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                self.events.escalation(dropped.camera, dropped.reason, "dropped")

    def estimate(self, request: EscalationRequest, text_chars: int) -> tuple[int, int, float]:
        h, w = request.image.shape[:2]
        scale = min(1.0, self.config.image_long_side / max(h, w))
        input_tokens = image_tokens(round(w * scale), round(h * scale)) + text_chars // 3 + 100
        output_tokens = self.config.max_output_tokens
        return input_tokens, output_tokens, money(self.config, input_tokens, output_tokens)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(request)
            except Exception:  # a bug here must not end the worker
                log.exception("escalation of camera %s failed", request.camera)

    def _handle(self, request: EscalationRequest) -> None:
        if not self.breaker.allow():
            self._skip(request, "circuit_open")
            return
        schema = answer_schema(request.brief.labels, request.brief.zone_labels, request.event_ids)
        prepared = encode_image(request, self.config)
        text = build_prompt(request, prepared.width, prepared.height)
        est_in, est_out, estimate = self.estimate(request, len(text) + len(json.dumps(schema)))
        if not self.budget.try_reserve(estimate):
            self.breaker.release()
            self._skip(request, "over_budget")
            return
        outcome = self._call(request, text, prepared, schema, estimate, est_in, est_out)
        self.breaker.record(outcome.outcome == "ok")
        self.budget.settle(estimate, outcome.cost)
        self.events.escalation(request.camera, request.reason, outcome.outcome, outcome.latency_s, outcome.cost)
        self._report_state()
        if outcome.outcome == "ok" and self.dataset is not None:
            self._save(request, prepared, outcome)
        request.reply(outcome)

    def _call(self, request, text, prepared, schema, estimate, est_in, est_out) -> EscalationOutcome:
        started = time.monotonic()
        try:
            response = self.client.ask(text, prepared.jpeg, schema)
        except Exception as exc:
            kind = classify_error(exc)
            # a timed-out call may still be billed; refused and unreachable ones are not
            cost = estimate if kind == "timeout" else 0.0
            error = clean_text(str(exc), 300)
            log.warning("escalation for camera %s failed (%s): %s", request.camera, kind, error)
            return EscalationOutcome(request, kind, latency_s=time.monotonic() - started, cost=cost, error=error)
        outcome = EscalationOutcome(request, "ok", latency_s=time.monotonic() - started, cost=estimate,
                                    input_tokens=est_in, output_tokens=est_out)
        try:
            tokens_in, tokens_out = checked_usage(response, est_in, est_out)
            outcome.input_tokens, outcome.output_tokens = tokens_in, tokens_out
            outcome.cost = money(self.config, tokens_in, tokens_out)
            if response.refusal:
                raise AnswerRejected("malformed", f"refused: {response.refusal}")
            height, width = request.image.shape[:2]
            zones = {name: zone["polygon"] for name, zone in request.brief.zones.items()}
            limits = count_limits(zones, width, height, request.brief.config.pixels_per_object)
            outcome.answer = parse_answer(response.content, schema, set(request.event_ids), limits)
        except AnswerRejected as exc:
            outcome.outcome, outcome.error = exc.kind, str(exc)
            log.warning("escalation answer for camera %s rejected (%s): %s", request.camera, exc.kind, exc)
        return outcome

    def _skip(self, request: EscalationRequest, outcome: str) -> None:
        self.events.escalation(request.camera, request.reason, outcome)
        self._report_state()

    def _report_state(self) -> None:
        self.events.escalation_state(self.budget.remaining, self.breaker.is_open)

    def _save(self, request: EscalationRequest, prepared: EncodedImage, outcome: EscalationOutcome) -> None:
        try:
            self.dataset.save(request, prepared.private, outcome)
        except OSError as exc:
            log.warning("cannot save escalated frame of camera %s: %s", request.camera, exc)



def checked_usage(response: RawAnswer, est_in: int, est_out: int) -> tuple[int, int]:
    """The token usage the endpoint reports (the estimate where it reports none); anything but a plausible
    count makes the answer invalid, and the call is then billed at its estimate."""
    checked = []
    for name, reported, estimated in (("input", response.input_tokens, est_in), ("output", response.output_tokens, est_out)):
        if reported is None:
            checked.append(estimated)
        elif type(reported) is not int or not 0 <= reported <= MAX_TOKENS:
            raise AnswerRejected("invalid", f"usage: {name} tokens {reported!r} is not a count of tokens")
        else:
            checked.append(reported or estimated)
    return checked[0], checked[1]


def build_service(app: AppConfig, metrics: EscalationEvents) -> EscalationService | None:
    """The shared service when escalation is configured and some camera uses it, else None."""
    config = app.escalation
    if config is None or not config.enabled or not any(c.escalation.enabled for c in app.cameras.values()):
        return None
    dataset = DatasetWriter(config.dataset) if config.dataset.dir else None
    try:
        client = ModelClient(config)
    except ConfigError as error:
        raise ConfigError([f"escalation.api_key: {problem}" for problem in error.problems]) from None
    return EscalationService(config, metrics, dataset, client, budget_ledger=app.state_dir / "escalation-budget.json")
