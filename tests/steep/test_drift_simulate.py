"""`steep drift simulate`'s HTTP client and its shifted inputs, against a stand-in server in a thread.

(Moved out of tests/steep/test_deploy.py when steep.deploy became a package: these test steep.drift.traffic.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from steep.drift import DriftError
from steep.drift.traffic import send_texts, shifted_texts
from tests.conftest import REPO


class StandInServer(BaseHTTPRequestHandler):
    """A stand-in server with the summarizer's API shape: POST /summarize {"texts": [...]}."""

    received: ClassVar[list[list[str]]] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body["texts"])
        if self.path != "/summarize" or self.status != 200:
            self.send_response(self.status if self.path == "/summarize" else 404)
            self.end_headers()
            self.wfile.write(b'{"error": "nope"}')
            return
        out = [
            {"summary": t[:10], "model_version": "7", "key": self.headers.get("X-API-Key")}
            for t in body["texts"]
        ]
        payload = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    StandInServer.received, StandInServer.status = [], 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StandInServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_simulate_sends_batches(server):
    texts = shifted_texts([], 37, shift="domain", seed=1)
    sent = send_texts(server, texts, batch_size=16, api_key="k")
    assert (sent.texts, sent.requests, sent.versions) == (37, 3, {"7"})
    assert [len(b) for b in StandInServer.received] == [16, 16, 5]
    assert [t for b in StandInServer.received for t in b] == texts


def test_simulate_stops_on_an_error_and_says_why(server):
    StandInServer.status = 401
    with pytest.raises(DriftError, match=r"answered 401 after 0 texts.*api_key_env"):
        send_texts(server, ["a text"], batch_size=4)
    with pytest.raises(DriftError, match="steep serve"):
        send_texts("http://127.0.0.1:9", ["a text"], batch_size=4)


def test_shifted_inputs():
    base = ["The licensee shall not assign this agreement without prior written consent of the licensor."] * 5
    assert len(set(shifted_texts([], 50, "domain"))) > 25
    noise = shifted_texts(base, 10, "noise", seed=2)
    assert all(len(t.split()) >= 2 * len(base[0].split()) for t in noise)
    assert shifted_texts(base, 3, "none") == base[:3]
    with pytest.raises(DriftError, match="domain, noise or none"):
        shifted_texts(base, 3, "sideways")


def test_cli_registers_drift_and_deploy():
    out = subprocess.run([sys.executable, "-m", "steep", "drift", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 0 and "check" in out.stdout and "simulate" in out.stdout
