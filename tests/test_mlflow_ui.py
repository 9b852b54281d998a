"""What MLflow's UI shows of the pipeline's runs and models: run names, their source, their dataset, model descriptions."""
import hashlib, json, re, shutil

import pytest
from mlflow.tracking import MlflowClient

from helpers import BIN, MODELS, mlflow_tracking, run

FORECAST = "glucose-forecast"
KEPT = " (Kept up to date by `nutrino-ml models promote`, `route` and `rollback`.)"


def cli(env, *args, check=True):
    return run([BIN / "nutrino-ml", *args], env=env, check=check)


@pytest.fixture(scope="module")
def registry(built, tmp_path_factory):
    """A copy of the built stack's registry, with a second version of the forecaster (the same run as version 1)."""
    tmp = tmp_path_factory.mktemp("mlflow-ui")
    shutil.copytree(built["tmp"] / "mlflow", tmp / "mlflow")
    uri = f"sqlite:///{tmp}/mlflow/mlflow.db"
    env = {**built["env"], "NUTRINO_MLFLOW_TRACKING_URI": uri,
           "NUTRINO_APP_DIR": str(tmp / "app"), "NUTRINO_BUNDLE_DIR": str(tmp / "app" / "chalicelib" / "models")}
    shutil.copytree(built["app"], tmp / "app", ignore=shutil.ignore_patterns("models", "vendor", "__pycache__"))
    client = MlflowClient(uri)
    v1 = client.get_model_version(FORECAST, "1")
    with mlflow_tracking(uri):  # a version's source, a logged model, is looked up on the global tracking URI
        client.create_model_version(FORECAST, v1.source, v1.run_id)
    return {"env": env, "client": client, "bundles": tmp / "app" / "chalicelib" / "models"}


@pytest.mark.parametrize("model", MODELS)
def test_a_pipeline_run_is_named_sourced_and_has_its_lake_partitions_as_dataset(built, model, tmp_path):
    client = MlflowClient(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"])
    r = client.get_run(built["registered"][model]["run_id"])
    assert re.fullmatch(rf"{model} \d{{4}}-\d\d-\d\d \d\d:\d\d \((\w{{7}}(-dirty)?|no git)\)", r.info.run_name), r.info.run_name
    assert r.data.tags["mlflow.runName"] == r.info.run_name
    assert (r.data.tags["mlflow.source.name"], r.data.tags["mlflow.source.type"]) == ("pipelines/tasks/register.py", "JOB")
    [d] = r.inputs.dataset_inputs
    assert {t.key: t.value for t in d.tags} == {"mlflow.data.context": "training"}
    (tmp_path / "lineage").mkdir()
    path = client.download_artifacts(r.info.run_id, "lineage.json", str(tmp_path / "lineage"))
    partitions = json.loads(open(path).read())["data"]["partitions"]
    assert partitions
    sha = hashlib.sha256(json.dumps(sorted((p["table"], p["dt"], p["sha256"]) for p in partitions)).encode()).hexdigest()
    assert d.dataset.digest == sha[:16]
    assert json.loads(d.dataset.profile) == {"partitions": len(partitions), "rows": sum(p["rows"] for p in partitions), "sha256": sha}
    dts = sorted(p["dt"] for p in partitions)
    assert d.dataset.name == f"lake {'+'.join(sorted({p['table'] for p in partitions}))} {dts[0]}..{dts[-1]}"
    # the run's description (first on its page) says its held-out error against its best baseline, and its data
    m = r.data.metrics
    assert r.data.tags["mlflow.note.content"].startswith(
        f"{model}: held-out MAE {m['mae']:.2f} mg/dL, {1 - m['mae'] / m['best_baseline_mae']:.1%} below its best naive baseline ("), r.data.tags["mlflow.note.content"]
    assert f"; trained on {d.dataset.name}." in r.data.tags["mlflow.note.content"]


def aliases(client, name=FORECAST):
    return {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}


def description(client, name=FORECAST):
    d = client.get_registered_model(name).description
    assert d.endswith(KEPT), d
    return d[:-len(KEPT)]


def no_alias_on_two_meanings(client):
    for rm in client.search_registered_models():
        versions = list(rm.aliases.values())
        assert len(versions) == len(set(versions)), (rm.name, rm.aliases)


def test_the_description_says_what_is_live_through_promote_route_and_rollback(registry):
    env, client = registry["env"], registry["client"]
    assert description(client) == "production: version 1 (all traffic)."  # as the built stack's promote left it
    cli(env, "models", "promote", FORECAST, "2", "--alias", "canary")
    assert description(client) == "production: version 1 (all traffic); canary: version 2 (pinned requests only)."
    cli(env, "models", "route", FORECAST, "--weights", "production=90,canary=10", "--sticky-key", "user_id")
    assert description(client) == "production: version 1 (90% of traffic, sticky on user_id); canary: version 2 (10%)."
    assert client.get_model_version(FORECAST, "2").description == "Role: canary (10%)"
    # the canary becomes production: it loses the alias 'canary', the policy names production instead, export still works
    assert f"{FORECAST}: production -> version 2 (was 1; now 'rollback')" in cli(env, "models", "promote", FORECAST, "2").stdout
    assert aliases(client) == {"production": 2, "rollback": 1}
    no_alias_on_two_meanings(client)
    assert description(client) == "production: version 2 (100% of traffic, sticky on user_id); rollback: version 1 (not served)."
    assert client.get_model_version(FORECAST, "1").description == "Role: rollback (not served)"
    cli(env, "export")
    policy = json.loads((registry["bundles"] / FORECAST / "policy.json").read_text())
    assert (policy["weights"], policy["sticky_key"]) == ({"2": 100}, "user_id")
    assert sorted(p.name for p in (registry["bundles"] / FORECAST).iterdir() if p.is_dir()) == ["2"]
    cli(env, "models", "rollback", FORECAST)
    assert description(client) == "production: version 1 (100% of traffic, sticky on user_id); rollback: version 2 (not served)."
    no_alias_on_two_meanings(client)


def test_an_alias_on_the_production_version_is_refused(registry):
    prod = aliases(registry["client"])["production"]
    out = cli(registry["env"], "models", "promote", FORECAST, str(prod), "--alias", "canary", check=False)
    assert out.returncode == 2 and f"version {prod} is production; 'canary' must name another version" in out.stdout, out
    no_alias_on_two_meanings(registry["client"])
