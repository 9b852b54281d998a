"""The README's feature edit, made for real: the 30-minute window before a meal in `meal_response_for_user` becomes
45 minutes in a copy of the library, and pandas, Spark and the stream (with the history it keeps) compute the same
rows to 1e-9, while the definition's fingerprint changes. Run in a subprocess on the edited copy, so every runtime
imports the edited code, Spark's workers too."""
import os, shutil, subprocess, sys, textwrap

import nutrino_ml
from helpers import ROOT, TELEMETRY_OFF
from nutrino_ml.runtime.features import MEAL_RESPONSE, feature_fingerprint

EDIT = ("before_min:float=30", "before_min:float=45")

CHECK = textwrap.dedent('''
    import sys, tempfile
    import numpy as np, pandas as pd
    from nutrino_ml.runtime.features import MEAL_RESPONSE, feature_fingerprint
    from nutrino_ml.datalake import TABLES
    from nutrino_ml.offline import build_features, conform
    from nutrino_ml.simulate import simulate_lake
    from nutrino_ml.replay import events_from_frames, as_records, replay
    from nutrino_ml.runtime.stream import StreamProcessor
    from nutrino_ml.runtime.online import SQLiteStore
    from nutrino_ml.runtime.dead_letters import SQLiteDeadLetter
    from nutrino_ml.spark import build_features_spark, spark_session

    assert MEAL_RESPONSE.lookback_min == 45.0, MEAL_RESPONSE.lookback_min  # the stream keeps what the edited function reads
    assert feature_fingerprint(MEAL_RESPONSE) != sys.argv[1]
    lake = {t: df[TABLES[t].names] for t, df in simulate_lake(users=3, days=2, seed=4).items()}
    order = lambda d: d.sort_values(["user_id", "ts", "event_id"], ignore_index=True)
    by_pandas = order(build_features(MEAL_RESPONSE, lake))
    num = [f.name for f in MEAL_RESPONSE.features if f.dtype == "double"]
    spark = spark_session("local[1]", "feature-edit")
    by_spark = order(conform(build_features_spark(MEAL_RESPONSE, spark, lake).toPandas(), MEAL_RESPONSE))
    spark.stop()
    d = tempfile.mkdtemp()
    sp = StreamProcessor(SQLiteStore(d + "/o.db"), SQLiteDeadLetter(d + "/o.db"), log=lambda r: None)
    replay(lambda e, c: sp.process_event(e), as_records(events_from_frames(lake)), batch_size=50)
    by_stream = pd.DataFrame(sp.store.rows("meal_response")).sort_values(["user_id", "ts", "event_id"], ignore_index=True)
    assert by_spark.event_id.tolist() == by_pandas.event_id.tolist() == by_stream.event_id.tolist()
    for got in (by_spark[num], by_stream[num]):
        np.testing.assert_allclose(got.to_numpy(float), by_pandas[num].to_numpy(float), rtol=0, atol=1e-9)
    before = by_pandas.glucose_before.notna().sum()
    print(f"rows {len(by_pandas)}, glucose_before set in {before}, fingerprint {feature_fingerprint(MEAL_RESPONSE)}")
''')


def test_the_readme_edit_keeps_pandas_spark_and_the_stream_equal(tmp_path):
    src = ROOT / "nutrino_ml"
    assert os.path.samefile(os.path.dirname(nutrino_ml.__file__), src)
    pkg = tmp_path / "pkg" / "nutrino_ml"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    features = pkg / "runtime" / "features.py"
    text = features.read_text()
    assert text.count(EDIT[0]) == 1, "the README's example edit no longer applies: update the README and this test"
    features.write_text(text.replace(*EDIT))
    env = {**os.environ, **TELEMETRY_OFF, "PYTHONPATH": str(tmp_path / "pkg"), "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run([sys.executable, "-c", CHECK, feature_fingerprint(MEAL_RESPONSE)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "rows" in out.stdout, out.stdout
