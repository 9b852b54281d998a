"""Lakes as real CGM data looks: readings every 1, 3, 5 or 15 minutes or at irregular times, and meals logged with their
carbohydrates only. The features are computed at every cadence (and close to the noiseless truth), the stream gives the
batch rows, and a 3-minute, carbs-only lake trains, registers and serves end to end."""
import json, math, shutil

import numpy as np
import pandas as pd
import pytest
from chalice.test import Client

from helpers import BIN, JSON, MODELS, build, copy_app, load_app_module, local_env, mlflow_tracking, run
from nutrino_ml.datalake import Lake
from nutrino_ml.offline import build_features
from nutrino_ml.replay import as_records, events_from_frames, replay
from nutrino_ml.runtime.dead_letters import SQLiteDeadLetter
from nutrino_ml.runtime.features import FEATURE_SETS, GLUCOSE_FORECAST, MEAL_RESPONSE, glucose_forecast_for_user, is_anchor, \
    meal_response_for_user
from nutrino_ml.runtime.online import SQLiteStore
from nutrino_ml.runtime.stream import StreamProcessor
from nutrino_ml.runtime.tables import check_record
from nutrino_ml.simulate import meal_response_curve, simulate_lake

CADENCES = {"1 min": 1, "3 min": 3, "5 min": 5, "15 min": 15, "irregular": None}
NO_MACROS = ["fibre_g", "fat_g", "protein_g"]


def irregular(glucose, seed=0):
    """The readings of a 1-minute lake kept at irregular times: gaps of 1 to 12 readings, drawn at random."""
    rng = np.random.default_rng(seed)
    def thin(g):
        idx = np.cumsum(rng.integers(1, 13, len(g)))
        return g.iloc[idx[idx < len(g)]]
    return pd.concat([thin(g) for _, g in glucose.groupby("user_id")], ignore_index=True)


def lake_at(case, users=3, days=2, seed=8, carbs_only=False):
    """A simulated lake whose sensor reads at `CADENCES[case]` minutes (irregularly for None)."""
    lake = simulate_lake(users=users, days=days, seed=seed, cadence_min=CADENCES[case] or 1, carbs_only=carbs_only)
    return {**lake, "glucose": irregular(lake["glucose"], seed)} if CADENCES[case] is None else lake


def as_sent(events):
    """The events as a producer sends them: a macro nobody logged is left out (not sent as NaN, which is not JSON)."""
    return [{k: v for k, v in e.items() if not (isinstance(v, float) and math.isnan(v))} for e in events]


def late(events, seed=0, max_late_min=60):
    """Profiles first, then the events in order of arrival: each up to `max_late_min` minutes late."""
    rng = np.random.default_rng(seed)
    timed = [e for e in events if e["type"] != "user"]
    arrival = [pd.Timestamp(e["ts"]).value / 60e9 + rng.uniform(0, max_late_min) for e in timed]
    return [e for e in events if e["type"] == "user"] + [timed[i] for i in np.argsort(arrival, kind="stable")]


# --- features at every cadence -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CADENCES)
def test_features_are_computed_at_every_cadence(case):
    lake = lake_at(case)
    gaps = lake["glucose"].groupby("user_id").ts.diff().dropna().dt.total_seconds() / 60
    assert (gaps.min() == CADENCES[case]) if CADENCES[case] else (gaps.nunique() > 10), (case, gaps.describe())
    gf, mr = build_features(GLUCOSE_FORECAST, lake), build_features(MEAL_RESPONSE, lake)
    share = {c: float(df[c].notna().mean()) for df, c in ((gf, "glucose_future"), (gf, "glucose_trend"), (mr, "glucose_rise"), (mr, "glucose_trend"))}
    assert min(share.values()) > 0.85 and len(gf) > 100 and len(mr) > 10, (case, len(gf), len(mr), share)


def noiseless(t):
    """A noiseless glucose trace (mg/dL) at minutes `t` of the day: a baseline of 95 and the simulator's response to three meals."""
    meals = [(8 * 60, 60, 10, 20), (13 * 60, 80, 45, 25), (19 * 60, 35, 5, 10)]  # minute, net carbs, fat, protein
    return 95 + sum(meal_response_curve(t - m, carbs, fat, protein, 1.0) for m, carbs, fat, protein in meals)


def reading_times(case, rng):
    """Minutes of a day at which a sensor reads every `CADENCES[case]` minutes, its clock off by up to 6 seconds (at irregular times for None)."""
    if CADENCES[case] is not None:
        t = np.arange(1, 1440, CADENCES[case], dtype=float)
        return t + rng.uniform(-0.1, 0.1, len(t))
    t = np.cumsum(rng.uniform(0.5, 12, 400))
    return t[t < 1440]


