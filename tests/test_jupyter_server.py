"""JupyterLab's server really works in this environment: it lists the notebooks and runs a kernel that
imports the package (what a reader does first after ``make lab``).

A real ``jupyter server`` on a free 127.0.0.1 port with a known token; the REST contents API, a kernel
started through the REST kernels API, code run over the kernel's websocket. The server (and with it the
kernel) is stopped in a ``finally`` — terminate, then kill its process group — even when the test fails.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
START_TIMEOUT_S = 90      # server start on a loaded 2-core machine
REQUEST_TIMEOUT_S = 30    # one REST call (starting a kernel included)
EXECUTE_TIMEOUT_S = 120   # the kernel starts and imports torch + pirid_lite
STOP_TIMEOUT_S = 15

pytestmark = pytest.mark.slow  # about 10 s: a server, a kernel and `import torch`


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, port: int, token: str, log: Path) -> None:
        self.base, self.token, self.log = f"http://127.0.0.1:{port}", token, log

    def request(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server (it shuts its kernels down), then kill whatever is left of its process group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created: the server and its kernels only
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(params=["jupyter_server"])
def jupyter_server(request, tmp_path):
    """A running server: ``jupyter_server`` (the REST and kernel APIs) or, parametrised indirectly,
    ``jupyterlab`` (what ``make lab`` starts: the same APIs plus Lab's settings)."""
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", request.param, "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={NOTEBOOKS}"]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "PIRID_NOTEBOOK_MODE": "test"}
    env.pop("JPY_SESSION_NAME", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
    server = Server(port, token, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                server.request("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter server not up after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield server
    finally:
        _stop(proc)
        assert proc.poll() is not None, "the jupyter server is still running"


def _execute(server: Server, kernel_id: str, code: str) -> tuple[dict, str]:
    """Run ``code`` over the kernel's websocket; returns (execute_reply content, stdout + stderr text)."""
    import websocket

    url = f"ws://127.0.0.1:{server.base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(url, header=[f"Authorization: token {server.token}"],
                                     timeout=REQUEST_TIMEOUT_S)
    try:
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "session": session, "username": "test", "msg_type": "execute_request",
                       "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        text = []
        deadline = time.monotonic() + EXECUTE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                msg = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                text.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                text.append("\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "execute_reply":
                return msg["content"], "".join(text)
        pytest.fail(f"no execute_reply within {EXECUTE_TIMEOUT_S} s; output so far: {''.join(text)!r}")
    finally:
        ws.close()


def test_server_lists_notebooks_and_runs_a_kernel(jupyter_server):
    server = jupyter_server
    expected = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert len(expected) == 6, expected
    listing = server.request("GET", "/api/contents/")
    assert sorted(item["name"] for item in listing["content"] if item["type"] == "notebook") == expected

    kernel = server.request("POST", "/api/kernels", {"name": "python3"})
    try:
        reply, output = _execute(server, kernel["id"], "import pirid_lite, sys\nprint('ok', pirid_lite.__name__)")
        assert reply["status"] == "ok", output
        assert "ok pirid_lite" in output
        assert any(k["id"] == kernel["id"] for k in server.request("GET", "/api/kernels"))
    finally:
        server.request("DELETE", f"/api/kernels/{kernel['id']}")
    assert all(k["id"] != kernel["id"] for k in server.request("GET", "/api/kernels"))


@pytest.mark.parametrize("jupyter_server", ["jupyterlab"], indirect=True)
def test_lab_does_not_autosave_so_running_a_notebook_leaves_the_clone_clean(jupyter_server):
    """``make env`` installs pirid_lite/notebook/lab_overrides.json as JupyterLab's overrides: autosave is off,
    so Run All rewrites a notebook only when the reader saves it."""
    plugin = jupyter_server.request("GET", "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    # Lab applies overrides as the schema's default (stock JupyterLab: true); no user setting may turn it back on
    autosave = plugin["settings"].get("autosave", plugin["schema"]["properties"]["autosave"]["default"])
    assert autosave is False, "JupyterLab autosaves: build the environment with `make env`, which installs the overrides"
