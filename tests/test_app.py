"""The Chalice app's API contract: through chalice.test.Client, and over real HTTP to `chalice local`."""
import json, shutil

import pytest
from chalice.test import Client

from nutrino_ml.local import ChaliceLocal, http_json
from helpers import JSON, MODELS, load_app


@pytest.fixture(scope="module")
def client(built):
    with Client(load_app(built["app"])) as c:
        yield c


def post(client, path, body, raw=False, headers=JSON):
    return client.http.post(path, headers=headers, body=body if raw else json.dumps(body))


def example(client, name):
    models = client.http.get("/models").json_body["models"]
    return next(m for m in models if m["name"] == name)["input_example"]


def test_ping_and_models(client):
    assert client.http.get("/ping").json_body == {"status": "ok", "versions": 2}
    served = client.http.get("/models").json_body["models"]
    assert {(m["name"], m["version"], tuple(m["aliases"])) for m in served} == {(n, 1, ("production",)) for n in MODELS}
    assert {m["format"] for m in served} == {"onnx", "forecaster-json"}
    for m in served:
        assert m["inputs"] and m["metrics"]["mae"] > 0 and m["run_id"], m["name"]


@pytest.mark.parametrize("name", MODELS)
def test_predict_production_and_pinned_version(client, name):
    rows = example(client, name)
    r = post(client, f"/models/{name}/predict", {"rows": rows})
    assert r.status_code == 200
    assert r.json_body["model"] == name and r.json_body["version"] == 1
    assert len(r.json_body["predictions"]) == len(rows) and all(isinstance(p, float) for p in r.json_body["predictions"])
    assert r.json_body["route"] == "production" and r.headers["X-Model-Version"] == "1"
    same = lambda b: {k: b[k] for k in ("model", "version", "predictions")}
    pinned = post(client, f"/models/{name}/versions/1/predict", rows)  # a bare list of rows is accepted too
    assert same(pinned.json_body) == same(r.json_body) and pinned.json_body["route"] == "pinned"
    assert same(post(client, f"/models/{name}/versions/production/predict", {"rows": rows}).json_body) == same(r.json_body)
    by_header = post(client, f"/models/{name}/predict", {"rows": rows}, headers={**JSON, "X-Model-Version": "1"})
    assert by_header.json_body["route"] == "pinned" and same(by_header.json_body) == same(r.json_body)


def error(r, status):
    assert r.status_code == status, r.body
    body = r.json_body
    assert set(body) == {"Code", "Message"} and "Traceback" not in body["Message"]
    return body["Message"]


def test_bad_input_gets_a_4xx_naming_the_problem(client):
    rows = example(client, "glucose-response")
    p = "/models/glucose-response/predict"
    assert "unknown field 'carbs'" in error(post(client, p, {"rows": [{**rows[0], "carbs": 3}]}), 400)
    assert "field 'carbs_g' must be a number, got a string ('lots')" in error(post(client, p, {"rows": [{**rows[0], "carbs_g": "lots"}]}), 400)
    assert "field 'hour' is required" in error(post(client, p, {"rows": [{k: v for k, v in rows[0].items() if k != "hour"}]}), 400)
    assert "empty request body" in error(post(client, p, "", raw=True), 400)
    assert "empty request body" in error(post(client, p, {}), 400)
    assert "non-empty list" in error(post(client, p, {"rows": []}), 400)
    assert "unexpected request body" in error(post(client, p, {"carbs_g": 1}), 400)
    assert "request body is not valid JSON" in error(post(client, p, "{not json", raw=True), 400)
    assert error(post(client, "/models/glucose/predict", {"rows": rows}), 404).startswith("no model 'glucose' is served")
    assert "no version or alias '7'" in error(post(client, "/models/glucose-response/versions/7/predict", {"rows": rows}), 404)
    assert post(client, p, "carbs_g=1", raw=True, headers={"Content-Type": "text/plain"}).status_code == 415


