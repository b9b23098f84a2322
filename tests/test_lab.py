"""`make lab`: JupyterLab rooted at the workspace, working as root (Docker, CI and many research
servers run as root; CI runs this as root), opening on notebooks/, with reports/ (the tearsheets)
and params/ reachable through Lab's contents API and the tearsheets served from its file browser.
The test runs the Makefile's own command on a free port against a scratch workspace, and stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO, link_params

TOKEN = "lab-test-token"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not (REPO / ".venv" / "bin" / "jupyter").is_file(),
                                reason="`make lab` needs make and the workspace's .venv (made by `make run`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _defaults() -> None:
    """The server's signals at their defaults, even under a parent that ignores them."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def _get(url: str, follow: bool = True) -> tuple[int, str, str]:
    """Status, final URL and body of a GET with the token in the header."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.url, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Location", ""), ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def lab(tmp_path):
    """`make lab` on a free port with the workspace at ``tmp_path``; its base URL."""
    link_params(tmp_path)
    (tmp_path / "notebooks").symlink_to(REPO / "notebooks")
    (tmp_path / "reports" / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "reports" / "runs" / "r1" / "tearsheet.html").write_text("<html><title>a tearsheet</title></html>")
    port = _free_port()
    env = {**os.environ, "SPARTAN_HOME": str(tmp_path), "JUPYTER_TOKEN": TOKEN,
           "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime"), "MAKEFLAGS": ""}
    server = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_PORT={port}", "LAB_ARGS=--no-browser"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, preexec_fn=_defaults)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert server.poll() is None, f"make lab exited {server.returncode}:\n{server.stdout.read()}"
            try:
                if _get(f"{base}/api/status")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield base, tmp_path
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()


def test_make_lab_serves_the_workspace_and_opens_on_the_notebooks(lab):
    base, home = lab
    status, url, body = _get(f"{base}/lab")
    assert status == 200 and "JupyterLab" in body
    status, location, _ = _get(f"{base}/", follow=False)
    assert status == 302 and location.startswith("/lab/tree/notebooks"), "Lab opens on notebooks/"
    root = json.loads(_get(f"{base}/api/contents")[2])
    assert {"notebooks", "reports", "params", "data"} <= {item["name"] for item in root["content"]}
    params = json.loads(_get(f"{base}/api/contents/params")[2])
    assert {"daily.yaml", "base.yaml", "promoted"} <= {item["name"] for item in params["content"]}
    runs = json.loads(_get(f"{base}/api/contents/reports/runs/r1")[2])
    assert [item["name"] for item in runs["content"]] == ["tearsheet.html"]
    status, _, page = _get(f"{base}/files/reports/runs/r1/tearsheet.html")
    assert status == 200 and "a tearsheet" in page, "a tearsheet opens from Lab's file browser"
    notebooks = json.loads(_get(f"{base}/api/contents/notebooks")[2])
    assert "01_load_data.ipynb" in {item["name"] for item in notebooks["content"]}
    assert (home / "reports").is_dir() and (home / "data").is_dir()
