#!/usr/bin/env python3
"""Drives the web console in Debian's headless Chromium through Selenium
(a browser nobody here wrote); prints one JSON object.

usage: console.py BASE_URL CA_FILE SHOTS_DIR STEPS_JSON
  BASE_URL  https://127.0.0.1:PORT (the gateway's certificate is from the
            demo's CA; Chromium is told to accept it, requests checks it
            against CA_FILE)
  STEPS     a JSON list; each step one of:
    {"browser": "name"}                  switch to (or open) another browser
                                         (its own cookies; the first is "main")
    {"go": "/path"}                      open a page
    {"fill": {"name": "value", ...}}     type into the inputs with these names
    {"select": {"name": "option"}}       pick an option
    {"code": "BASE32"|"kept:NAME", "offset": S}
                                         type pyotp's code (now + S, default 30 s) into `code`
    {"click": "Button text"}             press the button (or link) with this text
    {"click_in_row": ["text", "Button"]} press the button in the table row showing text
    {"see": "text"}                      wait (15 s) until the page shows it
    {"not_see": "text"}                  the page does not show it
    {"at": "/path"}                      the page's path is this
    {"shot": "name"}                     save SHOTS_DIR/name.png
    {"keep": "name", "id": "element"}    remember an element's text as NAME
    {"forge": "/path", "fields": {...}, "csrf": "page"|"none"|"wrong"}
                                         POST with requests and the browser's
                                         cookies (a forged form); records the
                                         status and body
    {"headers": "/path"}                 records the answer's headers (GET)
    {"cookies": true}                    records the browser's cookies
    {"fetch": "/path"}                   GET with the browser's cookies; records
                                         status, headers and the body's start
    {"wait": SECONDS}                    waits (an idle session)
    {"logins": {"user": U, "password": P, "times": N}}
                                         N logins by fresh clients (no browser);
                                         records each answer's status and body
    {"away": "/path"}                    waits (15 s) until the page is another
    {"element": "css selector"}          waits (15 s) until the page has one
    {"tick": "css selector"}             clicks the element (ticks or unticks a box)
    {"wait_in": ["css selector", "text"]} waits (15 s) until the element's text contains it
    {"run": ["argv", ...]}               runs a program meanwhile (another peer); records its output
    {"attr": ["css selector", "name"]}   records an attribute of the element
    {"console_errors": true}             records the browser console's errors
                                         (a script refused by the CSP, a failed load)
result: {"ok": true, "kept": {...}, "records": [...]}
      | {"ok": false, "step": N, "error": "...", "page": "...", "records": [...]}
"""
import json
import os
import subprocess
import sys
import tempfile
import time

try:
    import pyotp
    import requests
    from selenium import webdriver
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException, WebDriverException)
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:
    sys.exit(f"{e.name} is missing: apt-get install chromium chromium-driver; "
             "pip install 'selenium==4.27.1' 'pyotp==2.9.0' requests (.ci/run does)")