def test_tampered_bundle_is_unavailable_and_the_others_keep_serving(built, tmp_path):
    app_dir = tmp_path / "app"
    shutil.copytree(built["app"], app_dir)
    weights = app_dir / "chalicelib" / "models" / "glucose-response" / "1" / "model.onnx"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with Client(load_app(app_dir)) as c:
        rows = example(c, "glucose-response")
        assert "fails its sha256 check" in error(post(c, "/models/glucose-response/predict", {"rows": rows}), 503)
        assert post(c, "/models/glucose-forecast/predict", {"rows": example(c, "glucose-forecast")}).status_code == 200
        assert c.http.get("/v2/health/ready").status_code == 503
        assert c.http.get("/v2/models/glucose-forecast/ready").status_code == 200


def test_missing_bundle_file_is_unavailable_and_the_others_keep_serving(built, tmp_path):
    app_dir = tmp_path / "app"
    shutil.copytree(built["app"], app_dir)
    (app_dir / "chalicelib" / "models" / "glucose-forecast" / "1" / "state.json").unlink()
    with Client(load_app(app_dir)) as c:
        assert "'state.json' is missing" in error(post(c, "/models/glucose-forecast/predict", {"rows": [{"user_id": "u1", "glucose_mgdl": 100}]}), 503)
        assert post(c, "/models/glucose-response/predict", {"rows": example(c, "glucose-response")}).status_code == 200


@pytest.mark.parametrize("case", ["model_file outside its folder", "model_file unsealed, no sha256", "manifest deleted",
                                  "manifest names another version", "manifest edited"])
def test_a_bundle_that_lies_is_unavailable_says_why_and_the_others_keep_serving(built, tmp_path, case):
    app_dir = tmp_path / "app"
    shutil.copytree(built["app"], app_dir)
    models = app_dir / "chalicelib" / "models"
    shutil.copytree(models / "glucose-forecast" / "1", tmp_path / "elsewhere")
    f = models / "glucose-forecast" / "1" / "manifest.json"
    m = json.loads(f.read_text())
    if case == "model_file outside its folder": f.write_text(json.dumps({**m, "model_file": "../../../../elsewhere/state.json"}))
    elif case == "model_file unsealed, no sha256": f.write_text(json.dumps({**m, "sha256": {}}))
    elif case == "manifest deleted": f.unlink()
    elif case == "manifest names another version":
        shutil.copytree(models / "glucose-forecast" / "1", models / "glucose-forecast" / "7")  # a folder holding version 1's manifest
    elif case == "manifest edited": f.write_text(json.dumps({**m, "aliases": ["production", "canary"]}))
    row = {"rows": [{"user_id": "u1", "glucose_mgdl": 100}]}
    with Client(load_app(app_dir)) as c:
        ready = c.http.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json_body["problems"], (case, ready.json_body)
        if case != "manifest names another version":
            for path in ("/models/glucose-forecast/predict", "/models/glucose-forecast/versions/1/predict"):
                message = error(post(c, path, row), 503)
                assert "version 1 is unavailable" in message and "re-run `nutrino-ml export`" in message, (case, path, message)
        else:
            assert "names 'glucose-forecast' version 1" in json.dumps(ready.json_body["problems"]), case
            assert post(c, "/models/glucose-forecast/versions/7/predict", row).status_code == 404, case
        assert post(c, "/models/glucose-response/predict", {"rows": example(c, "glucose-response")}).status_code == 200, case


def test_over_real_http_with_chalice_local(built, client):
    with ChaliceLocal(built["app"]) as srv:
        for name in MODELS:
            rows = example(client, name)
            status, body = http_json("POST", f"{srv.url}/models/{name}/predict", {"rows": rows})
            assert status == 200 and body["predictions"] == post(client, f"/models/{name}/predict", {"rows": rows}).json_body["predictions"], name
        status, body = http_json("POST", f"{srv.url}/models/glucose-forecast/predict", {"rows": [{"user_id": "u1", "glucose_mgdl": "high"}]})
        assert status == 400 and "field 'glucose_mgdl' must be a number" in body["Message"]
        status, body = http_json("POST", f"{srv.url}/models/nope/predict", {"rows": [{}]})
        assert status == 404 and "served models" in body["Message"]


