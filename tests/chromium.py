"""A headless Chromium driven over the DevTools protocol, to read the built book as a reader would.

Only what the browser test needs: open a local page with the network cut off, let its scripts
(MathJax) finish, report what the page requested, logged or failed to load, and take a full-page
screenshot. Chromium listens on 127.0.0.1 (the only host the tests may reach) and is driven with
``websocket-client``; no browser is downloaded, Debian's ``chromium`` package is used.

Run by hand on a real build: ``python tests/chromium.py book/_build/html [OUT_DIR]`` writes one
screenshot per page and prints what each page would fail in the test.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")

# Waits in the page for what a reader waits for: MathJax's first typeset (if the page loads it)
# and every image. Returns what the test checks, computed after both.
_SETTLE_JS = """
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const usesMathJax = [...document.scripts].some((s) => /mathjax/i.test(s.src));
  if (usesMathJax) {
    for (let i = 0; i < 200 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
      await sleep(50);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  }
  await Promise.all([...document.images].map((img) => img.complete ? null :
    new Promise((r) => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  await document.fonts.ready;
  // Raw TeX a reader would see: text outside code listings that still holds a delimiter.
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre, code, script, style, mjx-assistive-mml')) continue;
    if (/\\\\[(\\[]|\\\\begin\\{/.test(n.textContent)) raw.push(n.textContent.trim().slice(0, 80));
  }
  const math = [...document.querySelectorAll('.math')];
  return {
    usesMathJax,
    mathElements: math.length,
    untypeset: math.filter((m) => !m.querySelector('mjx-container')).length,
    mjxContainers: document.querySelectorAll('mjx-container').length,
    rawTex: raw,
    brokenImages: [...document.images].filter((i) => !(i.naturalWidth > 0)).map((i) => i.src),
    images: document.images.length,
    height: Math.ceil(document.documentElement.scrollHeight),
  };
})()
"""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    url: str
    checks: dict[str, Any]
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def external_requests(self) -> list[str]:
        """Requests that did not stay on the file system (inline data and blobs are local)."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "blob:", "about:"))]


class Chromium:
    """One headless Chromium and one tab, offline; use as a context manager."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900) -> None:
        self.executable = executable
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        import websocket

        self._profile = tempfile.mkdtemp(prefix="clipnb-chromium-")
        self._proc = subprocess.Popen(
            [
                self.executable,
                "--headless",
                "--no-sandbox",  # tests run as root in CI, where the sandbox refuses to start
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                # No name resolves: even a request the offline emulation missed cannot leave.
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._wait_for_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t["type"] == "page")
        # No Origin header: Chromium refuses websocket clients that claim a web origin.
        self._ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
        )
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Network.emulateNetworkConditions",
            offline=True,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=-1,
        )
        self._metrics(self.height)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._ws.close()
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            shutil.rmtree(self._profile, ignore_errors=True)

    def _wait_for_port(self, timeout: float = 30.0) -> int:
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.executable} exited with code {self._proc.returncode}")
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text().split()[0])
            time.sleep(0.1)
        raise RuntimeError(f"{self.executable} opened no DevTools port within {timeout:.0f} s")

    def _receive(self) -> dict[str, Any]:
        return json.loads(self._ws.recv())

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result; events that arrive meanwhile are kept."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = self._receive()
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def _wait_event(self, method: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self._events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout:.0f} s")
            self._events.append(self._receive())

    def open(self, path: Path) -> PageReport:
        """Load a local page, let its scripts finish and report what it did."""
        self._events.clear()
        url = path.resolve().as_uri()
        self.send("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired")
        result = self.send(
            "Runtime.evaluate", expression=_SETTLE_JS, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{url}: {result['exceptionDetails']}")
        report = PageReport(url, result["result"]["value"])
        for event in self._events:
            method, params = event["method"], event.get("params", {})
            if method == "Network.requestWillBeSent":
                report.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                text = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]
                )
                report.errors.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description", details.get("text", ""))
                report.errors.append(f"uncaught: {text}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                report.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                report.errors.append(f"failed to load: {params.get('errorText')}")
        return report

    def screenshot(self, out: Path, height: int) -> None:
        """The whole page, not only the first screen, as a PNG.

        The viewport is made as tall as the page for the capture (Chromium's capture "beyond the
        viewport" shifted wide pages sideways), then set back.
        """
        self._metrics(max(height, 1))
        try:
            data = self.send("Page.captureScreenshot", format="png")["data"]
        finally:
            self._metrics(self.height)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))

    def _metrics(self, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )


def is_redirect(page: Path) -> bool:
    """A stub that only forwards the reader (Jupyter Book's ``index.html`` -> the root page).

    Its target is checked as a page of its own; loading the stub races with the forward.
    """
    return 'http-equiv="refresh"' in page.read_text(errors="replace")[:500].lower()


def book_pages(html: Path) -> list[Path]:
    """The built pages a reader can open: not theme fragments under ``_static``, not redirects."""
    return sorted(
        p
        for p in html.rglob("*.html")
        if "_static" not in p.relative_to(html).parts and not is_redirect(p)
    )


def main(argv: list[str]) -> int:
    html = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else html.parent / "screenshots"
    exe = find_chromium()
    if exe is None:
        print("No chromium found: apt-get install chromium", file=sys.stderr)
        return 2
    with Chromium(exe) as browser:
        for page in book_pages(html):
            report = browser.open(page)
            name = page.relative_to(html).with_suffix(".png").as_posix().replace("/", "__")
            browser.screenshot(out / name, report.checks["height"])
            print(page.relative_to(html), report.checks, report.external_requests, report.errors)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
