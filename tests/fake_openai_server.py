"""A local stand-in for OpenAI's images API, for tests of the real ``openai`` client.

It serves ``POST /v1/images/edits`` and ``POST /v1/images/variations`` on 127.0.0.1 (multipart in, base64 PNG
out), records every request it receives (path, headers, form fields, the decoded image), and answers from a
script: each request takes the next action of ``server.script`` (then ``"ok"`` once the script is empty):

    "ok"        200 with ``n`` RGB PNGs of the requested size (a brightened copy of the sent image)
    "429"       rate limit; "500" server error; "401" bad key
    "refuse"    400 with code ``content_policy_violation``
    "timeout"   sleeps ``slow_seconds`` before answering ok (longer than the client's timeout)
    "hang"      sleeps until the server is stopped (a call in flight when its client is killed)
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageOps


class FakeOpenAIServer:
    """Run with ``with FakeOpenAIServer() as server: ... server.base_url ...``."""

    def __init__(self, script: list[str] | None = None, slow_seconds: float = 2.0) -> None:
        self.script = list(script or [])
        self.slow_seconds = slow_seconds
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_action(self, record: dict) -> str:
        with self._lock:
            self.requests.append(record)
            return self.script.pop(0) if self.script else "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                msg = BytesParser(policy=default_policy).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
                fields, image = {}, None
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    payload = part.get_payload(decode=True)
                    if part.get_filename():
                        image = {"filename": part.get_filename(), "bytes": payload}
                        with Image.open(io.BytesIO(payload)) as pil:
                            image.update(format=pil.format, size=pil.size, mode=pil.mode)
                    else:
                        fields[name] = payload.decode()
                record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                          "fields": fields, "image": image, "time": time.monotonic()}
                action = server._next_action(record)
                if action == "hang":
                    server._stop.wait()
                    return
                if action == "timeout":
                    time.sleep(server.slow_seconds)
                if action in ("429", "500", "401"):
                    kind = {"429": "rate_limit_exceeded", "500": "server_error", "401": "invalid_api_key"}[action]
                    self._json(int(action), {"error": {"message": kind, "type": kind, "code": kind}})
                    return
                if action == "refuse":
                    self._json(400, {"error": {"message": "Your request was rejected by the safety system.",
                                               "type": "image_generation_user_error",
                                               "code": "content_policy_violation"}})
                    return
                size = tuple(int(s) for s in fields.get("size", "1024x1024").split("x"))
                with Image.open(io.BytesIO(image["bytes"])) as pil:
                    out = ImageOps.autocontrast(pil.convert("RGB").resize(size))
                buf = io.BytesIO()
                out.save(buf, format="PNG")
                b64 = base64.b64encode(buf.getvalue()).decode()
                self._json(200, {"created": int(time.time()),
                                 "data": [{"b64_json": b64} for _ in range(int(fields.get("n", "1")))]})

        return Handler
