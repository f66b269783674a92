"""The dashboard in a real browser (headless Chromium) against a real hub.

A server and a worker of this build run on a fresh SQLite file and Redis
namespace, a receiver on 127.0.0.1 takes the deliveries, and messages are
published with the `switch` CLI. The browser signs in, creates subscribers
through the forms, sees a delivery on the message's page and in the live
tail, and replays a dead letter. Nothing leaves 127.0.0.1: the browser's
other traffic goes to a proxy that does not exist.

Screenshots go to $SWITCH_SCREENSHOT_DIR (default target/browser-screenshots);
`make screenshots` writes the README's into docs/screenshots.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SWITCH_BIN_DIR", ROOT / "target" / "debug"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = Path(os.environ.get("SWITCH_SCREENSHOT_DIR", ROOT / "target" / "browser-screenshots"))
WAIT = 20  # seconds any one step may take

# Selenium must use the Debian browser and driver, never fetch its own.
os.environ.setdefault("SE_OFFLINE", "true")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jwt(secret, claims):
    """An HS256 token, as the hub's publishers sign them."""
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = enc(json.dumps(claims).encode())
    sig = enc(hmac.new(secret.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def wait_until(what, check, timeout=WAIT, every=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Hub:
    """A server and a worker of this build, on their own database and namespace."""

    def __init__(self, work):
        for name in ("switch-server", "switch-worker", "switch"):
            if not (BIN / name).exists():
                pytest.fail(f"{BIN / name} is missing: cargo build -p switch-server -p switch-worker -p switch-cli")
        self.secret = "browser-" + secrets.token_hex(12)
        self.namespace = "browser" + secrets.token_hex(5)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.work = work
        keep = ("PATH", "HOME", "LANG", "RUST_BACKTRACE")
        self.env = {k: v for k, v in os.environ.items() if k in keep}
        self.env.update(
            {
                "SWITCH_JWT_SECRET": self.secret,
                "SWITCH_DATABASE_URL": f"sqlite://{work}/switch.db",
                "SWITCH_REDIS_URL": os.environ.get("SWITCH_REDIS_URL", "redis://127.0.0.1:6379"),
                "SWITCH_QUEUE_NAMESPACE": self.namespace,
                "SWITCH_SERVER_ADDR": f"127.0.0.1:{port}",
                "SWITCH_WORKER_METRICS_ADDR": f"127.0.0.1:{free_port()}",
                "SWITCH_REFRESH_INTERVAL": "500ms",
                # Three quick attempts, so a failing subscriber makes a dead letter in a second.
                "SWITCH_RETRY_SCHEDULE": "200ms,200ms",
                "SWITCH_DELIVERY_TIMEOUT": "5s",
                "RUST_LOG": "warn",
            }
        )
        self.processes = []
        self.server = self.start("switch-server")
        wait_until("the server's /health", self.healthy, timeout=30)
        self.worker = self.start("switch-worker")
        self.token = jwt(self.secret, {"author": "ops", "scope": "admin publish", "exp": int(time.time()) + 3600})

    def start(self, name):
        log = open(self.work / f"{name}.log", "wb")
        p = subprocess.Popen([str(BIN / name)], cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((p, log))
        return p

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def api(self, method, path, body=None):
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def cli_publish(self, topic, body, *args):
        """`switch publish`, as a person would type it; returns the message id."""
        env = {**self.env, "SWITCH_URL": self.url}
        out = subprocess.run(
            [str(BIN / "switch"), "publish", topic, "--body", json.dumps(body), *args],
            env=env, cwd=self.work, capture_output=True, text=True, timeout=30, check=True,
        )
        return json.loads(out.stdout)["message_id"]

    def stop(self):
        for p, _ in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, log in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()
        if shutil.which("redis-cli"):
            keys = subprocess.run(
                ["redis-cli", "--scan", "--pattern", f"{{{self.namespace}}}*"],
                capture_output=True, text=True, timeout=30,
            ).stdout.split()
            for i in range(0, len(keys), 500):
                subprocess.run(["redis-cli", "del", *keys[i : i + 500]], capture_output=True, timeout=30)


class Receiver:
    """An HTTP receiver on 127.0.0.1: `/ok` answers 200; `/fail` answers
    `fail_status` (500 until the test says otherwise). Records every request."""

    def __init__(self):
        self.requests = []
        self.fail_status = 500
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = me.fail_status if self.path.startswith("/fail") else 200
                me.requests.append((self.path, dict(self.headers), body, status))
                answer = b"ok" if status < 300 else b"payment service unavailable"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def got(self, path, message_id, status=200):
        return [
            r for r in self.requests
            if r[0].startswith(path) and r[1].get("webhook-id") == message_id and r[3] == status
        ]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = Hub(tmp_path_factory.mktemp("hub"))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Chromium and its driver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1360,900",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-pings",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        # Loopback goes direct; anything else would meet a proxy that is not there.
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def text(driver):
    return driver.find_element(By.TAG_NAME, "body").text


def click_through(driver, button):
    """Clicks a button or link that loads another page, and waits for that page."""
    button.click()

    def gone(_):
        # Chromium may answer a question about a node of the page being left
        # with "does not belong to the document" rather than a stale
        # reference: either way the old page is gone.
        try:
            button.is_enabled()
            return False
        except (StaleElementReferenceException, WebDriverException):
            return True

    WebDriverWait(driver, WAIT).until(gone)


def enter_token(driver, token):
    field = driver.find_element(By.NAME, "token")
    field.clear()
    field.send_keys(token)
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "form.sign-in button"))


def sign_in(driver, hub):
    driver.get(hub.url + "/ui")
    if "Sign out" not in text(driver):
        enter_token(driver, hub.token)
    assert "Sign out" in text(driver)


def shoot(driver, name):
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def create_subscriber(driver, hub, topic, target, filter_expression="", description=""):
    driver.get(hub.url + "/ui/subscribers")
    click_through(driver, driver.find_element(By.LINK_TEXT, "New subscriber"))
    driver.find_element(By.ID, "topic").send_keys(topic)
    driver.find_element(By.ID, "target_url").send_keys(target)
    if filter_expression:
        driver.find_element(By.ID, "filter_expression").send_keys(filter_expression)
    if description:
        driver.find_element(By.ID, "description").send_keys(description)
    click_through(driver, driver.find_element(By.XPATH, "//button[text()='Create subscriber']"))
    assert "Subscriber created." in text(driver)
    return int(driver.current_url.split("/ui/subscribers/")[1].split("?")[0])


def message_state(driver, hub, message_id, subscriber_id):
    """The state the message's page shows for one subscriber."""
    driver.get(f"{hub.url}/ui/messages/{message_id}")
    for row in driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        if cells and cells[0].text == str(subscriber_id):
            return cells[2].text
    return None


def test_sign_in_needs_an_admin_token(browser, hub):
    browser.delete_all_cookies()
    browser.get(hub.url + "/ui/subscribers")
    assert browser.current_url.startswith(hub.url + "/ui?next="), "sent to sign in"
    enter_token(browser, "not-a-token")
    assert "This token was refused" in text(browser)
    enter_token(browser, jwt(hub.secret, {"author": "p", "scope": "publish"}))
    assert "no admin scope" in text(browser)
    assert browser.get_cookie("switch_session") is None

    browser.get(hub.url + "/ui/subscribers")
    enter_token(browser, hub.token)
    assert browser.current_url == hub.url + "/ui/subscribers"
    cookie = browser.get_cookie("switch_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert browser.execute_script("return document.cookie") == "", "no script can read the session"

    browser.get(hub.url + "/ui")
    # The script polls the hub's counters and shows rates from the second poll on.
    WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "[data-rate=published]").text.endswith("/s")
    )
    assert "Queue: ready" in text(browser) and "Oldest pending job" in text(browser)


def test_a_delivery_shows_on_its_message_page_and_in_the_live_tail(browser, hub, receiver):
    sign_in(browser, hub)
    sid = create_subscriber(
        browser, hub, "orders.*", receiver.url + "/ok/:id", "body.total > 100", "orders over 100"
    )
    assert hub.api("GET", f"/subscribers/{sid}")[1]["filter_expression"] == "body.total > 100"

    # The live tail is open before the publish, and shows it.
    browser.get(hub.url + "/ui/tail?topic=orders.%23")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "tail-status").text.startswith("Live"))
    mid = hub.cli_publish("orders.created", {"id": 42, "total": 150}, "--path-param", "id=42")
    WebDriverWait(browser, WAIT).until(lambda d: mid in d.find_element(By.ID, "tail-rows").text)
    shoot(browser, "live-tail")
    wait_until("the delivery", lambda: receiver.got("/ok/42", mid))

    # Messages: search by pattern, open the message, see it delivered.
    browser.get(hub.url + "/ui/messages")
    browser.find_element(By.NAME, "topic").send_keys("orders.#")
    click_through(browser, browser.find_element(By.XPATH, "//button[text()='Search']"))
    assert "orders.%23" in browser.current_url
    wait_until("the message in the log", lambda: mid in (browser.refresh() or text(browser)))
    click_through(browser, browser.find_element(By.LINK_TEXT, mid))
    assert wait_until("delivered", lambda: message_state(browser, hub, mid, sid) == "delivered")
    assert "matched" in browser.find_element(By.ID, "explain").text
    shoot(browser, "message")


