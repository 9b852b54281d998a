"""The `aws` settings profile against real processes on 127.0.0.1: the lake on a moto S3 server, training logged
to an `mlflow server` that proxies its artifacts into moto's S3, promotion and export from that server.

Nothing here may reach real AWS: every settings object handed to a process is checked to point at moto first.
"""
import io, json, math, os, subprocess

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from helpers import BIN, MODELS, ROOT, TASKS, build, copy_app, free_port, ran_tasks, run, stop, wait_http

LAKE_BUCKET, ART_BUCKET = "nutrino-lake-test", "nutrino-mlflow-test"
TABLES = ("users", "meals", "glucose")
BAD_DT = "2026-01-02"


def s3_keys(s3, bucket, prefix=""):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def aws_env(moto_url, tracking_uri, app, lake_prefix="lake"):
    """NUTRINO_* overrides of the aws profile that put the lake in moto, MLflow on the local server, the app in tmp."""
    return {"NUTRINO_SETTINGS": str(ROOT / "settings.ini"), "NUTRINO_PROFILE": "aws",
            "NUTRINO_DATALAKE_ROOT": f"s3://{LAKE_BUCKET}/{lake_prefix}", "NUTRINO_S3_ENDPOINT_URL": moto_url,
            "NUTRINO_MLFLOW_TRACKING_URI": tracking_uri, "NUTRINO_MLFLOW_ARTIFACT_LOCATION": "",
            "NUTRINO_APP_DIR": str(app), "NUTRINO_BUNDLE_DIR": str(app / "chalicelib" / "models"),
            "NUTRINO_REGION": "eu-west-1"}


def checked(env, moto_url):
    """`env` after proving the settings it gives every process are the aws profile's, with nothing on real AWS."""
    from nutrino_ml.config import load_settings
    s = load_settings(environ={**os.environ, **env})
    assert s.profile == "aws"
    assert s.s3_endpoint_url == moto_url and moto_url.startswith("http://127.0.0.1:")
    assert s.datalake_root.startswith(f"s3://{LAKE_BUCKET}/")
    assert s.mlflow_tracking_uri.startswith("http://127.0.0.1:") and s.mlflow_artifact_location == ""
    assert os.environ.get("AWS_ACCESS_KEY_ID") == "testing"  # moto's dummy credentials, never real ones
    return env


@pytest.fixture(scope="module")
def s3(moto_server):
    client = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-1")
    for b in (LAKE_BUCKET, ART_BUCKET):
        client.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


