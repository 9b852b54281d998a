"""The Spark engine on a real cluster: a standalone master and two workers on 127.0.0.1 (conftest.spark_cluster).

`features build` and `score` run there, as library calls and as the commands; the executors must import the library
the session shipped (the workers' own Python path holds a decoy `nutrino_ml` that refuses to import) and run the
driver's Python (the workers' default `python3` is another version). The lake is tiny: a few users over two days.
"""
import dataclasses, json, sys
from pathlib import Path

import numpy as np
import pytest

from helpers import BIN, ROOT, local_env, process_state_restored, run
from nutrino_ml.config import load_settings
from nutrino_ml.datalake import Lake
from nutrino_ml.offline import build_feature_tables, build_features, feature_table, feature_table_spec
from nutrino_ml.runtime.bundles import seal_bundle
from nutrino_ml.runtime.features import FEATURE_SETS, GLUCOSE_FORECAST
from nutrino_ml.scoring import predictions_spec, predictions_table, score_to_lake
from nutrino_ml.simulate import simulate_lake, write_simulated_lake
from nutrino_ml.spark import spark_session

MODEL = "glucose-forecast"


def forecaster_bundle(bundles: Path, users) -> Path:
    """A sealed `glucose-forecast` version 1 in the format `nutrino-ml export` writes (the forecaster's JSON state)."""
    b = bundles / MODEL / "1"
    b.mkdir(parents=True)
    state = {"users": list(users), "baseline": [100.0] * len(users), "global_baseline": 95.0, "phi": 0.5, "beta": 10.0, "horizon_min": 30}
    (b / "state.json").write_text(json.dumps(state))
    seal_bundle(b, {"name": MODEL, "version": 1, "aliases": ["production"], "format": "forecaster-json", "model_file": "state.json",
                    "inputs": [{"name": f.name, "type": f.dtype, "nullable": f.nullable} for f in GLUCOSE_FORECAST.inputs],
                    "output": "glucose_future", "feature_set": {"name": "glucose_forecast", "key": "user_id", "request": []}})
    return bundles


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A tiny lake and an exported forecaster; the events as written."""
    tmp = tmp_path_factory.mktemp("cluster-stack")
    events = simulate_lake(users=3, days=2, seed=3)
    write_simulated_lake(Lake(str(tmp / "lake")), events)
    forecaster_bundle(tmp / "app" / "chalicelib" / "models", sorted(events["users"].user_id))
    return {"tmp": tmp, "events": events}


def test_features_build_and_score_run_the_shipped_library_on_two_workers(spark_cluster, stack):
    s = load_settings("test", path=ROOT / "settings.ini", environ={})
    settings = dataclasses.replace(s, datalake_root=str(stack["tmp"] / "lake"), spark_master=spark_cluster["master"],
                                   bundle_dir=str(stack["tmp"] / "app" / "chalicelib" / "models"))
    lake, said = Lake(settings.datalake_root), []
    with process_state_restored():
        spark = spark_session(settings, "nutrino_ml-cluster-test")
        try:
            assert spark.sparkContext.master == spark_cluster["master"]
            shipped = {Path(f).name for f in spark.sparkContext.listFiles if f.endswith(".zip")}
            built = build_feature_tables(settings, "spark", spark=spark, progress=said.append)
            scored = score_to_lake(settings, MODEL, "spark", spark=spark, progress=said.append)
            ran = spark.sparkContext.parallelize(range(4), 4).map(
                lambda _: (__import__("socket").gethostname(), __import__("os").getpid(), tuple(__import__("sys").version_info[:2]),
                           __import__("nutrino_ml").__file__)).collect()
        finally:
            spark.stop()
    assert len(shipped) == 1 and {Path(f).parent.parent.name for *_, f in ran} == shipped, ran  # the zip, not a copy on disk
    assert {v for _, _, v, _ in ran} == {tuple(sys.version_info[:2])}, ran                     # the driver's Python
    assert f"the executors ran {min(shipped)}" in next(l for l in said if l.startswith("spark: one pass")), said
    for fset in FEATURE_SETS.values():
        got = lake.read_table(feature_table(fset), feature_table_spec(fset)).sort_values("event_id", ignore_index=True)
        want = build_features(fset, stack["events"]).sort_values("event_id", ignore_index=True)
        assert built[fset.name]["rows"] == len(got) == len(want) > 0, fset.name
        assert got.event_id.tolist() == want.event_id.tolist(), fset.name
        for f in fset.features:
            if f.dtype == "double":
                np.testing.assert_allclose(got[f.name].to_numpy(float), want[f.name].to_numpy(float), rtol=0, atol=1e-9, equal_nan=True, err_msg=f.name)
    preds = lake.read_table(predictions_table(MODEL), predictions_spec(MODEL, GLUCOSE_FORECAST))
    assert scored["rows"] == len(preds) == built["glucose_forecast"]["rows"] and scored["rejected"] == 0 and set(preds.version) == {1}


def test_the_commands_run_on_the_cluster_without_pysparks_python_set(spark_cluster, stack, tmp_path):
    env = {**local_env(stack["tmp"]), "NUTRINO_SPARK_MASTER": spark_cluster["master"], "PYSPARK_PYTHON": ""}
    out = run([BIN / "nutrino-ml", "features", "build", "--engine", "spark"], env=env, timeout=300).stdout
    assert "glucose_forecast:" in out and "(spark)" in out, out[-3000:]
    out = run([BIN / "nutrino-ml", "score", "--engine", "spark", "--model", f"{MODEL}@production"], env=env, timeout=300).stdout
    assert f"{MODEL} version 1:" in out and "0 rows refused" in out, out[-3000:]
