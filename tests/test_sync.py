"""`nutrino-ml schedule airflow --sync s3://BUCKET/dags` against a moto S3 server on 127.0.0.1, over real HTTP: the first
sync uploads every DAG, the next uploads nothing, an edited DAG goes up again, the DAG of a model the pipeline no longer
has is deleted, and another team's files in the same prefix (even one named like ours) are never touched."""
import os, subprocess

import boto3
import pytest

from helpers import BIN, ROOT
from nutrino_ml.schedule import airflow_dags, sync_dags

BUCKET, URI = "mwaa-environment", "s3://mwaa-environment/dags"
OURS = ["nutrino_train_glucose_forecast.py", "nutrino_train_glucose_response.py"]
THEIRS = {"dags/other_team.py": b"# another team's DAG\n", "dags/nutrino_train_by_hand.py": b"# put there by hand, named like ours\n",
          "dags/archive/nutrino_train_old.py": b"# in a sub-folder\n"}


@pytest.fixture(scope="module")
def s3(moto_server):
    client = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-1")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key, body in THEIRS.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return client


def moto_env(moto_server) -> dict:
    "The environment of a command that talks to the moto server (its dummy credentials are in os.environ)."
    return {**os.environ, "NUTRINO_PROFILE": "test", "NUTRINO_S3_ENDPOINT_URL": moto_server, "NUTRINO_REGION": "eu-west-1"}


def sync(moto_server, *args) -> dict:
    "Run `nutrino-ml schedule airflow --sync URI` against moto; `{uploaded, unchanged, deleted}` file names it printed."
    r = subprocess.run([BIN / "nutrino-ml", "schedule", "airflow", "--sync", URI, *args], capture_output=True, text=True,
                       env=moto_env(moto_server), timeout=300)
    assert r.returncode == 0, r.stderr
    said = {"uploaded": [], "unchanged": [], "deleted": []}
    for line in r.stdout.splitlines():
        what, _, uri = line.partition(" ")
        if what in said:
            said[what].append(uri.removeprefix(URI + "/"))
    return said


def listing(s3) -> dict:
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}


def test_first_sync_uploads_every_dag_and_the_next_uploads_none(s3, moto_server, tmp_path):
    assert sync(moto_server) == {"uploaded": OURS, "unchanged": [], "deleted": []}
    assert sync(moto_server) == {"uploaded": [], "unchanged": OURS, "deleted": []}
    # what is in the bucket is what the generator writes, and Airflow can compile it
    local = airflow_dags(ROOT / "pipelines", tmp_path)
    objects = listing(s3)
    for f in local:
        assert objects[f"dags/{f.name}"] == f.read_bytes(), f.name
        compile(objects[f"dags/{f.name}"], f.name, "exec")


def test_an_edited_dag_is_uploaded_again(s3, moto_server):
    sync(moto_server)
    assert sync(moto_server, "--env", "NUTRINO_STREAM_MAX_ATTEMPTS=5")["uploaded"] == OURS  # a new variable in each DAG's ENV
    assert b"'NUTRINO_STREAM_MAX_ATTEMPTS': '5'" in listing(s3)[f"dags/{OURS[0]}"]
    assert sync(moto_server)["uploaded"] == OURS  # and back


def test_the_dag_of_a_removed_model_is_deleted_and_other_files_are_kept(s3, moto_server, tmp_path):
    # an earlier sync, when the pipeline still had the model glucose-old, left its DAG in the bucket
    local = airflow_dags(ROOT / "pipelines", tmp_path)
    (tmp_path / "nutrino_train_glucose_old.py").write_text(local[0].read_text().replace("glucose-response", "glucose-old"))
    sync_dags(tmp_path, URI, s3)
    assert "dags/nutrino_train_glucose_old.py" in listing(s3)
    said = sync(moto_server)
    assert said["deleted"] == ["nutrino_train_glucose_old.py"] and said["uploaded"] == []
    objects = listing(s3)
    assert sorted(objects) == sorted([*THEIRS, *(f"dags/{n}" for n in OURS)])
    assert all(objects[k] == body for k, body in THEIRS.items())


@pytest.mark.parametrize("uri, says", [("mwaa-environment/dags", "write it as s3://BUCKET/dags"), ("s3://no-such-bucket/dags", "check the bucket")])
def test_sync_refuses_a_uri_that_is_not_s3_and_a_missing_bucket_in_one_line(moto_server, uri, says):
    r = subprocess.run([BIN / "nutrino-ml", "schedule", "airflow", "--sync", uri], capture_output=True, text=True, env=moto_env(moto_server))
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
