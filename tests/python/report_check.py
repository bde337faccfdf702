"""Open a mixforge HTML report in Debian's headless Chromium and check it as a reader sees it.

Usage: python report_check.py INDEX_HTML SCREENSHOT_PNG

The report must work offline, from a file, on its own. Checks:
  - the console has no SEVERE message (nor a WARNING about a failed load): the page's
    scripts ran cleanly and every resource it names loaded;
  - there is at least one <figure>, each holds an <svg>, and every such svg is rendered
    with a non-zero width and height: the charts are really drawn;
  - no request leaves the page (performance log: only file:, data: and about: URLs):
    the report is self-contained and leaks nothing;
  - no @font-face declared in the page fails to load (each face is asked to load, so a
    broken font shows up even where the text that uses it is hidden); the loaded families
    are reported.
Then it saves a full-page screenshot, prints one JSON object and exits 0 if all is well, else 1.
Needs scripts/setup-browser (chromium, chromium-driver, selenium); never downloads a driver.
"""

import json
import os
import re
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

FIGURES_JS = """
return Array.from(document.querySelectorAll('figure'), (fig, i) => {
  const cap = fig.querySelector('figcaption');
  const name = fig.id || (cap && cap.textContent.trim()) || ('figure #' + (i + 1));
  const svgs = Array.from(fig.querySelectorAll('svg'), s => {
    const r = s.getBoundingClientRect();
    return [r.width, r.height];
  });
  return {name: name, svgs: svgs};
});
"""

FONTS_JS = """
const done = arguments[arguments.length - 1];
const faces = Array.from(document.fonts);
Promise.allSettled(faces.map(f => f.load())).then(() => document.fonts.ready).then(() =>
  done({status: document.fonts.status,
        faces: faces.map(f => ({family: f.family.replace(/^["']|["']$/g, ''),
                                status: f.status}))}));
"""


def main(index_html, screenshot):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_window_size(1280, 2000)
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        driver.get("file://" + os.path.abspath(index_html))
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")

        fonts = driver.execute_async_script(FONTS_JS)
        figures = driver.execute_script(FIGURES_JS)
        bad_figures = []
        for fig in figures:
            if not fig["svgs"]:
                bad_figures.append(f"{fig['name']}: no <svg>")
            elif any(w <= 0 or h <= 0 for w, h in fig["svgs"]):
                sizes = ", ".join(f"{w:g}x{h:g}" for w, h in fig["svgs"])
                bad_figures.append(f"{fig['name']}: svg rendered at {sizes}")

        console_errors = [
            f"{e['level']}: {e['message']}" for e in driver.get_log("browser")
            if e["level"] == "SEVERE" or (
                e["level"] == "WARNING"
                and re.search(r"fail(ed)? to load|net::ERR_", e["message"], re.I))]

        external = []
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                url = msg["params"]["request"]["url"]
                if not url.startswith(("file://", "data:", "about:")) and url not in external:
                    external.append(url)

        font_errors = [f"font-face '{f['family']}' failed to load"
                       for f in fonts["faces"] if f["status"] == "error"]
        loaded = sorted({f["family"] for f in fonts["faces"] if f["status"] == "loaded"})

        # Content height (not the viewport's), and the window made tall enough that the
        # viewport, below the window's own frame, shows all of it.
        height, frame = driver.execute_script(
            "const h = Math.max(document.documentElement.getBoundingClientRect().height,"
            " document.body ? document.body.scrollHeight : 0);"
            "return [Math.ceil(h), window.outerHeight - window.innerHeight];")
        height = min(height, 20000)
        driver.set_window_size(1280, max(height, 100) + frame)
        driver.save_screenshot(screenshot)
    finally:
        driver.quit()

    result = {
        "ok": bool(figures) and not (bad_figures or console_errors or external or font_errors),
        "figures": len(figures),
        "console_errors": console_errors,
        "bad_figures": bad_figures if figures else ["no <figure> in the page"],
        "external_requests": external,
        "fonts": loaded,
        "fonts_status": fonts["status"],
        "font_errors": font_errors,
        "screenshot": screenshot,
        "page_height": height,
    }
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
