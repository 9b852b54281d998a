"""Canary decisions from real outcomes: logged predictions meet what really happened in the lake, and the verdict
follows the truth. Two versions of the forecaster serve a simulated lake's users behind a sticky 50/50 split, one
truly better (the trained `GlucoseForecaster`) and one truly worse (persistence, 12 mg/dL high); each user is asked
for forecasts at many times, and the outcomes come from the lake. Then the same through the real app: online
requests over `chalice.test.Client` log `as_of`, and `join_outcomes` meets them with the lake's readings."""
import json, shutil

import numpy as np
import pandas as pd
import pytest
from chalice.test import Client

from helpers import JSON, load_app_module
from nutrino_ml.datalake import Lake
from nutrino_ml.inference_log import collect_log, log_frame, read_inference_log
from nutrino_ml.models import GlucoseForecaster
from nutrino_ml.offline import build_features
from nutrino_ml.outcomes import decide, format_verdict, join_outcomes, live_metrics, mae_difference
from nutrino_ml.replay import as_records, events_from_frames, replay
from nutrino_ml.runtime.features import GLUCOSE_FORECAST
from nutrino_ml.runtime.prediction_log import prediction_record
from nutrino_ml.runtime.routing import bucket, choose
from nutrino_ml.runtime.online import SQLiteStore
from nutrino_ml.simulate import simulate_lake

MODEL = "glucose-forecast"
LAKE = simulate_lake(users=12, days=3, seed=21)
MIN_PREDICTIONS, MIN_USERS = 200, 4


def forecasters():
    """`(better, worse)`: functions of feature rows. Better: the forecaster trained on the first day; worse: persistence + 12."""
    rows = build_features(GLUCOSE_FORECAST, LAKE)
    day1 = rows[(rows.ts < rows.ts.min() + pd.Timedelta(days=1)) & rows.glucose_future.notna()]
    model = GlucoseForecaster().fit(day1[["user_id", "glucose_mgdl", "glucose_trend"]], day1.glucose_future)
    return rows, (lambda r: model.predict(r[["user_id", "glucose_mgdl", "glucose_trend"]])), (lambda r: r.glucose_mgdl.to_numpy() + 12.0)


ROWS, BETTER, WORSE = forecasters()


def traffic(production, canary, last=None):
    """The inference log of the two versions (production 1, canary 2) serving every feature row as an online request,
    sticky by user as the app routes; only the first `last` requests when given."""
    weights = {1: 50, 2: 50}
    served = ROWS.assign(version=[choose(weights, bucket(u, MODEL)) for u in ROWS.user_id]).sort_values("ts", ignore_index=True)
    if last:
        served = served.head(last)
    preds = np.where(served.version == 1, production(served), canary(served))
    recs = [prediction_record(f"r{i}", MODEL, int(v), "sticky", False, 0.2, u, [float(p)], int(t.value // 1000))
            for i, (v, u, p, t) in enumerate(zip(served.version, served.user_id, preds, served.ts))]
    return log_frame([{**r, "ts": "2026-01-04T00:00:00Z"} for r in recs])


def verdict(log):
    joined = join_outcomes(log, LAKE)
    v = decide(mae_difference(joined, MODEL, canary=2, production=1, confidence=0.9, n_boot=2000, seed=0), MIN_PREDICTIONS, MIN_USERS)
    print(format_verdict(v))
    return v


def test_the_outcome_is_the_quantity_the_forecaster_was_trained_on():
    joined = join_outcomes(traffic(BETTER, WORSE), LAKE)
    truth = ROWS.set_index(ROWS.ts.dt.as_unit("us").astype("int64").astype(str) + ROWS.user_id).glucose_future
    key = joined.as_of.dt.as_unit("us").astype("int64").astype(str) + joined.user_id
    np.testing.assert_allclose(joined.outcome.to_numpy(), truth.loc[key].to_numpy(), rtol=0, atol=1e-9)  # NaN where the target is NaN
    assert 0.9 < joined.outcome.notna().mean() < 1  # the last half hour of each user has no outcome yet


def test_a_truly_better_canary_is_promoted():
    v = verdict(traffic(production=WORSE, canary=BETTER))
    assert v["verdict"] == "promote", v
    assert v["diff_hi"] < 0 and v["users_canary"] >= MIN_USERS and v["users_production"] >= MIN_USERS


def test_a_truly_worse_canary_is_rolled_back():
    v = verdict(traffic(production=BETTER, canary=WORSE))
    assert v["verdict"] == "roll back", v
    assert v["diff_lo"] > 0


def test_too_few_predictions_keep_collecting():
    v = verdict(traffic(production=WORSE, canary=BETTER, last=60))
    assert v["verdict"] == "keep collecting" and v["reason"].startswith("too few outcomes yet"), v


def test_live_metrics_count_served_predictions_and_their_coverage():
    m = live_metrics(join_outcomes(traffic(BETTER, WORSE), LAKE))
    assert m.n_logged.sum() == len(ROWS) and (m.coverage > 0.9).all() and (m.role == "served").all()
    assert m.set_index("version").mae[1] < m.set_index("version").mae[2]  # production is the better one here


# --- through the real app --------------------------------------------------------------------------------------
def test_online_requests_log_as_of_and_evaluate_joins_them_with_the_lake(built, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NUTRINO_ONLINE_STORE", f"sqlite:///{tmp_path}/online.db")
    monkeypatch.setenv("NUTRINO_DEAD_LETTER", f"sqlite:///{tmp_path}/online.db")
    shutil.copytree(built["app"], tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(built["tmp"] / "lake", tmp_path / "lake")
    shutil.rmtree(tmp_path / "lake" / "inference_log", ignore_errors=True)  # other tests may have collected into the shared lake
    lake = Lake(str(tmp_path / "lake"))
    tables = lake.read_lake(["users", "meals", "glucose"])
    cutoff = tables["glucose"].ts.min() + pd.Timedelta(days=3, hours=9, minutes=2)  # the stream has seen the lake up to here
    app = load_app_module(tmp_path / "app")
    replay(app.features_from_stream, as_records([e for e in events_from_frames(tables) if e["type"] == "user" or pd.Timestamp(e["ts"]) < cutoff]))
    store, users = SQLiteStore(tmp_path / "online.db"), sorted(tables["users"].user_id)
    capsys.readouterr()
    with Client(app.app) as c:
        for u in users:
            assert c.http.post(f"/models/{MODEL}/predict", headers=JSON, body=json.dumps({"user_id": u})).status_code == 200
    lines = capsys.readouterr().out.splitlines()
    assert collect_log(lake, lines)["added"] == len(users)
    log = read_inference_log(lake)
    assert [int(t.value // 1000) for t in log.sort_values("entity").as_of] == [store.latest_row("glucose_forecast", u)["ts"] for u in users]
    joined = join_outcomes(log, tables)
    assert joined.outcome.notna().all(), joined
    g = tables["glucose"].set_index(["user_id", "ts"]).glucose_mgdl
    for r in joined.itertuples():  # a reading exactly 30 minutes later: the outcome is that reading
        if (r.user_id, r.as_of + pd.Timedelta(minutes=30)) in g.index:
            assert r.outcome == g[(r.user_id, r.as_of + pd.Timedelta(minutes=30))], r
