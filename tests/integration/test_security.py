"""Identity, permissions, rate limits and CORS on the REST door, over real HTTP (uvicorn on 127.0.0.1), with
personal access tokens and OAuth JWTs from a JWKS served locally."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from server.ops.acl import AclEntry
from server.ops.authdb import AuthDB
from server.ops.identity import Level, Resource
from server.ops.tokens import TokenStore
from tests.conftest import DemoRegistry, start_server
from tests.jwks import Issuer, serve_issuer

pytestmark = pytest.mark.integration

AUDIENCE = "https://modelport.test/mcp"
ROW = {"dataframe_records": [{"year": 2025, "product": "product_A", "units": 100}]}
ORIGIN = "https://app.example.com"


@dataclass
class Secured:
    url: str
    components: object
    issuer: Issuer
    admin: str
    query: str
    view: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=60.0, headers=headers)


@pytest.fixture(scope="module")
def secured(demo_registry: DemoRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    from server.main import build
    from server.settings import DeploymentSpec, RateLimitSpec, Settings

    state = tmp_path_factory.mktemp("secured")
    (state / "mlflow.db").symlink_to(demo_registry.state_dir / "mlflow.db")
    tokens = TokenStore(AuthDB(state / "auth.db"))
    admin = tokens.create("root", admin=True)
    query = tokens.create("bob", grants={"sales_forecast": Level.CAN_QUERY})
    view = tokens.create("viewer", grants={"sales_forecast": Level.CAN_VIEW})
    with serve_issuer(AUDIENCE) as issuer:
        uris = {r.name: r.uri for r in demo_registry.refs}
        settings = Settings(
            state_dir=state,
            registry_uri=demo_registry.tracking_uri,
            deployments=(
                DeploymentSpec(model=uris["sales_forecast"]),
                DeploymentSpec(model=uris["fraud_detector"]),
                DeploymentSpec(model=uris["customer_ltv"], rate_limits=(RateLimitSpec(calls=2, key="user"),)),
            ),
            auth={"required": True, "refresh_s": 0.001, "oauth": issuer.settings(required_scopes=("models:invoke",))},
            cors={"allow_origins": (ORIGIN,)},
        )
        components = build(settings)
        server, thread, url = start_server(components, components.app)
        with httpx.Client(base_url=url) as c:
            assert c.get("/ping").status_code == 200
        yield Secured(url, components, issuer, admin, query, view)
        server.should_exit = True
        thread.join(timeout=30)


def _score(c: httpx.Client, model: str = "sales_forecast") -> httpx.Response:
    return c.post(f"/model/{model}/champion/invocations", json=ROW)


def test_probes_stay_open_and_say_little(secured: Secured) -> None:
    with secured.client() as c:
        assert c.get("/ping").status_code == 200
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/v2/health/ready").status_code == 200
    with secured.client(secured.view) as c:
        assert "ready" in c.get("/health").json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/model/sales_forecast/champion/invocations"),  # the ASGI fast path
        ("POST", "/v2/models/sales_forecast/infer"),
        ("GET", "/models"),
        ("GET", "/models/sales_forecast/champion"),
        ("GET", "/version"),
        ("GET", "/api/2.0/serving-endpoints"),
        ("POST", "/serving-endpoints/anything/invocations"),
    ],
)
def test_every_route_needs_credentials(secured: Secured, method: str, path: str) -> None:
    with secured.client() as c:
        r = c.request(method, path, json=ROW)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error_code"] == "UNAUTHENTICATED"
    assert "modelport tokens create" in r.json()["message"]
    if path.startswith("/v2/"):
        assert r.json()["error"]  # the v2 error field tritonclient reads


def test_bad_token_is_401_invalid_token(secured: Secured) -> None:
    with secured.client("mp_forged") as c:
        r = _score(c)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def test_query_grant_scores_its_model_only(secured: Secured) -> None:
    with secured.client(secured.query) as c:
        assert _score(c).status_code == 200
        denied = _score(c, "fraud_detector")
        assert denied.status_code == 403
        assert denied.json()["error_code"] == "PERMISSION_DENIED"
        assert "bob has no permission on model 'fraud_detector'; this needs CAN_QUERY" in denied.json()["message"]
        assert [m["name"] for m in c.get("/models").json()["models"]] == ["sales_forecast"]
        assert c.get("/models/fraud_detector").status_code == 403
        paths = c.get("/openapi.json").json()["paths"]
        assert any(p.startswith("/model/sales_forecast/") for p in paths)
        assert not any(p.startswith("/model/fraud_detector/") for p in paths)


def test_view_grant_describes_but_cannot_score(secured: Secured) -> None:
    with secured.client(secured.view) as c:
        assert c.get("/models/sales_forecast/champion").status_code == 200
        assert c.get("/v2/models/sales_forecast").status_code == 200
        r = _score(c)
        assert r.status_code == 403 and "this needs CAN_QUERY" in r.json()["message"]


def test_anonymous_openapi_lists_no_model(secured: Secured) -> None:
    with secured.client() as c:
        spec = c.get("/openapi.json").json()
    assert not any(p.startswith("/model/sales_forecast/") for p in spec["paths"])
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_admin_sees_and_scores_everything(secured: Secured) -> None:
    with secured.client(secured.admin) as c:
        assert {m["name"] for m in c.get("/models").json()["models"]} == {
            "sales_forecast",
            "fraud_detector",
            "customer_ltv",
        }
        assert _score(c).status_code == 200


def test_oauth_jwt_with_acl(secured: Secured) -> None:
    gate = secured.components.gate  # type: ignore[attr-defined]
    gate.acl.replace(Resource("model", "fraud_detector"), [AclEntry("group_name", "risk", Level.CAN_QUERY)])
    good = secured.issuer.token("dana", groups=["risk"])
    with secured.client(good) as c:
        assert [m["name"] for m in c.get("/models").json()["models"]] == ["fraud_detector"]
        assert _score(c, "sales_forecast").status_code == 403
        info = c.get("/models/fraud_detector/champion").json()
        r = c.post("/model/fraud_detector/champion/invocations", json={"dataframe_records": [info["input_example"][0]]}
                   if isinstance(info["input_example"], list) else info["input_example"])  # fmt: skip
        assert r.status_code == 200, r.text
    for bad in (
        secured.issuer.token("dana", groups=["risk"], ttl_s=-120),
        secured.issuer.token("dana", groups=["risk"], aud="https://other.test/mcp"),
        secured.issuer.token("dana", groups=["risk"], iss="https://evil.test"),
        secured.issuer.token("dana", groups=["risk"], key=secured.issuer.other),
        secured.issuer.unsigned("dana", groups=["risk"]),
    ):
        with secured.client(bad) as c:
            assert c.get("/models").status_code == 401
    with secured.client(secured.issuer.token("dana", groups=["risk"], scope="openid")) as c:
        r = c.get("/models")
        assert r.status_code == 403 and "models:invoke" in r.json()["message"]


def test_rate_limit_from_settings_is_429_with_retry_after(secured: Secured) -> None:
    with secured.client(secured.admin) as c:
        info = c.get("/models/customer_ltv/champion").json()
        example = info["input_example"]
        body = {"dataframe_records": example} if isinstance(example, list) else example
        codes = [c.post("/model/customer_ltv/champion/invocations", json=body).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.post("/model/customer_ltv/champion/invocations", json=body)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        assert c.get("/models/customer_ltv/champion").status_code == 200  # viewing is not rate-limited
    with secured.client(secured.issuer.token("erin", groups=["ltv"])) as c:  # limits are per user
        secured.components.gate.acl.replace(  # type: ignore[attr-defined]
            Resource("model", "customer_ltv"), [AclEntry("group_name", "ltv", Level.CAN_QUERY)]
        )
        assert c.post("/model/customer_ltv/champion/invocations", json=body).status_code == 200


def test_tokens_created_and_revoked_elsewhere_take_effect(secured: Secured) -> None:
    other_process = TokenStore(AuthDB(secured.components.settings.auth_db))  # type: ignore[attr-defined]
    secret = other_process.create("late", grants={"sales_forecast": Level.CAN_QUERY})
    with secured.client(secret) as c:
        assert _score(c).status_code == 200
        other_process.revoke("late")
        assert _score(c).status_code == 401


def test_cors_preflight_and_response_headers(secured: Secured) -> None:
    with secured.client() as c:
        pre = c.options(
            "/model/sales_forecast/champion/invocations",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"},
        )  # fmt: skip
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in pre.headers["access-control-allow-headers"]
        other = c.options(
            "/models", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in other.headers
    with secured.client(secured.query) as c:
        r = c.post("/model/sales_forecast/champion/invocations", json=ROW, headers={"Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in r.headers["access-control-expose-headers"]


def test_secrets_never_logged_and_principal_always(secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    jwt = secured.issuer.token("frank")
    with caplog.at_level(logging.INFO), secured.client(secured.query) as c:
        assert _score(c).status_code == 200
        assert _score(c, "fraud_detector").status_code == 403
        with secured.client(jwt) as j:
            j.get("/models")
        with secured.client(secured.query + "x") as bad:
            assert _score(bad).status_code == 401
    access = [r for r in caplog.records if r.name == "modelport.access"]
    assert [getattr(r, "principal", None) for r in access][:2] == ["bob", "bob"]
    dumped = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in (secured.query, secured.admin, jwt):
        assert secret not in dumped