def test_a_dead_letter_is_replayed_from_the_dashboard(browser, hub, receiver):
    sign_in(browser, hub)
    sid = create_subscriber(browser, hub, "payments.*", receiver.url + "/fail", "", "payments (failing)")
    mid = hub.cli_publish("payments.refused", {"id": 7, "amount": 12.5})
    wait_until("three failed attempts", lambda: len(receiver.got("/fail", mid, status=500)) == 3)

    browser.get(f"{hub.url}/ui/dead-letters")
    row = wait_until(
        "the dead letter",
        lambda: next(
            (r for r in (browser.refresh() or browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")) if mid in r.text),
            None,
        ),
    )
    assert "Replay" in row.text
    shoot(browser, "dead-letters")
    assert message_state(browser, hub, mid, sid) == "dead"

    receiver.fail_status = 200
    browser.get(f"{hub.url}/ui/dead-letters?subscriber_id={sid}")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr") if mid in r.text)
    click_through(browser, row.find_element(By.XPATH, ".//button[text()='Replay']"))
    assert "Dead letter replayed" in text(browser)
    wait_until("the replayed delivery", lambda: receiver.got("/fail", mid, status=200))
    assert wait_until("delivered after the replay", lambda: message_state(browser, hub, mid, sid) == "delivered")
    status, letters = hub.api("GET", f"/dead-letters?subscriber_id={sid}")
    assert status == 200 and letters["items"][0]["replayed_at"], letters


def test_overview_and_subscribers_under_traffic(browser, hub, receiver):
    """The README's overview and subscribers screenshots, with figures moving."""
    sign_in(browser, hub)
    for topic, path, description in [
        ("billing.#", "/ok/billing", "billing feed"),
        ("users.signed_up", "/ok/crm", "CRM sync"),
        ("inventory.*.low", "/ok/stock", "stock alerts"),
    ]:
        hub.api("POST", "/subscribers", {"topic": topic, "target_url": receiver.url + path, "description": description})
    stop = threading.Event()

    def publish():
        n = 0
        while not stop.is_set():
            hub.api(
                "POST",
                "/publish",
                {"topic": "orders.created", "body": {"id": n, "total": 120 + n % 50}, "path_params": {"id": str(n)}},
            )
            hub.api("POST", "/publish", {"topic": "billing.invoice.paid", "body": {"invoice": n}})
            n += 1
            time.sleep(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        browser.get(hub.url + "/ui")
        WebDriverWait(browser, WAIT).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "[data-rate=published]").text not in ("…", "0/s")
        )
        time.sleep(2.5)
        assert browser.find_element(By.CSS_SELECTOR, "[data-rate=delivered]").text.endswith("/s")
        shoot(browser, "overview")
    finally:
        stop.set()
        publisher.join(timeout=10)
    browser.get(hub.url + "/ui/subscribers")
    rows = browser.find_elements(By.CSS_SELECTOR, "#subscribers tbody tr")
    assert len(rows) == 5, [r.text for r in rows]
    shoot(browser, "subscribers")