class MlflowServer:
    """`mlflow server` on SQLite in `tmp` that proxies artifacts to s3://ART_BUCKET/mlflow on the moto server."""
    def __init__(self, moto_url, tmp):
        self.tmp, self.url = tmp, f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": moto_url, "AWS_ENDPOINT_URL_S3": moto_url}
        self.log = open(tmp / "server.log", "w")
        self.proc = subprocess.Popen([BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
                                      "--artifacts-destination", f"s3://{ART_BUCKET}/mlflow",
                                      "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--workers", "1"],
                                     cwd=tmp, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self) -> str:
        "Wait until the server answers /health; returns its URL."
        try:
            wait_http(f"{self.url}/health", self.proc, timeout=120)
        except (RuntimeError, TimeoutError) as e:
            self.log.flush()
            raise RuntimeError(f"mlflow server: {e}\n{(self.tmp / 'server.log').read_text()[-4000:]}") from e
        return self.url

    def stop(self):
        stop(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_process(moto_server, s3, tmp_path_factory):
    """The MLflow server, started but not waited for (its start-up overlaps writing the lake)."""
    server = MlflowServer(moto_server, tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(mlflow_process):
    """URL of the running MLflow tracking server."""
    return mlflow_process.ready()


@pytest.fixture(scope="module")
def stack(moto_server, s3, mlflow_process, tmp_path_factory):
    """Simulate the lake into moto, validate it, build the pipeline, promote both models, export them into an app."""
    tmp = tmp_path_factory.mktemp("aws-stack")
    app = copy_app(tmp / "app")
    env = checked(aws_env(moto_server, mlflow_process.url, app), moto_server)
    out = {"tmp": tmp, "app": app, "env": env}
    out["simulate"] = run([BIN / "nutrino-ml", "datalake", "simulate", "--users", "4", "--days", "4", "--seed", "7"], env=env).stdout
    out["validate"] = run([BIN / "nutrino-ml", "datalake", "validate"], env=env).stdout
    mlflow_process.ready()
    out["build"] = build(env, tmp / "products").stdout
    out["registered"] = {m: json.loads((tmp / "products" / "registered" / f"{m}.json").read_text()) for m in MODELS}
    out["promote"] = [run([BIN / "nutrino-ml", "models", "promote", m, "latest"], env=env).stdout for m in MODELS]
    out["export"] = run([BIN / "nutrino-ml", "export"], env=env).stdout
    return out


def test_settings_point_at_moto_and_the_local_server(stack, moto_server, mlflow_server):
    out = run([BIN / "nutrino-ml", "settings"], env=stack["env"]).stdout
    s = json.loads(out)
    assert s["profile"] == "aws" and s["s3_endpoint_url"] == moto_server
    assert s["mlflow_tracking_uri"] == mlflow_server and s["datalake_root"] == f"s3://{LAKE_BUCKET}/lake"


def test_lake_is_hive_partitioned_in_moto_s3(stack, s3):
    keys = set(s3_keys(s3, LAKE_BUCKET, "lake/"))
    for table in TABLES:
        parts = sorted(k for k in keys if k.startswith(f"lake/{table}/dt=") and k.endswith("/part-0.parquet"))
        assert parts, f"no partitions of {table} in s3://{LAKE_BUCKET}/lake: {sorted(keys)[:20]}"
    for dt in ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"):
        assert f"lake/meals/dt={dt}/part-0.parquet" in keys
        assert f"lake/glucose/dt={dt}/part-0.parquet" in keys
    body = s3.get_object(Bucket=LAKE_BUCKET, Key="lake/glucose/dt=2026-01-01/part-0.parquet")["Body"].read()
    df = pq.read_table(io.BytesIO(body)).to_pandas()
    assert len(df) and {"event_id", "user_id", "ts", "glucose_mgdl"} <= set(df.columns)
    assert f"s3://{LAKE_BUCKET}/lake" in stack["simulate"]


def test_validate_passes_against_s3(stack):
    out = stack["validate"]
    assert "users: 1 partitions, 4 rows: ok" in out, out
    assert "meals: 4 partitions" in out and "glucose: 4 partitions" in out and out.count(": ok") == 3, out


def test_build_registers_version_1_of_both_models_on_the_server(stack, mlflow_server):
    assert ran_tasks(stack["build"]) == TASKS, stack["build"][-3000:]
    client = MlflowClient(mlflow_server)
    for name in MODELS:
        assert stack["registered"][name]["version"] == 1, name
        versions = client.search_model_versions(f"name='{name}'")
        assert [int(v.version) for v in versions] == [1], name
        assert versions[0].run_id == stack["registered"][name]["run_id"], name
        run_ = client.get_run(versions[0].run_id)
        assert run_.data.tags["settings_profile"] == "aws", name
        assert run_.data.tags["datalake_root"] == f"s3://{LAKE_BUCKET}/lake", name
        assert run_.info.artifact_uri.startswith("mlflow-artifacts:/"), (name, run_.info.artifact_uri)
        assert {"mae", "rmse", "r2"} <= set(run_.data.metrics), name


def test_run_artifacts_are_objects_in_moto_s3(stack, mlflow_process, mlflow_server, s3):
    client = MlflowClient(mlflow_server)
    keys = s3_keys(s3, ART_BUCKET, "mlflow/")
    for name in MODELS:
        run_id = stack["registered"][name]["run_id"]
        mine = [k for k in keys if f"/{run_id}/artifacts/" in k]
        rel = {k.split(f"/{run_id}/artifacts/", 1)[1] for k in mine}
        assert {f"reports/train-{name}.html", f"reports/evaluate-{name}.html"} <= rel, (name, sorted(rel))
        model_file = "model.onnx" if name == "glucose-response" else "state.json"
        assert {f"serving/{model_file}", "serving/bundle.json"} <= rel, (name, sorted(rel))
        # the logged model (MLflow 3 keeps it under the experiment's models/<model_id>/artifacts/)
        source = client.get_model_version(name, "1").source
        assert source.startswith("models:/m-"), (name, source)
        logged = client.get_logged_model(source[len("models:/"):])
        assert logged.source_run_id == run_id and logged.artifact_location.startswith("mlflow-artifacts:/"), (name, logged)
        where = f"mlflow/{logged.artifact_location[len('mlflow-artifacts:/'):].strip('/')}/"
        model_keys = {k[len(where):] for k in keys if k.startswith(where)}
        assert {"MLmodel", "input_example.json"} <= model_keys, (name, where, sorted(keys))
        assert ("model.skops" if name == "glucose-response" else "data/state.json") in model_keys, (name, sorted(model_keys))
    # the server really proxied to S3: no local artifact store appeared in its working folder
    assert sorted(p.name for p in mlflow_process.tmp.iterdir()) == ["mlflow.db", "server.log"]


def test_promote_and_export_from_the_server_serve_predictions(stack):
    from nutrino_ml.runtime.serving import ServedModels
    for name, out in zip(MODELS, stack["promote"]):
        assert f"{name}: production -> version 1" in out
    bundles = stack["app"] / "chalicelib" / "models"
    for name in MODELS:
        assert (bundles / name / "1" / "manifest.json").is_file(), (name, stack["export"])
        assert f"exported {name} version 1" in stack["export"]
    assert (stack["app"] / "vendor" / "nutrino_ml" / "runtime" / "serving.py").is_file()
    served = ServedModels(bundles)
    for name in MODELS:
        example = served.resolve(name)["input_example"]
        answer = served.serve(name, example)
        assert answer["version"] == 1 and len(answer["predictions"]) == len(example) > 0, name
        assert all(math.isfinite(p) for p in answer["predictions"]), (name, answer)
        # what was exported from the server (via moto S3) is byte for byte what the pipeline bundled
        model_file = served.resolve(name)["model_file"]
        assert (bundles / name / "1" / model_file).read_bytes() == \
               (stack["tmp"] / "products" / "bundles" / name / model_file).read_bytes(), f"{name}: {model_file}"


def test_bad_s3_partition_fails_validate_and_build_without_a_new_version(stack, s3, moto_server, mlflow_server):
    # a copy of the lake under another prefix, with one glucose partition out of range
    for key in s3_keys(s3, LAKE_BUCKET, "lake/"):
        s3.copy_object(Bucket=LAKE_BUCKET, Key="lake-bad/" + key[len("lake/"):], CopySource={"Bucket": LAKE_BUCKET, "Key": key})
    bad_key = f"lake-bad/glucose/dt={BAD_DT}/part-0.parquet"
    df = pq.read_table(io.BytesIO(s3.get_object(Bucket=LAKE_BUCKET, Key=bad_key)["Body"].read())).to_pandas()
    df.loc[1, "glucose_mgdl"] = 900.0
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    s3.put_object(Bucket=LAKE_BUCKET, Key=bad_key, Body=buf.getvalue())

    env = checked(aws_env(moto_server, mlflow_server, stack["tmp"] / "app-bad", "lake-bad"), moto_server)
    message = f"glucose/dt={BAD_DT}: column 'glucose_mgdl' has 1 values outside [20, 600], e.g. 900.0"
    out = run([BIN / "nutrino-ml", "datalake", "validate"], env=env, check=False)
    assert out.returncode == 2 and message in out.stdout, out.stdout[-3000:]

    products = stack["tmp"] / "products-bad"
    out = build(env, products, check=False)
    assert out.returncode != 0 and message in out.stdout, out.stdout[-3000:]
    assert not (products / "registered").exists()
    client = MlflowClient(mlflow_server)
    for name in MODELS:
        assert [int(v.version) for v in client.search_model_versions(f"name='{name}'")] == [1], name