@pytest.mark.parametrize("case", CADENCES)
def test_targets_trends_and_rises_are_close_to_the_noiseless_truth(case):
    t = reading_times(case, np.random.default_rng(1))
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(t, unit="min")
    glucose = {"event_id": np.array([f"g{i}" for i in range(len(t))], object), "user_id": np.array(["u1"] * len(t), object),
               "ts": ts.tz_localize(None).to_numpy("datetime64[us]"), "glucose_mgdl": noiseless(t)}
    f = pd.DataFrame(glucose_forecast_for_user(glucose, anchor_every=1))
    at = ((f.ts - pd.Timestamp("2026-01-01")).dt.total_seconds() / 60).to_numpy()
    has = f.glucose_future.notna()
    assert has.mean() > 0.9 and f.glucose_trend.notna().mean() > 0.9, case
    err = np.abs(f.glucose_future[has] - noiseless(at[has] + 30))
    assert err.max() < 2.0, (case, err.max())
    true_slope = (noiseless(at + 0.01) - noiseless(at - 0.01)) / 0.02
    assert np.nanmedian(np.abs(f.glucose_trend - true_slope)) < 0.3, case  # a 30-minute least-squares slope lags a little
    meals = {"event_id": np.array(["m1", "m2", "m3"], object), "user_id": np.array(["u1"] * 3, object),
             "ts": np.array(["2026-01-01T08:00", "2026-01-01T13:00", "2026-01-01T19:00"], "datetime64[us]"),
             "carbs_g": np.array([60., 80, 35]), **{c: np.full(3, np.nan) for c in NO_MACROS}}
    r = meal_response_for_user(meals, glucose, {"weight_kg": np.array([70.]), "height_cm": np.array([170.])})
    fine = np.arange(0, 1440, 0.1)
    true_peaks = np.array([noiseless(fine[(fine > m) & (fine <= m + 120)]).max() for m in (480, 780, 1140)])
    np.testing.assert_allclose(r["glucose_rise"] + r["glucose_before"], true_peaks, atol=2.5, err_msg=case)


# --- the stream ----------------------------------------------------------------------------------------------------
def streamed(lake, tmp, batch_size=50):
    """The online store's feature rows after `lake`'s events were delivered through the stream processor, late and in batches."""
    proc = StreamProcessor(SQLiteStore(tmp / "s.db"), SQLiteDeadLetter(tmp / "s.db"), log=lambda r: None, clock=lambda: 4e9)
    r = replay(lambda event, ctx: proc.process_event(event), as_records(late(as_sent(events_from_frames(lake)))), batch_size)
    assert r["redelivered"] == 0 and SQLiteDeadLetter(tmp / "s.db").list() == []
    return {name: pd.DataFrame(proc.store.rows(name)) for name in FEATURE_SETS}


@pytest.mark.parametrize("case", ["3 min", "15 min", "irregular"])
def test_the_stream_gives_the_batch_rows_at_any_cadence_with_carbs_only_meals(case, tmp_path):
    lake = lake_at(case, users=2, days=1, seed=4, carbs_only=True)
    online = streamed(lake, tmp_path)
    for name, fs in FEATURE_SETS.items():
        on = online[name].sort_values(["user_id", "ts", "event_id"], ignore_index=True)
        batch = build_features(fs, lake).sort_values(["user_id", "ts", "event_id"], ignore_index=True)
        assert on.event_id.tolist() == batch.event_id.astype(str).tolist(), (case, name)
        num = [f.name for f in fs.features if f.dtype == "double"]
        np.testing.assert_allclose(on[num].to_numpy(float), batch[num].to_numpy(float), rtol=0, atol=1e-9, err_msg=f"{case} {name}")
    assert online["meal_response"][NO_MACROS].isna().all().all()


def test_a_late_reading_that_a_target_is_interpolated_from_updates_that_target(tmp_path):
    """Readings every 5 minutes to 25 minutes after an anchor, one at 29, then one at 49: the target 30 minutes after the
    anchor lies between 29 and 49 (20 minutes apart, the widest gap interpolated across); the reading at 49 arrives last,
    on its own, and the stream recomputes the anchor's row, because the feature set's horizon reaches that far."""
    anchor = next(f"a{i}" for i in range(100) if is_anchor([f"a{i}"], 3)[0])
    ids, times = [anchor] + [f"x{i}" for i in range(1, 7)] + ["late"], [0, 5, 10, 15, 20, 25, 29, 49]
    evs = [check_record("glucose", {"event_id": e, "user_id": "u1", "ts": f"2026-01-01T08:{m:02d}:00Z", "glucose_mgdl": 100.0 + 2 * m})
           for e, m in zip(ids, times)]
    proc = StreamProcessor(SQLiteStore(tmp_path / "s.db"), SQLiteDeadLetter(tmp_path / "s.db"), log=lambda r: None)
    proc.update_entity("u1", {"glucose": evs[:-1]})
    row = lambda: next(r for r in proc.store.rows("glucose_forecast", "u1") if r["event_id"] == anchor)  # noqa: E731
    assert math.isnan(row()["glucose_future"])
    proc.update_entity("u1", {"glucose": evs[-1:]})
    assert row()["glucose_future"] == pytest.approx(160.0)  # on the line from 158 at 29 to 198 at 49


