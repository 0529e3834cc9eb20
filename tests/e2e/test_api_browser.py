"""The API browser at ``/api/docs``: Swagger UI over the five services' OpenAPI documents,
through the gateway of each stack, served from the stack alone.
"""

from __future__ import annotations

import re

import pytest
import requests
from chancery_shared.service import service_classes
from chancery_shared.web import api_browser

from tests.browser import DESKTOP, PHONE, chromium

pytestmark = pytest.mark.e2e


def test_the_browser_lists_every_installed_service():
    assert [name for name, _ in api_browser.DOCUMENTS] == \
        [cls.api_name for cls in service_classes().values()]


def test_the_page_and_its_files_come_from_the_gateway(stack):
    base = stack.base_url
    bare = requests.get(f"{base}/api/docs", allow_redirects=False, timeout=10)
    assert bare.status_code in (301, 308)
    assert bare.headers["Location"].endswith("/api/docs/")
    page = requests.get(f"{base}/api/docs/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in page.headers["Content-Security-Policy"]  # 'self' only
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert loaded and all(url.startswith("/api/docs/") for url in loaded), loaded
    for url in loaded:
        asset = requests.get(base + url, timeout=10)
        assert asset.status_code == 200, url
        assert b"//unpkg.com" not in asset.content and b"//cdn." not in asset.content[:2000]
    config = requests.get(f"{base}/api/docs/config.js", timeout=10).text
    documents = re.findall(r'"url": "(/api/[a-z]+/openapi\.json)"', config)
    assert documents == [f"/api/{name}/openapi.json" for name, _ in api_browser.DOCUMENTS]
    for url in documents:
        document = requests.get(base + url, timeout=10)
        assert document.status_code == 200, url
        assert document.json()["openapi"].startswith("3.")
    licence = requests.get(f"{base}/api/docs/assets/LICENSE", timeout=10)
    assert "Apache License" in licence.text
    version = requests.get(f"{base}/api/docs/assets/VERSION", timeout=10).text.strip()
    assert version == api_browser.swagger_ui_version() and version.startswith("v5.")
    assert requests.get(f"{base}/api/docs/assets/index.template.html",
                        timeout=10).status_code == 404


def shown_title(browser) -> str:
    titles = browser.driver.find_elements("css selector", ".swagger-ui .info .title")
    return titles[0].text if titles else ""


def test_swagger_ui_shows_all_five_services(stack):
    """A real Chromium opens /api/docs, picks each document in turn and sees its title
    and operations; every request it made went to the stack's own address."""
    from selenium.webdriver.support.ui import Select

    expected = {cls.api_name: cls.title for cls in service_classes().values()}
    with chromium(DESKTOP) as browser:
        browser.open(f"{stack.base_url}/api/docs")
        browser.wait(lambda _: shown_title(browser).startswith(expected["identity"]),
                     message="the identity document to be shown first")
        selector = Select(browser.driver.find_element("css selector", "select#select"))
        assert len(selector.options) == 5
        for (name, label), option in zip(api_browser.DOCUMENTS, list(selector.options),
                                         strict=True):
            assert option.text == label
            Select(browser.driver.find_element("css selector", "select#select")) \
                .select_by_visible_text(label)
            browser.wait(lambda _, title=expected[name]: shown_title(browser).startswith(title),
                         message=f"the {name} document")
            browser.wait(lambda _: browser.driver.find_elements(
                "css selector", ".opblock-summary-path"), message=f"{name}'s operations")
            browser.screenshot(f"api-docs-{stack.mode}-{name}-desktop")
        browser.size(PHONE)
        browser.screenshot(f"api-docs-{stack.mode}-audit-phone")
        requested = browser.requested_urls()
        assert requested and all(url.startswith(stack.base_url) for url in requested), \
            [url for url in requested if not url.startswith(stack.base_url)]
        assert browser.console_errors() == []
