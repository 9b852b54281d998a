"""`/invocations` answers odd requests as `mlflow models serve` does, on the same registered versions, or differs where
the README says so ("Where `/invocations` differs from `mlflow models serve`").

Both servers run here on one table of odd bodies: extra columns, numbers as text, integers and booleans, nulls,
missing columns, the other shapes MLflow's scoring protocol allows, CSV. The registered signature and the bundle's
schema must agree first, or the two servers would disagree on which inputs may be left out.
"""
import json, os, subprocess, urllib.error, urllib.request

import mlflow
import numpy as np
import pytest

from helpers import BIN, MODELS, ROOT, TELEMETRY_OFF, free_port, mlflow_tracking, stop, wait_http
from nutrino_ml.local import ChaliceLocal


def manifest(built, name):
    return json.loads((built["app"] / "chalicelib" / "models" / name / "1" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def servers(built, tmp_path_factory):
    """`mlflow models serve` for version 1 of each model, and `chalice local` on the exported app: their base URLs."""
    tmp = tmp_path_factory.mktemp("mlflow-serve")
    env = {**os.environ, **TELEMETRY_OFF, "MLFLOW_TRACKING_URI": built["env"]["NUTRINO_MLFLOW_TRACKING_URI"],
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow execs `uvicorn` by name, as in an activated venv
    procs = {}
    try:
        for name in MODELS:
            port = free_port()
            procs[name] = (subprocess.Popen([BIN / "mlflow", "models", "serve", "-m", f"models:/{name}/1", "--env-manager", "local",
                                             "--host", "127.0.0.1", "-p", str(port)], cwd=tmp, env=env,
                                            stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT), f"http://127.0.0.1:{port}")
        for proc, url in procs.values():
            wait_http(f"{url}/ping", proc, timeout=180)
        with ChaliceLocal(built["app"]) as ours:
            yield {name: {"mlflow": f"{url}/invocations", "ours": f"{ours.url}/models/{name}/versions/1/invocations"}
                   for name, (_, url) in procs.items()}
    finally:
        for proc, _ in procs.values():
            stop(proc)


def post(url, ctype, body):
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_registered_signature_is_the_bundle_schema(built):
    with mlflow_tracking(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"]):
        for name in MODELS:
            sig = mlflow.models.get_model_info(f"models:/{name}/1").signature
            assert [(c.name, c.type.name, not c.required) for c in sig.inputs.inputs] == \
                [(f["name"], f["type"], f["nullable"]) for f in manifest(built, name)["inputs"]], name


# Each difference is a row of the README's table, by its first cell; the test checks the README still lists it.
DIFFERENCES = {"boolean": "a boolean in a number input", "null": "`null` in a required input",
               "text": "`\"NaN\"` or `\"inf\"` as a required number", "unicode": "a number in non-ASCII digits",
               "float id": "a float where text is expected", "broadcast": "`inputs` mixing lists and single values"}


def cases(schema, row):
    """`{case: (content type, body, expected)}`; expected is "same" or a key of DIFFERENCES."""
    num = next(f["name"] for f in schema if f["type"] == "double" and not f["nullable"])
    opt = next(f["name"] for f in schema if f["nullable"])
    text = next((f["name"] for f in schema if f["type"] == "string"), None)
    cols = [f["name"] for f in schema]
    less = {k: v for k, v in row.items() if k != opt}

    def j(body, expected="same"):
        return "application/json", json.dumps(body), expected

    def csv(header, values, expected="same"):
        return "text/csv", ",".join(header) + "\n" + ",".join("" if v is None else str(v) for v in values) + "\n", expected

    out = {
        "records": j({"dataframe_records": [row]}),
        "split": j({"dataframe_split": {"columns": cols, "data": [[row[c] for c in cols]]}}),
        "instances": j({"instances": [row, row]}),
        "inputs as columns": j({"inputs": {c: [row[c]] for c in cols}}),
        "inputs as one object": j({"inputs": row}),
        "with params": j({"dataframe_records": [row], "params": {"anything": 1}}),
        "an extra column": j({"dataframe_records": [{**row, "not_an_input": "x"}]}),
        "an extra column in split": j({"dataframe_split": {"columns": cols + ["zzz"], "data": [[row[c] for c in cols] + [1]]}}),
        "a number as text": j({"dataframe_records": [{**row, num: "120"}]}),
        "a float as text with spaces": j({"dataframe_records": [{**row, num: " 1.205e2 "}]}),
        "an integer number": j({"dataframe_records": [{**row, num: 120}]}),
        "a huge number": j({"dataframe_records": [{**row, num: 1e300}]}),
        "null optional": j({"dataframe_records": [{**row, opt: None}]}),
        "NaN text optional": j({"dataframe_records": [{**row, opt: "NaN"}]}),
        "optional column left out": j({"dataframe_records": [less]}),
        "optional column left out of one row": j({"dataframe_records": [less, row]}),
        "optional column left out of split": j({"dataframe_split": {"columns": list(less), "data": [list(less.values())]}}),
        "required column left out": j({"dataframe_records": [{k: v for k, v in row.items() if k != num}]}),
        "text in a number": j({"dataframe_records": [{**row, num: "high"}]}),
        "no rows": j({"dataframe_records": []}),
        "positional rows": j({"instances": [[row[c] for c in cols]]}),
        "split without columns": j({"dataframe_split": {"data": [[row[c] for c in cols]]}}),
        "csv": csv(cols, [row[c] for c in cols]),
        "csv empty optional cell": csv(cols, [None if c == opt else row[c] for c in cols]),
        "csv extra column": csv(cols + ["zzz"], [row[c] for c in cols] + ["q"]),
        "boolean": j({"dataframe_records": [{**row, num: True}]}, "boolean"),
        "boolean in instances": j({"instances": [{**row, num: False}]}, "boolean"),
        "null required": j({"dataframe_records": [{**row, num: None}]}, "null"),
        "NaN text required": j({"dataframe_records": [{**row, num: "NaN"}]}, "text"),
        "inf text required": j({"dataframe_records": [{**row, num: "inf"}]}, "text"),
        "arabic-indic digits": j({"dataframe_records": [{**row, num: "١٢٠"}]}, "unicode"),
        "broadcast": j({"inputs": {c: [row[c], row[c]] if c == num else row[c] for c in cols}}, "broadcast"),
    }
    if text:
        out["an integer id"] = j({"dataframe_records": [{**row, text: 7}]})
        out["a float id"] = j({"dataframe_records": [{**row, text: 7.0}]}, "float id")
    return out


def test_invocations_answers_odd_requests_as_mlflow_models_serve(servers, built):
    readme = (ROOT / "README.md").read_text()
    differs = {k: [] for k in DIFFERENCES}
    for name in MODELS:
        m = manifest(built, name)
        row = next(r for r in m["input_example"] if all(v is not None for v in r.values()))
        tol = 1e-3 if name == "glucose-response" else 1e-9  # ONNX trees run in float32
        for case, (ctype, body, expected) in cases(m["inputs"], row).items():
            theirs, ours = post(servers[name]["mlflow"], ctype, body), post(servers[name]["ours"], ctype, body)
            where = f"{name}, {case}: mlflow {theirs}, ours {ours}"
            if expected == "same":
                assert ours[0] == theirs[0], where
                if ours[0] == 200:
                    np.testing.assert_allclose(ours[1]["predictions"], theirs[1]["predictions"], atol=tol, err_msg=where)
                else:
                    assert ours[0] == 400 and ours[1]["error_code"] == "BAD_REQUEST" and ours[1]["message"], where
            else:  # a deliberate difference: we refuse with a message; MLflow answers something
                assert ours[0] == 400 and ours[1]["message"], where
                differs[expected].append(theirs[0])
    for key, label in DIFFERENCES.items():
        assert label in readme, f"the README's table of differences has no row '{label}'"
        assert 200 in differs[key], f"'{label}': mlflow models serve refuses it too now ({differs[key]}); drop it from the README"
