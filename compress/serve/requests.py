"""Validation of `compress serve` request bodies: bytes in, plain Python values out, or a `RequestError` (4xx).

Every mistake a client can make is a `RequestError` with an HTTP status (400 unreadable body, 413
too large, 422 well-formed JSON with wrong content) and a JSON-ready message; nothing here
raises anything else on any input. Limits (`Limits`) are configurable per server.
Torch-free, no server needed (tests call these directly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class RequestError(Exception):
    """A client mistake: an HTTP status and a message (the response is `{"error": {...}}`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # request body
    max_histories: int = 256  # histories per /recommend request
    max_events: int = 1024  # events per /events request
    max_history_items: int = 10_000  # items per history before truncation to max_len (longer: 413)
    max_id_chars: int = 256  # length of a user, item or event id


@dataclass
class RecommendRequest:
    histories: list[list[str]]
    top_k: int | None


@dataclass
class Event:
    user: str
    item: str
    id: str | None = None


@dataclass
class EventsRequest:
    events: list[Event]
    top_k: int | None


def decode_json(body: bytes, limits: Limits) -> Any:
    """The JSON value of a body: 413 past the size limit, 400 for non-UTF-8 or malformed JSON."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, "body_too_large", f"request body of {len(body)} bytes exceeds {limits.max_body_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, "not_utf8", f"request body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if not text.strip():
        raise RequestError(400, "empty_body", "request body is empty: send a JSON object")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _object(value: Any, allowed: set[str], required: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(422, "not_an_object", f"expected a JSON object with {required!r}, got {_kind(value)}")
    if required not in value:
        raise RequestError(422, "missing_field", f"missing field {required!r}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise RequestError(422, "unknown_field", f"unknown field(s) {unknown}: expected {sorted(allowed)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def identifier(value: Any, where: str, limits: Limits) -> str:
    """An id as a string: a non-empty string or an integer (JSON numbers that are not integers, booleans,
    null, lists and objects are refused)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(422, "bad_id", f"{where}: an id must be a string or an integer, got {_kind(value)}")
    text = str(value)
    if not text.strip():
        raise RequestError(422, "empty_id", f"{where}: empty id")
    if len(text) > limits.max_id_chars:
        raise RequestError(422, "id_too_long", f"{where}: id longer than {limits.max_id_chars} characters")
    return text


def top_k_of(payload: dict[str, Any], max_k: int) -> int | None:
    value = payload.get("top_k")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, "bad_top_k", f"top_k must be an integer, got {_kind(value)}")
    if not 1 <= int(value) <= max_k:
        raise RequestError(422, "bad_top_k", f"top_k {value} is out of range 1..{max_k} (the K of the export)")
    return int(value)


def _bounded_list(value: Any, name: str, elements: str, limit: int) -> list[Any]:
    """The request's list `name`: a non-empty list of at most `limit` entries, else a 4xx."""
    if not isinstance(value, list):
        raise RequestError(422, f"bad_{name}", f"{name} must be a list of {elements}, got {_kind(value)}")
    if not value:
        raise RequestError(422, f"empty_{name}", f"{name} is empty")
    if len(value) > limit:
        raise RequestError(413, f"too_many_{name}", f"{len(value)} {name} in one request exceed the limit {limit}")
    return value


def parse_recommend(payload: Any, limits: Limits, max_k: int) -> RecommendRequest:
    """`{"histories": [[item, ...], ...], "top_k": K}`; also `{"history": [...]}` for one history."""
    if isinstance(payload, dict) and "history" in payload and "histories" not in payload:
        payload = {**{k: v for k, v in payload.items() if k != "history"}, "histories": [payload["history"]]}
    payload = _object(payload, {"histories", "top_k"}, "histories")
    histories = _bounded_list(payload["histories"], "histories", "lists of item ids", limits.max_histories)
    parsed = []
    for i, history in enumerate(histories):
        if not isinstance(history, list):
            raise RequestError(422, "bad_history", f"histories[{i}] must be a list of item ids, got {_kind(history)}")
        if not history:
            raise RequestError(422, "empty_history", f"histories[{i}] is empty (no popularity fallback: "
                                                     "the caller picks its own default)")
        if len(history) > limits.max_history_items:
            raise RequestError(413, "history_too_long", f"histories[{i}] has {len(history)} items, more than "
                                                        f"{limits.max_history_items}")
        parsed.append([identifier(item, f"histories[{i}][{j}]", limits) for j, item in enumerate(history)])
    return RecommendRequest(parsed, top_k_of(payload, max_k))


def parse_events(payload: Any, limits: Limits, max_k: int) -> EventsRequest:
    """`{"events": [{"user": ..., "item": ..., "id": ...}, ...], "top_k": K}` (`id` optional: without it an
    event is not idempotent)."""
    payload = _object(payload, {"events", "top_k"}, "events")
    events = _bounded_list(payload["events"], "events", "objects", limits.max_events)
    parsed = []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise RequestError(422, "bad_event", f"events[{i}] must be an object, got {_kind(event)}")
        for name in ("user", "item"):
            if name not in event:
                raise RequestError(422, "missing_field", f"events[{i}] lacks {name!r}")
        unknown = sorted(set(event) - {"user", "item", "id"})
        if unknown:
            raise RequestError(422, "unknown_field", f"events[{i}]: unknown field(s) {unknown}")
        event_id = event.get("id")
        parsed.append(Event(identifier(event["user"], f"events[{i}].user", limits),
                            identifier(event["item"], f"events[{i}].item", limits),
                            None if event_id is None else identifier(event_id, f"events[{i}].id", limits)))
    return EventsRequest(parsed, top_k_of(payload, max_k))
