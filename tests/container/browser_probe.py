"""Run on a lab laptop as the operator (python3, stdlib only; the test streams this file over SSH): ask a real
browser, started headless, for its own view of the managed policies. Prints one JSON object.

  python3 - chromium URL       Chromium's chrome://policy (the values, their source and any error) read through
                               the DevTools protocol over a pipe (--remote-debugging-pipe: fds 3 and 4,
                               NUL-terminated JSON), and what loading URL gave, with a screenshot (PNG, base64)
  python3 - firefox URL        Firefox's enterprise policy engine (Services.policies: its status and active
                               policies) and the DNS-over-HTTPS preferences it set, read through Marionette
                               (length-prefixed JSON on loopback), and what loading URL gave, with a screenshot
(Headless `--screenshot` does not do here: Chromium's writes nothing when the load fails, as a blocked one does,
and Firefox's did not return within 5 minutes in the lab.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# chrome://policy's own page script gets every policy with its value, source and error from the browser.
CHROMIUM_POLICIES = """
import('chrome://resources/js/cr.js').then(cr => new Promise(done => {
  cr.addWebUiListener('policies-updated', (names, values) => done(JSON.stringify(values)));
  chrome.send('listenPoliciesUpdates');
  setTimeout(() => done('null'), 10000);
}))
"""
FIREFOX_ENGINE = """
const p = Services.prefs;
return JSON.stringify({status: Services.policies.status, active: Services.policies.getActivePolicies(),
  trr_mode: p.getIntPref('network.trr.mode'), trr_mode_locked: p.prefIsLocked('network.trr.mode'),
  trr_uri: p.getStringPref('network.trr.uri', '')});
"""


def chromium(url: str) -> dict:
    profile = tempfile.mkdtemp(prefix="probe-chromium-")
    to_browser, from_browser = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        a, b = os.dup(to_browser[0]), os.dup(from_browser[1])   # above 4, so dup2 overwrites neither source
        os.dup2(a, 3)
        os.dup2(b, 4)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execvp("chromium", ["chromium", "--headless", "--disable-gpu", "--remote-debugging-pipe",
                               f"--user-data-dir={profile}", "about:blank"])
    os.close(to_browser[0])
    os.close(from_browser[1])
    buf, counter = b"", iter(range(1, 10_000))

    def call(method, params=None, session=None):
        nonlocal buf
        mid = next(counter)
        msg = {"id": mid, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(to_browser[1], json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in buf:
                chunk = os.read(from_browser[0], 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed its pipe")
                buf += chunk
            raw, _, buf = buf.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == mid:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(session, expression):
        res = call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                   session)
        return res.get("result", {}).get("value")

    def open_page(target_url):
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Page.enable", session=session)
        call("Emulation.setDeviceMetricsOverride", {"width": 640, "height": 360, "deviceScaleFactor": 1,
                                                    "mobile": False}, session)
        nav = call("Page.navigate", {"url": target_url}, session)
        time.sleep(1.5)
        return session, nav

    out = {}
    session, _ = open_page("chrome://policy")
    out["policies"] = json.loads(evaluate(session, CHROMIUM_POLICIES) or "null")
    session, nav = open_page(url)
    out["load_error"] = nav.get("errorText")   # e.g. net::ERR_BLOCKED_BY_ADMINISTRATOR
    out["text"] = evaluate(session, "document.body ? document.body.innerText : ''")
    out["png"] = call("Page.captureScreenshot", {"format": "png"}, session)["data"]   # what the operator sees
    try:
        call("Browser.close")
    except RuntimeError:
        pass
    os.waitpid(pid, 0)
    shutil.rmtree(profile, ignore_errors=True)
    return out


def firefox(url: str) -> dict:
    profile = tempfile.mkdtemp(prefix="probe-firefox-")
    port = 2828 + os.getpid() % 1000
    with open(os.path.join(profile, "user.js"), "w") as fh:
        fh.write(f'user_pref("marionette.port", {port});\n')
    # -remote-allow-system-access: Firefox 138+ runs Marionette scripts in the browser's own (chrome)
    # context only with it; that is where the enterprise policy engine answers.
    proc = subprocess.Popen(["firefox-esr", "--headless", "--marionette", "-remote-allow-system-access",
                             "--no-remote", "--profile", profile], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=120)
            break
        except OSError:
            time.sleep(0.5)
    else:
        raise RuntimeError("Marionette never listened")
    buf, counter = b"", iter(range(1, 10_000))

    def receive():
        nonlocal buf
        while b":" not in buf:
            buf += sock.recv(1 << 16)
        size, _, rest = buf.partition(b":")
        while len(rest) < int(size):
            rest += sock.recv(1 << 16)
        buf = rest[int(size):]
        return json.loads(rest[:int(size)])

    def call(name, params):
        mid = next(counter)
        data = json.dumps([0, mid, name, params]).encode()
        sock.sendall(str(len(data)).encode() + b":" + data)
        while True:
            reply = receive()
            if reply[1] == mid:
                return reply[2], reply[3]

    receive()   # the server's greeting
    call("WebDriver:NewSession", {})
    call("WebDriver:SetWindowRect", {"width": 640, "height": 400})
    error, _ = call("WebDriver:Navigate", {"url": url})
    # An error page first shows the generic title; its own script then names the error ("Blocked Page").
    # Under a loaded host that second step can come after Navigate returns, so wait for it (60 s at most).
    title = call("WebDriver:GetTitle", {})[1]["value"]
    for _ in range(120):
        if not error or title != "Problem loading page":
            break
        time.sleep(0.5)
        title = call("WebDriver:GetTitle", {})[1]["value"]
    out = {"load_error": (error or {}).get("message"),
           "title": title,
           "png": call("WebDriver:TakeScreenshot", {"full": False})[1]["value"]}   # what the operator sees
    call("Marionette:SetContext", {"value": "chrome"})
    error, result = call("WebDriver:ExecuteScript", {"script": FIREFOX_ENGINE, "args": []})
    out["engine"] = json.loads(result["value"]) if result else {"error": error}
    try:
        call("Marionette:Quit", {"flags": ["eForceQuit"]})
    except OSError:
        pass
    proc.wait(timeout=60)
    shutil.rmtree(profile, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps({"chromium": chromium, "firefox": firefox}[sys.argv[1]](sys.argv[2])))
