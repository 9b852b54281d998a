"""The Spark runtime: the same feature rows as pandas on messy events, offline feature tables in the lake, the lake's
own errors, the features task on Spark, and batch scoring with the exported bundles against MLflow's predictions.

One local[2] session for the module, stopped at the end; the data is a few users over a few days.
"""
import dataclasses, re, shutil

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import MODELS, ROOT, process_state_restored
from nutrino_ml.config import load_settings
from nutrino_ml.datalake import TABLES, DatalakeError, Lake
from nutrino_ml.runtime.features import FEATURE_SETS, feature_fingerprint
from nutrino_ml.offline import build_features, conform
from nutrino_ml.runtime.serving import ServedModels
from nutrino_ml.simulate import simulate_lake, write_simulated_lake
from nutrino_ml.offline import build_feature_frames, build_feature_tables, feature_table, feature_table_spec
from nutrino_ml.scoring import predictions_spec, predictions_table, score_spark, score_to_lake
from nutrino_ml.spark import build_features_spark, spark_session

FSET_OF = {"glucose-response": "meal_response", "glucose-forecast": "glucose_forecast"}


@pytest.fixture(scope="module")
def spark():
    """A local Spark session; what it changes in os.environ (PYTHONWARNINGS, PYSPARK_PYTHON) and sys.path (its files folder)
    is put back when it stops."""
    with process_state_restored():
        s = spark_session("local[2]", "nutrino_ml-tests")
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def events():
    """A small simulated lake's tables, with only the columns the lake has."""
    return {t: df[TABLES[t].names] for t, df in simulate_lake(users=4, days=3, seed=5).items()}


def settings_for(lake_root, **more):
    s = load_settings("test", path=ROOT / "settings.ini", environ={})
    return dataclasses.replace(s, datalake_root=str(lake_root), **more)


def assert_same_rows(got, want, fset):
    """Same rows whatever their order: ids and strings equal, timestamps equal, floats within 1e-9, NaN in the same places."""
    order = lambda d: d[fset.columns].sort_values([fset.key, "ts", "event_id"], ignore_index=True)
    got, want = order(got), order(want)
    assert len(got) == len(want) > 0, fset.name
    for f in fset.features:
        if f.dtype == "double":
            np.testing.assert_allclose(got[f.name].to_numpy(float), want[f.name].to_numpy(float), rtol=0, atol=1e-9, equal_nan=True,
                                       err_msg=f"{fset.name}.{f.name}")
        else:
            assert got[f.name].tolist() == want[f.name].tolist(), f"{fset.name}.{f.name}"


def messy(tables, seed=1):
    """The same events as delivered by a stream: shuffled, and one in ten delivered twice."""
    out = {}
    for t, df in tables.items():
        again = df.sample(frac=0.1, random_state=seed) if t != "users" else df.head(0)
        out[t] = pd.concat([df, again]).sample(frac=1, random_state=seed, ignore_index=True)
    return out


def write_late_lake(lake, tables, late=0.03, seed=2):
    """`tables` as daily partitions, shuffled, with a share of the events landing a day late (in the next day's partition)."""
    rng = np.random.default_rng(seed)
    lake.write_partition("users", "2026-01-01", tables["users"])
    for t in ("meals", "glucose"):
        df = tables[t]
        day = df.ts.dt.floor("D") + pd.to_timedelta((rng.random(len(df)) < late).astype(int), unit="D")
        for dt, part in df.groupby(day.dt.strftime("%Y-%m-%d")):
            lake.write_partition(t, dt, part.sample(frac=1, random_state=seed))
    return {t: lake.partitions(t) for t in ("meals", "glucose")}


def test_spark_gives_the_pandas_rows_on_repeated_and_out_of_order_events(spark, events):
    mixed = messy(events)
    assert sum(map(len, mixed.values())) > sum(map(len, events.values()))
    for fset in FEATURE_SETS.values():
        want = build_features(fset, events)
        assert_same_rows(build_features(fset, mixed), want, fset)
        got = build_features_spark(fset, spark, mixed)
        assert [f.name for f in got.schema] == fset.columns, fset.name
        assert_same_rows(conform(got.toPandas(), fset), want, fset)