def browser(profile):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--ignore-certificate-errors", f"--user-data-dir={profile}", "--window-size=1280,900"]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def main():
    base, ca, shots, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    records, kept = [], {}
    drivers = {}

    def open_browser(name):
        b = browser(tempfile.mkdtemp(prefix=f"mg-chromium-{name}-"))
        b.set_page_load_timeout(30)
        drivers[name] = b
        return b

    d = open_browser("main")
    def body():
        # A page replaced while it is read: read the new one.
        for _ in range(20):
            try:
                return d.find_element(By.TAG_NAME, "body").text
            except (StaleElementReferenceException, NoSuchElementException, WebDriverException):
                # Also "node does not belong to the document": the page was
                # being replaced.
                time.sleep(0.1)
        return ""

    i = -1
    try:
        for i, st in enumerate(steps):
            if "browser" in st:
                d = drivers.get(st["browser"]) or open_browser(st["browser"])
            elif "go" in st:
                d.get(base + st["go"])
            elif "fill" in st:
                for name, value in st["fill"].items():
                    el = d.find_element(By.NAME, name)
                    el.clear()
                    el.send_keys(value)
            elif "select" in st:
                for name, value in st["select"].items():
                    Select(d.find_element(By.NAME, name)).select_by_visible_text(value)
            elif "code" in st:
                # A secret given, or one kept from the page ("kept:NAME").
                secret = kept[st["code"][5:]] if st["code"].startswith("kept:") else st["code"]
                el = d.find_element(By.NAME, "code")
                el.clear()
                el.send_keys(pyotp.TOTP(secret).at(time.time() + float(st.get("offset", 30))))
            elif "click" in st:
                t = st["click"]
                xp = f"//button[normalize-space()='{t}'] | //a[normalize-space()='{t}'] | //input[@type='submit' and @value='{t}']"
                d.find_element(By.XPATH, xp).click()
            elif "click_in_row" in st:
                row, t = st["click_in_row"]
                d.find_element(By.XPATH, f"//tr[td[contains(., '{row}')]]//button[normalize-space()='{t}']").click()
            elif "element" in st:
                WebDriverWait(d, 15).until(lambda _: d.find_elements(By.CSS_SELECTOR, st["element"]))
            elif "wait_in" in st:
                sel, want = st["wait_in"]
                WebDriverWait(d, 15).until(lambda _: want in d.find_element(By.CSS_SELECTOR, sel).text)
            elif "run" in st:
                p = subprocess.run(st["run"], capture_output=True, text=True, timeout=60)
                records.append({"run": st["run"][:2], "code": p.returncode, "stdout": p.stdout[:2000],
                                "stderr": p.stderr[:2000]})
            elif "tick" in st:
                d.find_element(By.CSS_SELECTOR, st["tick"]).click()
            elif "attr" in st:
                sel, name = st["attr"]
                records.append({"attr": name, "value": d.find_element(By.CSS_SELECTOR, sel).get_attribute(name)})
            elif "console_errors" in st:
                records.append([e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"])
            elif "see" in st:
                WebDriverWait(d, 15).until(lambda _: st["see"] in body())
            elif "not_see" in st:
                if st["not_see"] in body():
                    raise AssertionError(f"the page shows {st['not_see']!r}")
            elif "at" in st:
                path = "/" + d.current_url.split("/", 3)[3].split("?")[0] if d.current_url.count("/") >= 3 else "/"
                if path != st["at"]:
                    raise AssertionError(f"at {path}, not {st['at']}")
            elif "shot" in st:
                d.save_screenshot(os.path.join(shots, st["shot"] + ".png"))
            elif "keep" in st:
                kept[st["keep"]] = d.find_element(By.ID, st["id"]).text
            elif "forge" in st:
                jar = {c["name"]: c["value"] for c in d.get_cookies()}
                fields = dict(st.get("fields", {}))
                mode = st.get("csrf", "page")
                if mode == "page":
                    fields["csrf"] = d.find_element(By.NAME, "csrf").get_attribute("value")
                elif mode == "wrong":
                    fields["csrf"] = "not-the-token"
                r = requests.post(base + st["forge"], data=fields, cookies=jar, verify=ca, allow_redirects=False,
                                  timeout=20, headers={"Content-Type": "application/x-www-form-urlencoded"})
                records.append({"forge": st["forge"], "status": r.status_code, "body": r.text[:2000],
                                "location": r.headers.get("location")})
            elif "headers" in st:
                jar = {c["name"]: c["value"] for c in d.get_cookies()}
                r = requests.get(base + st["headers"], cookies=jar, verify=ca, allow_redirects=False, timeout=20)
                records.append({"headers": st["headers"], "status": r.status_code,
                                "values": {k.lower(): v for k, v in r.headers.items()}})
            elif "away" in st:
                WebDriverWait(d, 15).until(lambda _: not d.current_url.split("?")[0].endswith(st["away"]))
            elif "logins" in st:
                # Fresh clients (no browser) logging in one after another,
                # each keeping its session.
                statuses = []
                for _ in range(st["logins"]["times"]):
                    c = requests.Session()
                    c.verify = ca
                    c.trust_env = False
                    page = c.get(base + "/login").text
                    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                    r = c.post(base + "/login", data={"csrf": token, "user": st["logins"]["user"],
                                                       "password": st["logins"]["password"]}, allow_redirects=False)
                    statuses.append({"status": r.status_code, "body": r.text[:1000]})
                records.append({"logins": statuses})
            elif "wait" in st:
                time.sleep(float(st["wait"]))
            elif "fetch" in st:
                jar = {c["name"]: c["value"] for c in d.get_cookies()}
                r = requests.get(base + st["fetch"], cookies=jar, verify=ca, allow_redirects=False, timeout=30)
                records.append({"fetch": st["fetch"], "status": r.status_code, "body": r.text[:4000],
                                "values": {k.lower(): v for k, v in r.headers.items()}})
            elif "cookies" in st:
                records.append({"cookies": d.get_cookies()})
            else:
                raise ValueError(f"unknown step {st!r}")
        print(json.dumps({"ok": True, "kept": kept, "records": records}))
    except (Exception, TimeoutException) as e:
        try:
            page = body()
        except Exception:
            page = ""
        print(json.dumps({"ok": False, "step": i, "error": f"{type(e).__name__}: {e}", "page": page[:3000],
                          "url": d.current_url, "records": records, "kept": kept}))
    finally:
        for b in drivers.values():
            b.quit()


main()
