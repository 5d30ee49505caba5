"""A minimal client of headless Chromium over the DevTools protocol (a
websocket on loopback) that opens a page of the built book and reports what
it shows: the browser test's driver and the printer of tools/book_pdf.py."""
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import websocket

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1280, 900)  # a laptop: the article column is about 690 px wide
PAGE_TIMEOUT = 60     # seconds for one page to load and typeset its math

REDIRECT = re.compile(r'http-equiv="refresh" content="\d+;\s*url=([^"]+)"',
                      re.I)
EMPTY = dict(mathjax=False, math=0, untypeset=[], math_errors=[],
             broken_images=[], links=[], scrolls=[],
             cjk=dict(chars="", distinct=0))

# Runs in the page once it has loaded and MathJax has typeset it.
PROBE = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const article = document.querySelector('article') || document.body;
  const describe = e => e.tagName.toLowerCase() + '.' +
      [...e.classList].join('.') + ' "' +
      (e.textContent || '').trim().slice(0, 60) + '"';
  const math = [...article.querySelectorAll('.math')];
  const scrolls = [...article.querySelectorAll('*')].filter(e => {
    const style = getComputedStyle(e);
    return ['auto', 'scroll'].includes(style.overflowX) &&
           e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0;
  });
  return {
    mathjax: !!(window.MathJax && MathJax.version),
    math: math.length,
    untypeset: math.filter(e => !e.querySelector('mjx-container'))
                   .map(describe),
    math_errors: [...article.querySelectorAll('mjx-merror')]
                   .map(e => e.getAttribute('data-mjx-error') || describe(e)),
    broken_images: [...document.images]
        .filter(i => !(i.complete && i.naturalWidth > 0))
        .map(i => i.getAttribute('src')),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    scrolls: scrolls.map(e => describe(e) + ' ' + e.scrollWidth + '>' +
                         e.clientWidth + ' px'),
    cjk: glyphs(),
  };
})()
"""
# Part of PROBE: draw each distinct CJK character of the page (up to 40) in
# the article's font on a canvas. Without a CJK font every one of them is
# the same empty box, so the number of distinct drawings tells.
GLYPHS = r"""
const glyphs = () => {
  const text = document.body.innerText;
  const chars = [...new Set(text.match(/[\u3400-\u9fff]/g) || [])]
                .slice(0, 40);
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 40;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const family = getComputedStyle(
      document.querySelector('article') || document.body).fontFamily;
  const drawn = chars.map(c => {
    ctx.clearRect(0, 0, 40, 40);
    ctx.font = '32px ' + family;
    ctx.fillText(c, 2, 34);
    return Array.from(ctx.getImageData(0, 0, 40, 40).data).join(',');
  });
  return {chars: chars.join(''), distinct: new Set(drawn).size};
};
"""


class DevTools:
    """A minimal DevTools-protocol client: one browser, one page at a time."""

    def __init__(self, timeout=PAGE_TIMEOUT):
        """Start Chromium; `timeout` is in seconds, for it to start and for
        each page to load and typeset its math."""
        self.timeout = timeout
        # Chromium's helper processes can still write to the profile after
        # the browser exits; a leftover folder in /tmp must not fail a run
        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        # a file: a pipe could fill up
        log = Path(self.profile.name) / "chromium.log"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile.name}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + self.timeout
        url = None
        while url is None:  # chromium prints "DevTools listening on ws://..."
            match = re.search(r"(ws://\S+)", log.read_text())
            url = match and match.group(1)
            if url is None and (self.process.poll() is not None
                                or time.monotonic() > deadline):
                raise RuntimeError(f"{BROWSER} did not open a DevTools port: "
                                   f"{log.read_text()[-500:]}")
            time.sleep(0.1)
        self.events = []
        self.socket = websocket.create_connection(url, timeout=self.timeout)
        self.next_id = 0
        target = self.call("Target.createTarget", url="about:blank")
        self.session = self.call("Target.attachToTarget", flatten=True,
                                 targetId=target["targetId"])["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method, session=False, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = self.receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def receive(self):
        reply = json.loads(self.socket.recv())
        if reply.get("method"):
            self.events.append(reply)
        return reply

    def visit(self, path):
        """Load one page; return the probe's findings and the console
        errors."""
        redirect = REDIRECT.search(path.read_text(encoding="utf-8"))
        if redirect:  # index.html only forwards to the first page
            target = (path.parent / redirect.group(1)).resolve().as_uri()
            return dict(EMPTY, links=[target]), []
        self.events = []
        self.call("Page.navigate", session=True, url=path.as_uri())
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == "Page.loadEventFired"
                      for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{path.name} did not load in {self.timeout} s")
            self.receive()
        result = self.call("Runtime.evaluate", session=True,
                           expression=GLYPHS + PROBE,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"probe failed on {path.name}: " + details.get(
                "exception", {}).get("description", details["text"]))
        return result["result"]["value"], console_errors(self.events)

    def close(self):
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()
        self.profile.cleanup()


def console_errors(events):
    errors = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description")
                          or details.get("text"))
        elif event["method"] == "Runtime.consoleAPICalled" and \
                params.get("type") == "error":
            errors.append(" ".join(str(a.get("value", a.get("description")))
                                   for a in params.get("args", [])))
        elif event["method"] == "Log.entryAdded" and \
                params["entry"]["level"] == "error":
            errors.append(f"{params['entry']['text']} "
                          f"({params['entry'].get('url', '')})")
    return errors