# the headers API Gateway (REST API, edge-optimized) adds around a client's own, in the client's case
GATEWAY_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "CloudFront-Forwarded-Proto": "https",
                   "CloudFront-Is-Desktop-Viewer": "true", "CloudFront-Viewer-Country": "DE", "Content-Type": "application/json",
                   "Host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "User-Agent": "curl/8.5.0",
                   "Via": "1.1 0f1e2d3c4b5a.cloudfront.net (CloudFront)", "X-Amz-Cf-Id": "kT0V2v1KqYb8r1E0n3hJ5cXnS6m2==",
                   "X-Amzn-Trace-Id": "Root=1-6744a1f0-3c1d2e3f4a5b6c7d8e9f0a1b", "X-Forwarded-For": "203.0.113.7, 130.176.0.1",
                   "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https", "x-api-key": "k" * 40, "X-Model-Version": "1"}


def rest_event(path, resource, params, body, headers=JSON, b64=False, method="POST"):
    """An API Gateway REST proxy event as Lambda delivers it (headers keep the client's case)."""
    return {"resource": resource, "path": path, "httpMethod": method, "headers": headers, "multiValueHeaders": {},
            "pathParameters": params, "queryStringParameters": None, "multiValueQueryStringParameters": None,
            "stageVariables": None, "body": body, "isBase64Encoded": b64,
            "requestContext": {"resourcePath": resource, "httpMethod": method, "path": "/api" + path, "requestId": "req-1"}}


def test_fast_predict_path_answers_exactly_as_chalice_does(built):
    """ServingApp answers the native predict routes from the raw event; every answer must equal Chalice's own."""
    import base64
    from chalice import Chalice
    app = load_app(built["app"])
    one, pinned = "/models/{name}/predict", "/models/{name}/versions/{version}/predict"
    rows = {n: [m["input_example"] for m in app_models(app) if m["name"] == n][0] for n in MODELS}
    body = json.dumps({"rows": rows["glucose-response"]})
    cases = [(f"{n} on the native route", rest_event(f"/models/{n}/predict", one, {"name": n}, json.dumps({"rows": rows[n]})), 200) for n in MODELS] + [
        ("pinned to version 1", rest_event("/models/glucose-response/versions/1/predict", pinned, {"name": "glucose-response", "version": "1"}, body), 200),
        ("pinned to production", rest_event("/models/glucose-response/versions/production/predict", pinned, {"name": "glucose-response", "version": "production"}, body), 200),
        ("charset and X-Model-Version", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, body, headers={"Content-Type": "application/json; charset=utf-8", "X-Model-Version": "1"}), 200),
        ("base64 body", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, base64.b64encode(body.encode()).decode(), b64=True), 200),
        ("no headers", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, body, headers=None), 200),
        ("no body", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, None), 400),
        ("a boolean for a number", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, '{"rows": [{"carbs_g": true}]}'), 400),
        ("a 401-digit number", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, '{"rows": [{"carbs_g": 1' + "0" * 400 + "}]}"), 400),
        ("not JSON", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, "{nope"), 400),
        ("a body over the limit", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, "[" + "1," * (3 << 20) + "1]"), 413),
        ("an unknown model", rest_event("/models/nope/predict", one, {"name": "nope"}, body), 404),
        ("an unknown pinned version", rest_event("/models/glucose-response/versions/9/predict", pinned, {"name": "glucose-response", "version": "9"}, body), 404),
        ("an unknown alias in X-Model-Version", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, body, headers={"X-Model-Version": "rollback"}), 404),
        ("a UTF-8 BOM", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, "\ufeff" + body), 200),
        ("nested past the recursion limit", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, "[" * 100_000), 400),
        ("lower-case headers", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, body, headers={"content-type": "application/json", "x-model-version": "1"}), 200),
        ("API Gateway's headers", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, body, headers=GATEWAY_HEADERS), 200),
        ("the same header twice: the last wins", rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, body,
                   headers={"Content-Type": "text/csv", "X-Model-Version": "9", "content-type": "application/json", "x-model-version": "1"}), 200),
    ]
    for case, ev, status in cases:
        app.current_request = None
        fast = app(ev, None)
        assert getattr(app, "current_request", None) is None, case  # answered before Chalice built a Request
        assert fast == Chalice.__call__(app, ev, None), case
        assert fast["statusCode"] == status, case
    # a content type the route does not take goes through Chalice: 415, as before
    ev = rest_event("/models/glucose-response/predict", one, {"name": "glucose-response"}, body, headers={"Content-Type": "text/csv"})
    assert app(ev, None)["statusCode"] == 415


def app_models(app):
    return json.loads(app(rest_event("/models", "/models", {}, None, method="GET"), None)["body"])["models"]
