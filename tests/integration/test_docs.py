"""/docs works offline: Swagger UI's assets come from the package, never a CDN."""

from __future__ import annotations

import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.integration


def test_swagger_ui_is_served_from_the_package(live_server: LiveServer) -> None:
    with live_server.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        assert "/docs/assets/swagger-ui-bundle.js" in page.text
        js = c.get("/docs/assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000
        assert c.get("/docs/assets/swagger-ui.css").status_code == 200
        assert c.get("/docs/assets/..%2Fpyproject.toml").status_code == 404
        missing = c.get("/docs/assets/index.html")  # in the package, but not one we serve
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert c.get("/openapi.json").json()["paths"]
