"""`nutrino-ml smoke` tests what is live, and the app's log stays to be collected (locally and from CloudWatch exports)."""
import gzip, json, shutil

import pytest

from helpers import BIN, copy_app, mlflow_tracking, run

FORECAST = "glucose-forecast"


def cli(env, *args, check=True):
    return run([BIN / "nutrino-ml", *map(str, args)], env=env, check=check)


def test_smoke_fails_when_nothing_is_exported(built, tmp_path):
    app = copy_app(tmp_path / "app")
    env = {**built["env"], "NUTRINO_APP_DIR": str(app), "NUTRINO_BUNDLE_DIR": str(app / "chalicelib" / "models"),
           "NUTRINO_APP_LOG": str(tmp_path / "app.log")}
    out = cli(env, "smoke", check=False)
    assert out.returncode == 2, out.stdout
    assert out.stdout.strip().splitlines() == [f"nutrino-ml smoke: error: nothing is exported in {app / 'chalicelib' / 'models'} "
                                               "(no index.json): run `nutrino-ml export` first"]


@pytest.fixture(scope="module")
def canary(built, tmp_path_factory):
    """A copy of the built registry with a second forecaster version (nudged) as canary behind a 90/10 sticky split, exported."""
    tmp = tmp_path_factory.mktemp("smoke")
    shutil.copytree(built["tmp"] / "mlflow", tmp / "mlflow")
    shutil.copytree(built["app"], tmp / "app", ignore=lambda d, names: [n for n in names if n in ("models", "vendor", "__pycache__")])
    env = {**built["env"], "NUTRINO_MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow/mlflow.db", "NUTRINO_APP_DIR": str(tmp / "app"),
           "NUTRINO_BUNDLE_DIR": str(tmp / "app" / "chalicelib" / "models"), "NUTRINO_APP_LOG": str(tmp / "logs" / "app.log"),
           "NUTRINO_DATALAKE_ROOT": str(tmp / "lake")}  # collect writes here, not into the shared lake
    with mlflow_tracking(env["NUTRINO_MLFLOW_TRACKING_URI"]):
        import pandas as pd
        from nutrino_ml.bundle import build_bundle
        from nutrino_ml.models import GlucoseForecaster, load_model
        from nutrino_ml.registry import log_and_register
        base = load_model(built["products"] / "models" / f"{FORECAST}.json")
        rows = pd.read_parquet(built["products"] / "features" / "glucose_forecast.parquet").head(50)
        m = GlucoseForecaster.from_state({**base.state(), "global_baseline": base.state()["global_baseline"] + 7,
                                          "baseline": [b + 7 for b in base.state()["baseline"]]})
        build_bundle(m, FORECAST, rows, tmp / "bundle")
        v = log_and_register(FORECAST, m, tmp / "bundle", rows.head(3), env["NUTRINO_MLFLOW_TRACKING_URI"], "test", str(tmp / "mlflow" / "artifacts"))
    cli(env, "models", "promote", FORECAST, "latest", "--alias", "canary")
    cli(env, "models", "route", FORECAST, "--weights", "production=90,canary=10", "--sticky-key", "user_id")
    cli(env, "export")
    return {"tmp": tmp, "env": env, "canary": int(v["version"])}


def test_smoke_calls_every_live_version_pinned_during_a_90_10_split(canary):
    out = cli(canary["env"], "smoke", "--users", 200).stdout
    lines = out.splitlines()
    v2 = canary["canary"]
    # each live version called pinned, and answered by that version
    assert f"POST /models/{FORECAST}/versions/1/predict its input example -> 200 version 1: [" in out
    assert f"POST /models/{FORECAST}/versions/{v2}/predict its input example -> 200 version {v2}: [" in out
    assert "POST /models/glucose-response/versions/1/predict its input example -> 200 version 1: [" in out
    split = next(l for l in lines if l.startswith(f"{FORECAST}: 200 unpinned requests"))
    assert "(sticky on user_id)" in split, split
    counts = {int(w.split()[1]): int(w.split()[3]) for w in split.split("): ", 1)[1].split(", ")}
    assert set(counts) == {1, v2} and sum(counts.values()) == 200 and 8 <= counts[v2] <= 40, split
    table = lines[lines.index(next(l for l in lines if l.startswith("live versions"))) + 1:]
    rows = {(r.split()[0], r.split()[1]): r.split() for r in table[1:]}
    assert rows[(FORECAST, "1")][2:] == ["production", "90%", "200", "-", str(counts[1]), "0"], table
    assert rows[(FORECAST, str(v2))][2:] == ["canary", "10%", "200", "-", str(counts[v2]), "0"], table
    assert rows[("glucose-response", "1")][2:5] == ["production", "100%", "200"], table
    canary["smoked"] = 2 + 1 + 200 + 200  # prediction lines this smoke logged: 3 pinned, 2 x 200 unpinned


def test_collect_reads_the_local_app_log_and_a_gzipped_cloudwatch_export(canary):
    env, tmp = canary["env"], canary["tmp"]
    app_log = tmp / "logs" / "app.log"
    records = [l for l in app_log.read_text().splitlines() if l.startswith('{"event":"prediction"')]
    assert len(records) == canary["smoked"]
    out = cli(env, "inference-log", "collect").stdout  # no file: the app_log setting's
    assert f"reading the app log {app_log}" in out and f"{len(records)} records added, 0 already there" in out, out
    # the same predictions as `aws logs create-export-task` writes them to S3: gzip, `<ISO timestamp> <message>` per line
    export = tmp / "export" / "exportedlogs" / "f1e2d3" / "2026-01-02-[$LATEST]0a1b2c"
    export.mkdir(parents=True)
    with gzip.open(export / "000000.gz", "wt") as f:
        f.write("".join(f"2026-01-02T03:04:05.{i % 1000:03d}Z {r}\n" for i, r in enumerate(records)))
        f.write("2026-01-02T03:04:06.000Z END RequestId: 3f1c\n")
    lake2 = {**env, "NUTRINO_DATALAKE_ROOT": str(tmp / "lake2")}
    out = cli(lake2, "inference-log", "collect", export / "000000.gz").stdout
    assert f"{len(records)} records added, 0 already there, 1 other lines skipped" in out, out
    out = cli(lake2, "inference-log", "collect", tmp / "export", app_log).stdout  # a folder of exports, and the local log: once each
    assert f"0 records added, {len(records)} already there" in out, out  # the same records twice over are one each
    table = cli(lake2, "inference-log", "compare", "--model", FORECAST).stdout
    assert {tuple(l.split()[1:3]) for l in table.splitlines()[1:]} == {("1", "served"), (str(canary["canary"]), "served")}, table
