"""Open report.html in headless Chromium (Debian's ``chromium``; `make test` installs it): no console errors,
no failed loads, no broken images; a screenshot is saved in the test's tmp folder.

Talks the DevTools protocol over ``--remote-debugging-pipe`` (fds 3/4, NUL-separated JSON) with only the
standard library, so console messages, log entries and exceptions are observed directly.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from nclab.report import write_compare_report, write_report
from test_report_rundirs import make_run

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


class Chromium:
    """A headless Chromium driven over the DevTools pipe."""

    def __init__(self, profile: Path):
        cmd_r, cmd_w = os.pipe()  # we write commands -> chromium reads fd 3
        ev_r, ev_w = os.pipe()  # chromium writes fd 4 -> we read

        def child_fds():  # dup first: a pipe end may already sit on fd 3 or 4 (with close-on-exec set)
            a, b = os.dup(cmd_r), os.dup(ev_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=child_fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(ev_w)
        self.w, self.r = cmd_w, ev_r
        self.buf, self.next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, sid: str | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if sid:
            msg["sessionId"] = sid
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == msg["id"]:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            if select.select([self.r], [], [], left)[0]:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe (did it start?)")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            os.write(self.w, json.dumps({"id": 10**9, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self.w)
            os.close(self.r)


def load_page(html: Path, tmp: Path, shot: Path) -> dict:
    """Load ``html``; return image states, error events and the page's height; save a 1280x2000 screenshot."""
    br = Chromium(tmp / "profile")
    try:
        target = br.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = br.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            br.send(f"{domain}.enable", sid=s)
        br.send("Emulation.setDeviceMetricsOverride",
                {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False}, sid=s)
        br.send("Page.navigate", {"url": html.resolve().as_uri()}, sid=s)
        br.wait_event("Page.loadEventFired")
        expr = ("JSON.stringify({imgs: Array.from(document.images).map(i => [i.complete, i.naturalWidth, "
                "i.getAttribute('data-file')]), height: document.documentElement.scrollHeight, "
                "title: document.title})")
        page = json.loads(br.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                                  sid=s)["result"]["value"])
        shot.write_bytes(base64.b64decode(br.send("Page.captureScreenshot", {"format": "png"}, sid=s)["data"]))
        errors = [e for e in br.events if e.get("method") in ("Runtime.exceptionThrown", "Network.loadingFailed")
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))]
        requests = [e["params"]["request"]["url"] for e in br.events if e.get("method") == "Network.requestWillBeSent"]
        return {**page, "errors": errors, "requests": requests}
    finally:
        br.close()


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian package `chromium`; `make test` installs it where it can)")
    return CHROMIUM


def _check(html: Path, tmp: Path) -> dict:
    shot = tmp / "report.png"
    page = load_page(html, tmp, shot)
    assert page["errors"] == [], page["errors"]
    assert page["imgs"], "no images in the report"
    broken = [f for complete, width, f in page["imgs"] if not (complete and width > 0)]
    assert broken == [], f"broken images: {broken}"
    # only the page itself and its data: URIs were requested — nothing from the network
    assert all(u.startswith(("file://", "data:")) for u in page["requests"]), page["requests"]
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        # the screenshot shows a page, not a blank: more than a handful of distinct colours
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 50
    return page


def test_report_loads_cleanly_in_chromium(chromium, tmp_path):
    run = make_run(tmp_path / "hand", status="stopped_nan", grid=True)
    page = _check(write_report(run, strict=True), tmp_path)
    assert page["title"].startswith("nclab report") and page["height"] > 2000
    assert len(page["imgs"]) == len(list((run / "figures").glob("*.png")))


def test_compare_report_loads_cleanly_in_chromium(chromium, tmp_path):
    a = make_run(tmp_path / "a", features=False)
    b = make_run(tmp_path / "b", epochs=3, features=False)
    (tmp_path / "cmp").mkdir()
    _check(write_compare_report([a, b], tmp_path / "cmp", strict=True), tmp_path / "cmp")
