"""The training pipeline, built for real with `ploomber build` on a tiny synthetic lake."""
import json, shutil, subprocess

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from helpers import BIN, MODELS, ROOT, TASKS, build, local_env, ran_tasks, run


def test_build_runs_every_task_and_registers_both_models(built, built_tracking):
    assert ran_tasks(built["build_output"]) == TASKS
    client = MlflowClient()
    for name, reg in built["registered"].items():
        assert reg["version"] == 1, name
        run_ = client.get_run(reg["run_id"])
        assert {"mae", "rmse", "r2", "baseline_mae"} <= set(run_.data.metrics), name
        assert run_.data.metrics["mae"] < run_.data.metrics["baseline_mae"], name
        assert "test_fraction" in run_.data.params and any(k.startswith("hyperparams.") for k in run_.data.params), name
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        assert run_.data.tags["mlflow.source.git.commit"] == head and run_.data.tags["git_dirty"] in ("true", "false"), name
        arts = {a.path for a in client.list_artifacts(reg["run_id"], "reports")}
        assert arts == {f"reports/train-{name}.html", f"reports/evaluate-{name}.html"}, name
        info = mlflow.models.get_model_info(f"models:/{name}/1")
        assert info.signature is not None and info.saved_input_example_info is not None, name


def test_reports_are_executed_notebooks(built):
    html = (built["products"] / "reports" / "train-glucose-response.html").read_text()
    assert "carbs_g" in html and "importance" in html  # the feature-importance table was rendered


def test_registered_versions_load_in_mlflow_and_match_the_bundles(built, built_tracking):
    from nutrino_ml.runtime.serving import ServedModels
    served = ServedModels(built["app"] / "chalicelib" / "models")
    for name in MODELS:
        spec_feats = pd.read_parquet(built["products"] / "features" / f"{'meal_response' if name == 'glucose-response' else 'glucose_forecast'}.parquet")
        m = served.resolve(name)
        X = spec_feats[[f["name"] for f in m["inputs"]]].head(50)
        ours = served.serve(name, json.loads(X.to_json(orient="records")))["predictions"]
        theirs = np.asarray(mlflow.pyfunc.load_model(f"models:/{name}@production").predict(X), float)
        np.testing.assert_allclose(ours, theirs, atol=1e-3, err_msg=name)


def test_second_build_with_nothing_changed_runs_nothing(built):
    out = build(built["env"], built["products"]).stdout
    assert ran_tasks(out) == set(), out[-2000:]


def test_bad_partition_fails_the_build_before_anything_is_registered(built, tmp_path):
    env = local_env(tmp_path)
    shutil.copytree(built["tmp"] / "lake", tmp_path / "lake")
    part = next((tmp_path / "lake" / "meals" / "dt=2026-01-03").glob("*.parquet"))
    df = pq.read_table(part).to_pandas()
    df.loc[2, "carbs_g"] = -40.0
    df.to_parquet(part, index=False)
    out = build(env, tmp_path / "products", check=False)
    assert out.returncode != 0
    assert "meals/dt=2026-01-03: column 'carbs_g' has 1 values outside [0, 500], e.g. -40.0" in out.stdout
    assert MlflowClient(env["NUTRINO_MLFLOW_TRACKING_URI"]).search_registered_models() == []
    assert not (tmp_path / "products" / "registered").exists()


def test_missing_column_and_duplicate_events_are_named(built, tmp_path):
    env = local_env(tmp_path)
    shutil.copytree(built["tmp"] / "lake", tmp_path / "lake")
    g = tmp_path / "lake" / "glucose"
    first, second = sorted(g.glob("dt=*"))[:2]
    dup = pq.read_table(next(first.glob("*.parquet"))).to_pandas().head(3)
    pd.concat([pq.read_table(next(second.glob("*.parquet"))).to_pandas(), dup]).to_parquet(next(second.glob("*.parquet")), index=False)
    out = run([BIN / "nutrino-ml", "datalake", "validate"], env=env, check=False)
    assert out.returncode == 2 and f"appears in partitions ['{first.name[3:]}', '{second.name[3:]}']" in out.stdout
    part = next((tmp_path / "lake" / "users").glob("dt=*/*.parquet"))
    pq.read_table(part).to_pandas().drop(columns="height_cm").to_parquet(part, index=False)
    out = build(env, tmp_path / "products", check=False)
    assert out.returncode != 0 and "users/dt=2026-01-01, file part-0.parquet: missing columns ['height_cm']" in out.stdout


def test_a_lake_that_lies_stops_extract_and_the_spark_command_says_one_line(built, tmp_path):
    env = local_env(tmp_path)
    shutil.copytree(built["tmp"] / "lake", tmp_path / "lake")
    last = sorted((tmp_path / "lake" / "glucose").glob("dt=*"))[-1]
    part = next(last.glob("*.parquet"))
    df = pq.read_table(part).to_pandas()
    df.loc[4, "ts"] = pd.Timestamp("2099-01-01 08:00", tz="UTC")
    df.to_parquet(part, index=False)
    want = f"glucose/{last.name}: column 'ts' has 1 times in the future"
    out = build(env, tmp_path / "products", check=False)
    assert out.returncode != 0 and want in out.stdout, out.stdout[-3000:]
    assert MlflowClient(env["NUTRINO_MLFLOW_TRACKING_URI"]).search_registered_models() == []
    out = run([BIN / "nutrino-ml", "features", "build", "--engine", "spark"], env=env, check=False)
    ours = [l for l in out.stdout.splitlines() if l.startswith("nutrino-ml features")]
    assert out.returncode == 2 and len(ours) == 1 and want in ours[0] and "Traceback" not in out.stdout, out.stdout[-3000:]


def test_unknown_columns_are_warned_of_and_refused_in_strict_mode(built, tmp_path):
    env = local_env(tmp_path)
    shutil.copytree(built["tmp"] / "lake", tmp_path / "lake")
    part = next((tmp_path / "lake" / "meals" / "dt=2026-01-02").glob("*.parquet"))
    pq.read_table(part).to_pandas().assign(calories=500.0).to_parquet(part, index=False)
    out = run([BIN / "ploomber", "task", "extract", "--env--products", tmp_path / "products"], env=env, cwd=ROOT / "pipelines", check=False)
    assert out.returncode == 0, out.stdout[-3000:]  # the warning is in the task's executed notebook
    assert "meals: column 'calories' is not in the table and is ignored" in (tmp_path / "products" / "extract.ipynb").read_text()
    out = build(env, tmp_path / "products", "--env--strict_columns", "true", check=False)
    assert out.returncode != 0 and "column 'calories' is not in the table and is ignored" in out.stdout and "strict mode refuses it" in out.stdout
