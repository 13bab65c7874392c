"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 (a free port) that checks
each request's signature with ``standardwebhooks``' own ``Webhook.verify``, records what it
got, and answers as the test scripted."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names in lower case
    body: bytes
    payload: Any  # what Webhook.verify returned; None if it refused
    refused: str  # why Webhook.verify refused, or ""

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class Receiver:
    """Answers each request with the next of ``answers`` (the last one again when they run
    out); a request whose signature does not verify gets 400 and uses up no answer."""

    def __init__(self, secret: str, *answers: Answer) -> None:
        self.webhook = Webhook(secret)
        self.answers = list(answers) or [Answer()]
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    @property
    def verified(self) -> list[Received]:
        return [request for request in self.received if not request.refused]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def take(self, headers: dict[str, str], body: bytes) -> Answer:
        try:
            payload, refused = self.webhook.verify(body, headers), ""
        except WebhookVerificationError as exc:
            payload, refused = None, str(exc)
        with self.lock:
            self.received.append(Received(headers, body, payload, refused))
            if refused:
                return Answer(400, body=b"bad signature")
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = receiver.take(headers, body)
                time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads ``received``

        return Handler
