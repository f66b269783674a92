"""The live stream (``GET /stream``), shared by the sync and async clients: a
Server-Sent Events decoder, and the state of one stream across its connections
(where to resume, how long to wait before reconnecting, which failures to retry).
The clients only differ in how they read the bytes and how they wait.
"""

from __future__ import annotations

import codecs
import json
import random
import re
import socket
from dataclasses import dataclass
from typing import Any, List, Optional

import httpx

from . import _api
from .errors import SwitchError, UnavailableError
from .models import Message

#: The first wait before reconnecting, in seconds (a ``retry:`` field of the hub replaces it).
RECONNECT_DELAY = 0.25
#: The longest wait between two attempts to reconnect, in seconds.
MAX_RECONNECT_DELAY = 10.0
#: A resume the hub answers 404 (its message not logged yet) is retried this many times.
MAX_RESUME_NOT_FOUND = 10

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its type (``"message"`` when none was named), its data
    lines joined by ``\\n``, and the last event id seen on the connection."""

    event: str
    data: str
    id: Optional[str] = None


class SSEDecoder:
    """Turns the bytes of one ``text/event-stream`` response into events, as the
    HTML standard's event-stream interpretation does: lines end with CRLF, LF or
    CR (also across chunks); ``:`` starts a comment; ``data`` lines accumulate; a
    blank line dispatches; an event without data is dropped; a field without a
    colon has an empty value; one space after the colon is not part of the value.
    An event cut off by the end of the stream is never dispatched. ``retry`` is
    the reconnection time the stream asked for last (milliseconds), if any.
    """

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._data: List[str] = []
        self._event = ""
        self._last_id: Optional[str] = None
        self.retry: Optional[int] = None

    def feed(self, chunk: bytes) -> List[ServerSentEvent]:
        """The events completed by ``chunk``."""
        text = self._text.decode(chunk)
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        self._buffer += text
        events: List[ServerSentEvent] = []
        start = 0
        buffer = self._buffer
        while True:
            end = _EOL.search(buffer, start)
            if end is None:
                break
            if end.group() == "\r" and end.end() == len(buffer):
                break  # a CR ending the chunk may be the first half of a CRLF
            self._line(buffer[start : end.start()], events)
            start = end.end()
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str, events: List[ServerSentEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)

    def _dispatch(self, events: List[ServerSentEvent]) -> None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return
        events.append(
            ServerSentEvent(
                event=event or "message",
                data="\n".join(data),
                id=self._last_id or None,
            )
        )


class Resume(Exception):
    """The hub ended the stream on purpose (a client that fell behind): reconnect
    and resume from the last message handed out."""


class StreamState:
    """What one stream remembers across its connections."""

    def __init__(self, topic: str, filter: Optional[str], since: Optional[str]) -> None:
        if not isinstance(topic, str) or not topic.strip():
            raise ValueError("topic must be a pattern such as 'orders.*' or '#'")
        if filter is not None and not isinstance(filter, str):
            raise TypeError("filter must be a filter expression (a string) or None")
        if since is not None and (not isinstance(since, str) or not since.strip()):
            raise ValueError("since must be a message id")
        self.topic = topic
        self.filter = filter
        #: The id of the last message handed out (or ``since`` before the first).
        self.last_id: Optional[str] = None if since is None else since.strip()
        self._base_delay = RECONNECT_DELAY
        self._delay = RECONNECT_DELAY
        self._not_found = 0

    def call(self) -> "_api.Call[None]":
        """The request that (re)opens the stream, resuming after ``last_id``."""
        return _api.stream(self.topic, self.filter, self.last_id)

    def take(self, event: ServerSentEvent) -> Optional[Message]:
        """The message ``event`` carries, if any; raises :class:`Resume` for
        ``slow_consumer`` and :class:`SwitchError` for any other error event."""
        if event.event == "message":
            try:
                data = json.loads(event.data)
                message = Message.from_dict(data)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SwitchError(
                    f"the hub sent a stream event that is not a message: {exc}",
                    body=event.data[:500],
                ) from exc
            self.last_id = event.id or message.id
            # A connection that carried a message is a good one: start over from the shortest wait.
            self._delay = self._base_delay
            self._not_found = 0
            return message
        if event.event == "error":
            data = _maybe_json(event.data)
            code = _error_code(data)
            if code == "slow_consumer":
                raise Resume()
            raise SwitchError(
                f"the hub ended the stream: {code or event.data[:200]}", code=code, body=data
            )
        return None

    def reconnection_time(self, retry: Optional[int]) -> None:
        """The stream's ``retry:`` field (milliseconds) replaces the first wait."""
        if retry is None:
            return
        base = min(max(retry, 1) / 1000.0, MAX_RECONNECT_DELAY)
        if base != self._base_delay:
            self._base_delay = self._delay = base

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt to connect (doubling, with jitter)."""
        delay = self._delay
        self._delay = min(self._delay * 2, MAX_RECONNECT_DELAY)
        return delay * random.uniform(0.8, 1.2)

    def retryable(self, exc: SwitchError) -> Optional[float]:
        """When reconnecting failed with ``exc``: ``None`` to give up and raise it,
        else at least how many seconds to wait before trying again."""
        if exc.status is None:  # NetworkError: the hub is unreachable for now
            return 0.0
        if exc.status == 404 and self.last_id is not None:
            # The last message may not be archived yet; the hub waits a little itself.
            self._not_found += 1
            return 0.0 if self._not_found < MAX_RESUME_NOT_FOUND else None
        if exc.status in (408, 429) or exc.status >= 500:
            retry_after = exc.retry_after if isinstance(exc, UnavailableError) else None
            return min(retry_after or 0.0, 60.0)
        return None


def check_stream(response: httpx.Response) -> None:
    """Raise unless ``response`` (headers read, body not) is an event stream."""
    kind = response.headers.get("content-type", "")
    if kind.split(";")[0].strip().lower() != "text/event-stream":
        raise SwitchError(
            f"the hub answered GET /stream with {kind or 'no content type'}, not an event stream",
            status=response.status_code,
        )


def shutdown_socket(response: Optional[httpx.Response]) -> None:
    """Wake a read blocked on ``response`` in another thread (closing alone may not)."""
    if response is None:
        return
    try:
        stream = response.extensions.get("network_stream")
        # A socket.socket, or asyncio's TransportSocket around one.
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - best effort; close() follows
        pass


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _error_code(data: Any) -> Optional[str]:
    if isinstance(data, dict):
        if isinstance(data.get("code"), str):
            return data["code"]
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return err["code"]
    return None

