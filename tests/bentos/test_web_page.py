"""The web page at `/` against a real server, in headless Chromium."""

from __future__ import annotations

import pytest

from tests.bentos.browser import Browser, chromium_binary
from tests.bentos.test_service import post

pytestmark = pytest.mark.integration


def test_web_page_types_clicks_and_shows_the_summary(server):
    binary = chromium_binary()
    if binary is None:
        pytest.fail("the web page test needs headless Chromium: install Debian's `chromium` package")
    text = "alpha bravo charlie delta"
    expected = post(server.url, f'{{"texts": "{text}"}}').json()[0]["summary"]
    with Browser(binary) as browser:
        browser.goto(f"{server.url}/", ready="document.getElementById('go')")
        browser.type_into("#text", text)
        assert browser.eval("document.getElementById('text').value") == text
        browser.click("#go")
        version = browser.wait_for("document.getElementById('model').dataset.version")
        assert version == "1"
        assert browser.eval("document.getElementById('result').textContent") == (
            expected or "(empty summary)"
        )
        assert "version 1" in browser.eval("document.getElementById('model').textContent")

        browser.eval("document.getElementById('text').value = ''")
        browser.type_into("#text", "   ")
        browser.click("#go")
        error = browser.wait_for("document.getElementById('error').textContent")
        assert "texts.0" in error and "blank" in error
