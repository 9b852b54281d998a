"""Several production versions at once: traffic policies from the registry, through export, into the app."""
import json, shutil

import pytest
from chalice.test import Client

from helpers import BIN, load_app_module, mlflow_tracking, run

FORECAST = "glucose-forecast"


@pytest.fixture(scope="module")
def registry(built, tmp_path_factory):
    """A copy of the built stack's registry with three versions of the forecaster (v2, v3 nudged so answers differ)."""
    tmp = tmp_path_factory.mktemp("routing")
    shutil.copytree(built["tmp"] / "mlflow", tmp / "mlflow")
    env = {**built["env"], "NUTRINO_MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow/mlflow.db",
           "NUTRINO_APP_DIR": str(tmp / "app"), "NUTRINO_BUNDLE_DIR": str(tmp / "app" / "chalicelib" / "models")}
    shutil.copytree(built["app"], tmp / "app", ignore=shutil.ignore_patterns("models", "vendor", "__pycache__"))
    # log_and_register sets MLflow's tracking URI (and MLFLOW_TRACKING_URI), logging a model puts folders on sys.path,
    # the first import of scikit-learn sets KMP_* variables: all put back after the block
    with mlflow_tracking(env["NUTRINO_MLFLOW_TRACKING_URI"]):
        import pandas as pd
        from nutrino_ml.bundle import build_bundle
        from nutrino_ml.models import GlucoseForecaster, load_model
        from nutrino_ml.registry import log_and_register
        base = load_model(built["products"] / "models" / f"{FORECAST}.json")
        rows = pd.read_parquet(built["products"] / "features" / "glucose_forecast.parquet").head(50)
        for shift in (5.0, 10.0):
            m = GlucoseForecaster.from_state({**base.state(), "global_baseline": base.state()["global_baseline"] + shift,
                                              "baseline": [b + shift for b in base.state()["baseline"]]})
            build_bundle(m, FORECAST, rows, tmp / f"bundle{shift}")
            log_and_register(FORECAST, m, tmp / f"bundle{shift}", rows.head(3), env["NUTRINO_MLFLOW_TRACKING_URI"], "test",
                             str(tmp / "mlflow" / "artifacts"))  # not MLflow's default ./mlruns in the working directory
    return {"env": env, "app": tmp / "app"}


def cli(env, *args, check=True):
    return run([BIN / "nutrino-ml", *args], env=env, check=check)


def serve(registry):
    cli(registry["env"], "export")
    mod = load_app_module(registry["app"])
    records = []
    mod.models.log = records.append
    return mod, records


def ask(c, user, g=130.0, path=f"/models/{FORECAST}/predict", headers=None):
    r = c.http.post(path, headers={"Content-Type": "application/json", **(headers or {})},
                    body=json.dumps({"rows": [{"user_id": user, "glucose_mgdl": g, "glucose_trend": 0.2}]}))
    assert r.status_code == 200, r.body
    assert r.headers["X-Model-Version"] == str(r.json_body["version"])
    return r.json_body


def test_weighted_sticky_split_over_10000_users_with_a_shadow(registry):
    env = registry["env"]
    cli(env, "models", "promote", FORECAST, "2", "--alias", "canary")
    out = cli(env, "models", "route", FORECAST, "--weights", "production=90,canary=10", "--shadow", "3", "--sticky-key", "user_id").stdout
    assert "production 90%, canary 10%; shadow ['3']; sticky on user_id" in out
    mod, records = serve(registry)
    with Client(mod.app) as c:
        first = {f"user{i}": ask(c, f"user{i}") for i in range(10_000)}
        versions = [a["version"] for a in first.values()]
        assert 0.085 <= versions.count(2) / 10_000 <= 0.115 and versions.count(1) + versions.count(2) == 10_000
        assert {a["route"] for a in first.values()} == {"sticky"}
        # the same user reaches the same version, whatever else the request says
        for u in list(first)[:300]:
            assert ask(c, u, g=95.0)["version"] == first[u]["version"], u
        # pinning skips the policy: by path, and by header (a version or an alias)
        assert ask(c, "user1", path=f"/models/{FORECAST}/versions/3/predict")["version"] == 3
        assert ask(c, "user1", headers={"X-Model-Version": "canary"})["version"] == 2
    answered = [r for r in records if not r["shadow"]]
    shadows = [r for r in records if r["shadow"]]
    assert len(answered) == 10_000 + 300 + 2
    # every request not answered by version 3 was also scored, unanswered, by the shadow version 3
    assert len(shadows) == len(answered) - 1 and {r["version"] for r in shadows} == {3}
    assert {"request_id", "model", "version", "route", "latency_ms", "rows", "entity", "predictions"} <= set(shadows[0])
    by_request = {r["request_id"]: r for r in answered}
    assert all(s["request_id"] in by_request for s in shadows)
    assert shadows[0]["predictions"][0] != by_request[shadows[0]["request_id"]]["predictions"][0]
    registry["records"] = records


def test_logged_predictions_land_in_the_lake_and_compare_versions(registry, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("START RequestId: 1\n" + "\n".join(json.dumps(r) for r in registry["records"]) + "\n")
    env = registry["env"]
    out = cli(env, "inference-log", "collect", log).stdout
    assert f"{len(registry['records'])} records added, 0 already there, 1 other lines skipped" in out
    assert "0 records added" in cli(env, "inference-log", "collect", log).stdout  # idempotent
    table = cli(env, "inference-log", "compare", "--model", FORECAST).stdout
    rows = [l.split() for l in table.splitlines()[1:]]
    assert {(r[1], r[2]) for r in rows} == {("1", "served"), ("2", "served"), ("3", "served"), ("3", "shadow")}
    shadow = next(r for r in rows if r[2] == "shadow")
    served = {r["request_id"]: r["predictions"][0] for r in registry["records"] if not r["shadow"]}
    diffs = [abs(r["predictions"][0] - served[r["request_id"]]) for r in registry["records"] if r["shadow"]]
    assert abs(float(shadow[-1]) - sum(diffs) / len(diffs)) < 1e-4 and float(shadow[-1]) > 1  # v3 sits above v1 and v2


def test_rollback_serves_the_previous_production_version(registry):
    env = registry["env"]
    cli(env, "models", "route", FORECAST, "--weights", "production=100")
    assert "production -> version 3 (was 1; now 'rollback')" in cli(env, "models", "promote", FORECAST, "3").stdout
    mod, _ = serve(registry)
    with Client(mod.app) as c:
        assert ask(c, "u1")["version"] == 3
    assert "production -> version 1 (version 3 is now 'rollback')" in cli(env, "models", "rollback", FORECAST).stdout
    mod, _ = serve(registry)
    with Client(mod.app) as c:
        assert ask(c, "u1")["version"] == 1


@pytest.mark.parametrize("args, message", [
    (["--weights", "production=90,canary=20"], "must be non-negative and add up to 100 (they add up to 110)"),
    (["--weights", "production=50,blue=50"], "no version or alias 'blue'"),
    (["--weights", "production=100", "--shadow", "9"], "no version or alias '9'"),
    (["--weights", "production:100"], "is not ALIAS_OR_VERSION=PERCENT"),
])
def test_a_bad_policy_is_refused_with_a_clear_message(registry, args, message):
    out = cli(registry["env"], "models", "route", FORECAST, *args, check=False)
    assert out.returncode == 2 and message in out.stdout and "Traceback" not in out.stdout