def test_feature_tables_from_a_lake_with_late_events(spark, events, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    parts = write_late_lake(lake, events)
    assert parts["glucose"][-1] == "2026-01-04"  # late events of the last day made a partition of their own
    settings = settings_for(tmp_path / "lake")
    said = []
    by_spark = build_feature_tables(settings, "spark", spark=spark, progress=said.append)
    assert [l.split(":")[0] for l in said] == ["lake", "spark", "wrote features_meal_response"], said
    assert said[1].startswith(f"spark: one pass over {sum(map(len, events.values())):,} events") and "the executors ran" in said[1], said
    assert not (tmp_path / "lake" / "_staging").exists()
    for fset in FEATURE_SETS.values():
        r = by_spark[fset.name]
        written = lake.read_table(feature_table(fset), feature_table_spec(fset))   # read back by pandas, checked
        assert r["rows"] == len(written) and r["partitions"] == lake.partitions(feature_table(fset)) == sorted(written.dt.unique()), fset.name
        assert (written.dt == written.ts.dt.strftime("%Y-%m-%d")).all(), fset.name  # partitioned by the day of ts
        for p in (tmp_path / "lake" / feature_table(fset)).glob("dt=*"):
            assert any(p.glob("*.parquet")), f"{fset.name}: {p.name}"
        assert_same_rows(written, build_features(fset, events), fset)
        first = next((tmp_path / "lake" / feature_table(fset)).glob("dt=*/*.parquet"))
        assert pd.read_parquet(first).attrs["feature_fingerprint"] == feature_fingerprint(fset), fset.name  # as the pandas engine's tables
    by_pandas = build_feature_tables(settings, "pandas")
    for fset in FEATURE_SETS.values():
        assert by_pandas[fset.name]["rows"] == by_spark[fset.name]["rows"], fset.name
        assert_same_rows(lake.read_table(feature_table(fset), feature_table_spec(fset)), build_features(fset, events), fset)


def test_a_bad_partition_fails_both_engines_with_the_lake_error(spark, events, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_simulated_lake(lake, events)
    part = next((tmp_path / "lake" / "meals" / "dt=2026-01-02").glob("*.parquet"))
    df = pq.read_table(part).to_pandas()
    df.loc[2, "carbs_g"] = -40.0
    df.to_parquet(part, index=False)
    settings = settings_for(tmp_path / "lake")
    with pytest.raises(DatalakeError) as by_spark:
        build_feature_tables(settings, "spark", spark=spark)
    with pytest.raises(DatalakeError) as by_pandas:
        build_feature_tables(settings, "pandas")
    assert str(by_spark.value) == str(by_pandas.value) == "meals/dt=2026-01-02: column 'carbs_g' has 1 values outside [0, 500], e.g. -40.0"
    assert not (tmp_path / "lake" / "features_meal_response").exists()


def _rewrite(lake_root, table, dt, change):
    """Replace the data file of partition `dt` of `table` with `change(frame)` (a pandas frame, written by pandas)."""
    part = next((lake_root / table / f"dt={dt}").glob("*.parquet"))
    change(pq.read_table(part).to_pandas()).to_parquet(part, index=False)


def _add_file(lake_root, table, dt, change):
    """Add a second file to partition `dt`: `change` of the first file's rows, with new event ids."""
    part = next((lake_root / table / f"dt={dt}").glob("*.parquet"))
    df = pq.read_table(part).to_pandas().head(3)
    change(df.assign(event_id=df.event_id + "-2")).to_parquet(part.with_name("part-1.parquet"), index=False)


def _again(lake_root, table, dt, to_dt, rows):
    """Deliver `rows` (positions) of partition `dt`'s file again, as a second file of partition `to_dt`."""
    part = next((lake_root / table / f"dt={dt}").glob("*.parquet"))
    pq.read_table(part).to_pandas().iloc[rows].to_parquet(lake_root / table / f"dt={to_dt}" / "part-1.parquet", index=False)


# Lakes that lie, as they were seen from outside: each defect and the words both engines must refuse it with.
LIES = {
    "readings shifted three hours into the next day": (
        lambda r: _rewrite(r, "glucose", "2026-01-02", lambda d: d.assign(ts=d.ts + pd.Timedelta(hours=3))),
        "glucose/dt=2026-01-02: column 'ts' has", "times after its partition's day ends (2026-01-03T00:00Z)"),
    "a reading dated 2099": (
        lambda r: _rewrite(r, "glucose", "2026-01-03", lambda d: d.assign(ts=d.ts.where(d.index != 5, pd.Timestamp("2099-01-01", tz="UTC")))),
        "glucose/dt=2026-01-03: column 'ts' has 1 times in the future", "lake_max_clock_skew_s"),
    "a partition named dt=yesterday": (
        lambda r: (r / "meals" / "dt=2026-01-03").rename(r / "meals" / "dt=yesterday"),
        "meals: folders ['dt=yesterday'] are not dt=YYYY-MM-DD partitions", ""),
    "times without a time zone": (
        lambda r: _rewrite(r, "glucose", "2026-01-02", lambda d: d.assign(ts=d.ts.dt.tz_localize(None))),
        "glucose/dt=2026-01-02, file", "column 'ts' has times without a time zone (timestamp[us])"),
    "a second file with carbs as text": (
        lambda r: _add_file(r, "meals", "2026-01-02", lambda d: d.assign(carbs_g=d.carbs_g.astype(str))),
        "meals/dt=2026-01-02, file part-1.parquet: column 'carbs_g' has type", "expected float"),
    "an empty last glucose partition": (
        lambda r: _rewrite(r, "glucose", "2026-01-03", lambda d: d.head(0)), "glucose/dt=2026-01-03: no rows", ""),
    "a cut-off file": (
        lambda r: (lambda p: p.write_bytes(p.read_bytes()[:500]))(next((r / "glucose" / "dt=2026-01-02").glob("*.parquet"))),
        "glucose/dt=2026-01-02, file", "unreadable parquet"),
    "readings delivered again the next day (the first in the table's order is named)": (
        lambda r: _again(r, "glucose", "2026-01-02", "2026-01-03", [40, 7, 23]),
        "glucose: column 'event_id' value", "appears in partitions ['2026-01-02', '2026-01-03']"),
    "a meal delivered twice in one partition": (
        lambda r: _again(r, "meals", "2026-01-02", "2026-01-02", [1]), "meals/dt=2026-01-02: column 'event_id' has 1 duplicate values", ""),
    "missing carbs": (
        lambda r: _rewrite(r, "meals", "2026-01-02", lambda d: d.assign(carbs_g=d.carbs_g.where(d.index != 1))),
        "meals/dt=2026-01-02: column 'carbs_g' has 1 missing values", ""),
}


def _started_at_masked(e) -> str:
    "The message of `e` with its build's start time (a UTC time followed by ' + N s') masked."
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(?= \+ )", "<build start>", str(e))


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lake_that_lies_fails_both_engines_with_the_same_line(spark, events, tmp_path, lie):
    make, start, part = LIES[lie]
    write_simulated_lake(Lake(str(tmp_path / "lake")), events)
    make(tmp_path / "lake")
    settings = settings_for(tmp_path / "lake")
    with pytest.raises(DatalakeError) as by_pandas:
        build_feature_tables(settings, "pandas")
    with pytest.raises(DatalakeError) as by_spark:
        build_feature_tables(settings, "spark", spark=spark)
    # each build judges times against its own start ("after <start> + 300 s"): the two builds start a moment apart
    assert _started_at_masked(by_spark.value) == _started_at_masked(by_pandas.value), lie
    assert start in str(by_pandas.value) and part in str(by_pandas.value) and "\n" not in str(by_pandas.value), str(by_pandas.value)
    assert not list((tmp_path / "lake").glob("features_*")) and not (tmp_path / "lake" / "_staging").exists(), lie


def test_late_events_integer_readings_and_unknown_columns_still_build_alike(spark, events, tmp_path):
    """A day's readings landing in the next day's partition (late), a file of whole-number readings, a column the
    table does not have: both engines build the same rows, and say the same about the column and unknown users."""
    lake = Lake(str(tmp_path / "lake"))
    write_simulated_lake(lake, events)
    g = events["glucose"]
    day1 = g[g.ts.dt.strftime("%Y-%m-%d") == "2026-01-01"]
    lake.write_partition("glucose", "2026-01-01", day1.iloc[: len(day1) // 2])
    lake.write_partition("glucose", "2026-01-02", pd.concat([day1.iloc[len(day1) // 2:], g[g.ts.dt.strftime("%Y-%m-%d") == "2026-01-02"]]))
    _rewrite(tmp_path / "lake", "glucose", "2026-01-03", lambda d: d.assign(glucose_mgdl=d.glucose_mgdl.round().astype("int64"), sensor="x"))
    _rewrite(tmp_path / "lake", "meals", "2026-01-03", lambda d: d.assign(user_id=d.user_id.where(d.index != 0, "u-nobody")))
    settings = settings_for(tmp_path / "lake")
    said = {}
    for engine in ("pandas", "spark"):
        with pytest.warns(UserWarning) as w:
            build_feature_tables(settings, engine, **({"spark": spark} if engine == "spark" else {}))
        said[engine] = sorted(str(x.message) for x in w if type(x.message).__name__ == "DatalakeWarning")
        tables = {f.name: lake.read_table(feature_table(f), feature_table_spec(f)) for f in FEATURE_SETS.values()}
        if engine == "pandas": first = tables
    assert said["pandas"] == said["spark"] and len(said["pandas"]) == 2, said
    assert any("column 'sensor' is not in the table" in m for m in said["pandas"]) and any("'u-nobody'" in m for m in said["pandas"])
    for f in FEATURE_SETS.values():
        assert_same_rows(tables[f.name], first[f.name], f)


def test_the_features_task_engines_give_the_same_products(built, spark):
    """What `pipelines/tasks/features.py` runs with `engine: spark`, on the extract task's products of the build."""
    extract = {t: built["products"] / "extract" / f"{t}.parquet" for t in ("users", "meals", "glucose")}
    frames = build_feature_frames(extract, "spark", spark=spark)
    for name in FEATURE_SETS:
        pd.testing.assert_frame_equal(frames[name], pd.read_parquet(built["products"] / "features" / f"{name}.parquet"), obj=name)


def test_batch_scoring_with_the_exported_bundles_matches_mlflow(built, built_tracking, spark, tmp_path):
    bundles = built["app"] / "chalicelib" / "models"
    for name in MODELS:
        version = built["registered"][name]["version"]
        feats = pd.read_parquet(built["products"] / "features" / f"{FSET_OF[name]}.parquet")
        ours = score_spark(spark, feats, bundles, name, "production").toPandas()
        assert set(ours.model) == {name} and set(ours.version) == {version} and ours.error.isna().all(), name
        inputs = [f["name"] for f in ServedModels(bundles).resolve(name, version)["inputs"]]
        theirs = feats[["event_id"]].assign(expected=np.asarray(mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(feats[inputs]), float))
        both = ours.merge(theirs, on="event_id", validate="1:1")
        assert len(both) == len(feats), name
        if name == "glucose-response":  # ONNX runs the trees in float32
            np.testing.assert_allclose(both.prediction, both.expected, rtol=0, atol=1e-4, err_msg=name)
        else:
            np.testing.assert_array_equal(both.prediction, both.expected, err_msg=name)


def test_score_to_lake_writes_predictions_with_their_version(built, spark, tmp_path):
    shutil.copytree(built["tmp"] / "lake", tmp_path / "lake")
    settings = settings_for(tmp_path / "lake", bundle_dir=str(built["app"] / "chalicelib" / "models"))
    build_feature_tables(settings, "spark", spark=spark)
    lake = Lake(settings.datalake_root)
    for name in MODELS:
        fset = FEATURE_SETS[FSET_OF[name]]
        r = score_to_lake(settings, f"{name}@production", spark=spark)
        assert (r["model"], r["version"], r["table"], r["rejected"]) == (name, built["registered"][name]["version"], predictions_table(name), 0)
        by_spark = lake.read_table(predictions_table(name), predictions_spec(name, fset))
        feats = lake.read_table(feature_table(fset), feature_table_spec(fset))
        assert r["rows"] == len(by_spark) == len(feats) and set(by_spark.version) == {r["version"]} and set(by_spark.model) == {name}, name
        assert sorted(by_spark.event_id) == sorted(feats.event_id) and r["partitions"] == sorted(feats.dt.unique()), name
        assert score_to_lake(settings, f"{name}@{r['version']}", "pandas")["rows"] == r["rows"], name
        by_pandas = lake.read_table(predictions_table(name), predictions_spec(name, fset))
        a, b = (d.sort_values("event_id", ignore_index=True) for d in (by_spark, by_pandas))
        np.testing.assert_allclose(a.prediction, b.prediction, rtol=0, atol=1e-4 if name == "glucose-response" else 0, err_msg=name)