# --- end to end: a 3-minute sensor and carbs-only meals -------------------------------------------------------------
@pytest.fixture(scope="module")
def built_3min(tmp_path_factory):
    """A 3-minute, carbs-only lake; one `ploomber build`; both models promoted and exported into a copy of the app."""
    tmp = tmp_path_factory.mktemp("cadence")
    env = local_env(tmp)
    copy_app(tmp / "app")
    run([BIN / "nutrino-ml", "datalake", "simulate", "--users", "5", "--days", "4", "--seed", "11", "--cadence", "3", "--carbs-only"], env=env)
    build(env, tmp / "products")
    for name in MODELS:
        run([BIN / "nutrino-ml", "models", "promote", name, "latest"], env=env)
    run([BIN / "nutrino-ml", "export"], env=env)
    return {"tmp": tmp, "env": env, "products": tmp / "products", "app": tmp / "app"}


def test_a_3_minute_carbs_only_lake_trains_and_registers_both_models(built_3min):
    import mlflow
    lake = Lake(built_3min["env"]["NUTRINO_DATALAKE_ROOT"])
    assert (lake.read_table("glucose").groupby("user_id").ts.diff().dropna().dt.total_seconds() / 60).min() == 3
    response = pd.read_parquet(built_3min["products"] / "features" / "meal_response.parquet")
    assert response[NO_MACROS].isna().all().all() and response.carbs_g.notna().all() and response.glucose_rise.notna().mean() > 0.85
    forecast = pd.read_parquet(built_3min["products"] / "features" / "glucose_forecast.parquet")
    assert forecast.glucose_future.notna().mean() > 0.9 and forecast.glucose_trend.notna().mean() > 0.9
    with mlflow_tracking(built_3min["env"]["NUTRINO_MLFLOW_TRACKING_URI"]):
        for name in MODELS:
            reg = json.loads((built_3min["products"] / "registered" / f"{name}.json").read_text())
            assert reg["name"] == name and reg["version"] == 1, reg
            sig = mlflow.models.get_model_info(f"models:/{name}/{reg['version']}").signature
            required = {c.name: c.required for c in sig.inputs.inputs}
            assert required["glucose_trend"] is False, (name, required)
            if name == "glucose-response":
                assert required == {"carbs_g": True, "fibre_g": False, "fat_g": False, "protein_g": False, "hour": True, "bmi": True,
                                    "glucose_before": False, "glucose_trend": False}, required


def test_the_served_bundle_answers_a_meal_without_fibre_fat_or_protein(built_3min, tmp_path, monkeypatch):
    monkeypatch.setenv("NUTRINO_ONLINE_STORE", f"sqlite:///{tmp_path}/online.db")
    monkeypatch.setenv("NUTRINO_DEAD_LETTER", f"sqlite:///{tmp_path}/online.db")
    shutil.copytree(built_3min["app"], tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    app = load_app_module(tmp_path / "app")
    lake = simulate_lake(users=5, days=4, seed=11, cadence_min=3, carbs_only=True)
    recent = {t: (df[(df.user_id == "u001") & (df.ts >= df.ts.max() - pd.Timedelta(hours=6))] if t != "users" else df[df.user_id == "u001"])
              for t, df in lake.items()}
    replay(app.features_from_stream, as_records(as_sent(events_from_frames(recent))))
    meal = {"carbs_g": 60.0, "hour": 8.5}
    with Client(app.app) as c:
        post = lambda body: c.http.post("/models/glucose-response/predict", headers=JSON, body=json.dumps(body))  # noqa: E731
        by_rows = post({"rows": [{**meal, "bmi": 24.0, "glucose_before": 98.0, "glucose_trend": 0.1}]})
        assert by_rows.status_code == 200 and np.isfinite(by_rows.json_body["predictions"][0]), by_rows.json_body
        online = post({"user_id": "u001", "meal": meal})
        assert online.status_code == 200 and online.json_body["online"]["user_id"] == "u001", online.json_body
        assert np.isfinite(online.json_body["predictions"][0]), online.json_body
        with_macros = post({"user_id": "u001", "meal": {**meal, "fibre_g": 5.0, "fat_g": 20.0, "protein_g": 25.0}})
        assert with_macros.status_code == 200, with_macros.json_body
        forecast = c.http.post("/models/glucose-forecast/predict", headers=JSON, body=json.dumps({"user_id": "u001"}))
        assert forecast.status_code == 200 and np.isfinite(forecast.json_body["predictions"][0]), forecast.json_body
