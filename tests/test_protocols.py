"""MLflow's scoring protocol and the Open Inference Protocol v2 answer what mlflow.pyfunc.load_model predicts."""
import io, json

import mlflow
import numpy as np
import pandas as pd
import pytest
from chalice.test import Client

from helpers import JSON, MODELS, load_app, mlflow_tracking

TABLE = {"glucose-response": "meal_response", "glucose-forecast": "glucose_forecast"}


@pytest.fixture(scope="module")
def client(built):
    with Client(load_app(built["app"])) as c:
        yield c


@pytest.fixture(scope="module")
def cases(built):
    """Per model: 40 feature rows (with missing trends), and what MLflow's own loader predicts for them."""
    out = {}
    with mlflow_tracking(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"]):
        for name in MODELS:
            manifest = json.loads((built["app"] / "chalicelib" / "models" / name / "1" / "manifest.json").read_text())
            cols = [f["name"] for f in manifest["inputs"]]
            X = pd.read_parquet(built["products"] / "features" / f"{TABLE[name]}.parquet")[cols].head(40).reset_index(drop=True)
            X.loc[[3, 7, 11], [f["name"] for f in manifest["inputs"] if f["nullable"]]] = np.nan  # CGM gaps: missing trend/level
            out[name] = {"X": X, "cols": cols, "mlflow": np.asarray(mlflow.pyfunc.load_model(f"models:/{name}/1").predict(X), float)}
    return out


def records(X):
    return json.loads(X.to_json(orient="records"))


def bodies(X, cols):
    """The same rows in every input format of MLflow's scoring protocol."""
    split = json.loads(X.to_json(orient="split", index=False))
    return {"dataframe_split": ("application/json", json.dumps({"dataframe_split": split})),
            "dataframe_records": ("application/json", json.dumps({"dataframe_records": records(X)})),
            "instances": ("application/json", json.dumps({"instances": records(X)})),
            "inputs-columns": ("application/json", json.dumps({"inputs": {c: json.loads(X[c].to_json(orient="values")) for c in cols}})),
            "inputs-params": ("application/json", json.dumps({"inputs": records(X), "params": {}})),
            "csv": ("text/csv", X.to_csv(index=False))}


@pytest.mark.parametrize("name", MODELS)
def test_mlflow_scoring_protocol_equals_mlflow_pyfunc(client, cases, name):
    case = cases[name]
    tol = 1e-3 if name == "glucose-response" else 1e-9  # ONNX trees run in float32
    for fmt, (ctype, body) in bodies(case["X"], case["cols"]).items():
        for path in (f"/models/{name}/invocations", f"/models/{name}/versions/1/invocations"):
            r = client.http.post(path, headers={"Content-Type": ctype}, body=body)
            assert r.status_code == 200, (fmt, path, r.body)
            assert set(r.json_body) == {"predictions"} and r.headers["X-Model-Version"] == "1", (fmt, path)
            np.testing.assert_allclose(r.json_body["predictions"], case["mlflow"], atol=tol, err_msg=f"{fmt} to {path}")


@pytest.mark.parametrize("name", MODELS)
def test_open_inference_protocol_equals_mlflow_pyfunc(client, cases, name):
    case = cases[name]
    X, tol = case["X"], 1e-3 if name == "glucose-response" else 1e-9
    inputs = [{"name": c, "shape": [len(X)], "datatype": "BYTES" if X[c].dtype == object or str(X[c].dtype) == "string" else "FP64",
               "data": json.loads(X[c].to_json(orient="values"))} for c in case["cols"]]
    for path in (f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/1/infer"):
        r = client.http.post(path, headers=JSON, body=json.dumps({"id": "req-1", "inputs": inputs}))
        assert r.status_code == 200, (path, r.body)
        body = r.json_body
        assert (body["model_name"], body["model_version"], body["id"]) == (name, "1", "req-1"), path
        out = body["outputs"][0]
        assert out["shape"] == [len(X)] and out["datatype"] == "FP64", path
        np.testing.assert_allclose(out["data"], case["mlflow"], atol=tol, err_msg=path)


def test_native_route_equals_mlflow_pyfunc(client, cases):
    for name in MODELS:
        r = client.http.post(f"/models/{name}/predict", headers=JSON, body=json.dumps({"rows": records(cases[name]["X"])}))
        assert r.status_code == 200, (name, r.body)
        np.testing.assert_allclose(r.json_body["predictions"], cases[name]["mlflow"], atol=1e-3, err_msg=name)


def test_v2_health_metadata_and_readiness(client):
    assert client.http.get("/v2/health/live").json_body == {"live": True}
    assert client.http.get("/v2/health/ready").json_body == {"ready": True, "problems": {}}
    md = client.http.get("/v2/models/glucose-forecast").json_body
    assert md["versions"] == ["1"] and md["platform"] == "nutrino_ml/forecaster-json"
    assert {"name": "user_id", "datatype": "BYTES", "shape": [-1]} in md["inputs"]
    assert md["outputs"] == [{"name": "glucose_future", "datatype": "FP64", "shape": [-1]}]
    assert client.http.get("/v2/models/glucose-response/versions/1").json_body["inputs"][0]["datatype"] == "FP64"
    assert client.http.get("/v2/models/glucose-response/ready").json_body == {"name": "glucose-response", "ready": True}
    assert client.http.get("/v2/models/glucose-response/versions/1/ready").status_code == 200
    r = client.http.get("/v2/models/nope")
    assert r.status_code == 404 and "no model 'nope'" in r.json_body["error"]


def test_every_route_enforces_the_schema_in_its_own_error_shape(client, cases):
    X = cases["glucose-forecast"]["X"].head(2).copy()
    bad = records(X)
    bad[1]["glucose_mgdl"] = "high"
    r = client.http.post("/models/glucose-forecast/invocations", headers=JSON, body=json.dumps({"dataframe_records": bad}))
    assert r.status_code == 400 and r.json_body["error_code"] == "BAD_REQUEST"
    assert "row 1: field 'glucose_mgdl' must be a number" in r.json_body["message"]
    r = client.http.post("/models/glucose-forecast/invocations", headers={"Content-Type": "text/csv"}, body="user_id,glucose_mgdl\nu1,\n")
    assert r.status_code == 400 and "field 'glucose_mgdl' is required" in r.json_body["message"]
    r = client.http.post("/models/glucose-forecast/invocations", headers=JSON, body=json.dumps({"rows": bad}))
    assert r.status_code == 400 and "expected exactly one of" in r.json_body["message"]
    r = client.http.post("/v2/models/glucose-forecast/infer", headers=JSON,
                         body=json.dumps({"inputs": [{"name": "glucose_mgdl", "shape": [1], "datatype": "BYTES", "data": ["high"]}]}))
    assert r.status_code == 400 and "datatype BYTES given, expected FP64" in r.json_body["error"]
    r = client.http.post("/v2/models/glucose-forecast/infer", headers=JSON,
                         body=json.dumps({"inputs": [{"name": "glucose_mgdl", "shape": [1], "datatype": "FP64", "data": [120]}]}))
    assert r.status_code == 400 and "field 'user_id' is required" in r.json_body["error"]
    r = client.http.post("/models/nope/invocations", headers=JSON, body=json.dumps({"dataframe_records": bad}))
    assert r.status_code == 404 and r.json_body["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_wrong_content_type_is_415_and_an_oversized_body_is_413(client):
    r = client.http.post("/models/glucose-forecast/invocations", headers={"Content-Type": "application/xml"}, body="<rows/>")
    assert r.status_code == 415
    r = client.http.post("/models/glucose-forecast/predict", headers={"Content-Type": "text/plain"}, body="x")
    assert r.status_code == 415
    huge = json.dumps({"rows": [{"user_id": "u" * 100, "glucose_mgdl": 100.0}] * 40_000})
    assert len(huge) > 4 * 1024 * 1024
    for path, key in (("/models/glucose-forecast/predict", "Message"), ("/models/glucose-forecast/invocations", "message"),
                      ("/v2/models/glucose-forecast/infer", "error")):
        r = client.http.post(path, headers=JSON, body=huge)
        assert r.status_code == 413 and "send at most 4194304 bytes" in r.json_body[key], path
