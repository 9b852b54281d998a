"""The Kinesis-triggered feature Lambda and the online store: parity with the pandas runtime, bad records, dead letters,
redelivery, DynamoDB / SQS / Kinesis on a moto server, and predictions served from online features."""
import json, shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from chalice.test import Client

from helpers import JSON, MODELS, load_app_module
from nutrino_ml.runtime.features import FEATURE_SETS
from nutrino_ml.offline import build_features
from nutrino_ml.runtime.dead_letters import SQLiteDeadLetter, SQSDeadLetter, open_dead_letter
from nutrino_ml.runtime.dynamo import DynamoStore
from nutrino_ml.runtime.online import SQLiteStore
from nutrino_ml.simulate import simulate_lake
from nutrino_ml.runtime.stream import MAX_RECORD_BYTES, event_records, kinesis_event
from nutrino_ml.replay import as_records, events_from_frames, replay

LAKE = simulate_lake(users=3, days=2, seed=5)


def messy(events, seed=0):
    """The same events as Kinesis may deliver them: profiles first, then shuffled within ~20-event windows,
    10% delivered twice (some much later), and 3% held back for one to three hours."""
    rng = np.random.default_rng(seed)
    users, timed = [e for e in events if e["type"] == "user"], [e for e in events if e["type"] != "user"]
    order = np.argsort(np.arange(len(timed)) + rng.uniform(0, 20, len(timed)))
    out = [timed[i] for i in order]
    for i in rng.choice(len(out), len(out) // 30, replace=False):  # late: moved 12-36 events (1-3 hours of readings) on
        out.insert(min(len(out), i + int(rng.integers(12, 36))), out.pop(i))
    for i in sorted(rng.choice(len(out), len(out) // 10, replace=False), reverse=True):
        out.insert(min(len(out), i + int(rng.integers(0, 200))), out[i])
    return users + out


def assert_same_rows(store_rows, batch, fs):
    online = pd.DataFrame(store_rows).sort_values(["user_id", "ts", "event_id"], ignore_index=True)
    batch = batch.sort_values(["user_id", "ts", "event_id"], ignore_index=True)
    assert online.event_id.tolist() == batch.event_id.astype(str).tolist(), fs.name
    assert (pd.to_datetime(online.ts, unit="us", utc=True) == batch.ts).all(), fs.name
    num = [f.name for f in fs.features if f.dtype == "double"]
    np.testing.assert_allclose(online[num].to_numpy(float), batch[num].to_numpy(float), rtol=0, atol=1e-9, err_msg=fs.name)  # NaN where batch has NaN


@pytest.fixture()
def app_env(tmp_path, monkeypatch):
    """A copy of the app whose online store and dead letters are SQLite files in tmp_path."""
    monkeypatch.setenv("NUTRINO_ONLINE_STORE", f"sqlite:///{tmp_path}/online.db")
    monkeypatch.setenv("NUTRINO_DEAD_LETTER", f"sqlite:///{tmp_path}/online.db")
    monkeypatch.setenv("NUTRINO_STREAM_MAX_ATTEMPTS", "3")
    return tmp_path


def stream_app(built, tmp_path):
    app_dir = tmp_path / "app"
    shutil.copytree(built["app"], app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    return load_app_module(app_dir)


def test_the_lambda_runtime_gives_the_pandas_rows_on_late_duplicate_and_out_of_order_events(built, app_env):
    app = stream_app(built, app_env)
    events = messy(events_from_frames(LAKE))
    r = replay(app.features_from_stream, as_records(events), batch_size=100)
    assert r["records"] == len(events) and r["redelivered"] == 0
    store = SQLiteStore(app_env / "online.db")
    for name, fs in FEATURE_SETS.items():
        assert_same_rows(store.rows(name), build_features(fs, LAKE), fs)
    # each user's newest row is there for serving
    for u in LAKE["users"].user_id:
        assert store.latest_row("glucose_forecast", u)["glucose_mgdl"] == LAKE["glucose"][LAKE["glucose"].user_id == u].sort_values("ts").glucose_mgdl.iloc[-1], u


def test_bad_records_go_to_the_dead_letters_at_once_and_the_good_ones_are_kept(built, app_env):
    app = stream_app(built, app_env)
    events = events_from_frames({t: LAKE[t][LAKE[t].user_id == "u000"] if "user_id" in LAKE[t] else LAKE[t] for t in LAKE})[:120]
    good = as_records(events)
    bad = [("b-json", b'{"type": "glucose", "event_id": ', "u000"),
           ("b-big", json.dumps({"type": "glucose", "pad": "x" * MAX_RECORD_BYTES}).encode(), "u000"),
           ("b-type", json.dumps({"type": "steps", "user_id": "u000", "n": 3}).encode(), "u000"),
           ("b-range", json.dumps({**events[5], "event_id": "gx", "glucose_mgdl": 4000}).encode(), "u000")]
    batch = good[:40] + bad[:2] + good[40:80] + bad[2:] + good[80:]
    ids = lambda resp: [f["itemIdentifier"] for f in resp["batchItemFailures"]]  # noqa: E731
    sent = []
    app.stream_processor().log = lambda r: sent.append(r["record_id"]) if r.get("event") == "stream_dead_letter" else None
    # one delivery: nothing is reported (nothing here can succeed later); every good record is stored, every bad one dead-lettered
    assert ids(app.features_from_stream(kinesis_event(batch), None)) == []
    store = SQLiteStore(app_env / "online.db")
    stored = {e["event_id"] for e in store.events("glucose", "u000")} | {e["event_id"] for e in store.events("meals", "u000")}
    assert stored == {e["event_id"] for e in events if "event_id" in e}
    rows = {n: store.rows(n, "u000") for n in FEATURE_SETS}
    dead = {d["record_id"]: d["reason"] for d in SQLiteDeadLetter(app_env / "online.db").list()}
    assert set(dead) == {"b-json", "b-big", "b-type", "b-range"}, dead
    assert "not JSON" in dead["b-json"] and "at most 65536" in dead["b-big"] and "unknown event type 'steps'" in dead["b-type"]
    assert "field 'glucose_mgdl' = 4000: outside [20, 600]" in dead["b-range"]
    # Kinesis delivers at least once: a redelivery changes no row and sends no record to the dead letters again
    assert ids(app.features_from_stream(kinesis_event(batch[40:]), None)) == []
    assert {n: store.rows(n, "u000") for n in FEATURE_SETS} == rows
    assert sorted(sent) == ["b-big", "b-json", "b-range", "b-type"], sent


def test_a_record_that_is_not_base64_is_dead_lettered_and_the_batch_kept(built, app_env):
    app = stream_app(built, app_env)
    events = events_from_frames({t: LAKE[t][LAKE[t].user_id == "u002"] for t in LAKE})[:30]
    event = kinesis_event(as_records(events))
    event["Records"][3]["kinesis"]["data"] = "%%% not base64 %%%"
    assert app.features_from_stream(event, None) == {"batchItemFailures": []}
    dead = SQLiteDeadLetter(app_env / "online.db").list()
    assert [(d["record_id"], d["data"]) for d in dead] == [(event["Records"][3]["kinesis"]["sequenceNumber"], "%%% not base64 %%%")], dead
    assert "not base64" in dead[0]["reason"]
    assert len(SQLiteStore(app_env / "online.db").events("glucose", "u002")) == sum(e["type"] == "glucose" for e in events) - (events[3]["type"] == "glucose")


@pytest.mark.parametrize("case, ts, reason", [
    ("the year 9999", "9999-12-31T23:00:00Z", "cannot come from the future"),
    ("an hour ahead of the clock", None, "cannot come from the future"),
    ("10^20 milliseconds", 1e20, "cannot come from the future"),
    ("epoch seconds", "seconds", "looks like epoch seconds"),
])
def test_an_implausible_time_is_dead_lettered_and_moves_no_window(built, app_env, case, ts, reason):
    app = stream_app(built, app_env)
    events = [e for e in events_from_frames({t: LAKE[t][LAKE[t].user_id == "u001"] for t in LAKE}) if e["type"] == "glucose"]
    first, later = events[:20], events[20:40]
    last = pd.Timestamp(first[-1]["ts"])
    ts = {None: (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)).isoformat(), "seconds": int(last.timestamp())}.get(ts, ts)
    poison = {**first[-1], "event_id": "poison", "ts": ts}
    recs = as_records(first) + [("9" * 55 + "0", json.dumps(poison).encode(), "u001")] + as_records(later, start=100)
    replay(app.features_from_stream, recs, batch_size=25)
    dead = {d["record_id"]: d["reason"] for d in SQLiteDeadLetter(app_env / "online.db").list()}
    assert list(dead) == ["9" * 55 + "0"] and reason in dead["9" * 55 + "0"], (case, dead)
    store = SQLiteStore(app_env / "online.db")
    assert {e["event_id"] for e in store.events("glucose", "u001")} == {e["event_id"] for e in first + later}, case  # nothing dropped
    assert store.latest_row("glucose_forecast", "u001")["event_id"] == later[-1]["event_id"], case  # the window follows the real readings


def test_a_failing_store_reports_the_records_and_a_retry_completes_them(built, app_env):
    app = stream_app(built, app_env)
    events = events_from_frames({t: LAKE[t][LAKE[t].user_id == "u001"] for t in LAKE})[:60]
    proc = app.stream_processor()
    with pytest.MonkeyPatch.context() as mp:  # the store, not our code, fails; until the block ends
        mp.setattr(proc.store, "put_rows", lambda *a: (_ for _ in ()).throw(OSError("disk I/O error")))
        resp = app.features_from_stream(kinesis_event(as_records(events)), None)
    assert len(resp["batchItemFailures"]) == 60
    assert app.features_from_stream(kinesis_event(as_records(events)), None) == {"batchItemFailures": []}
    batch = build_features(FEATURE_SETS["glucose_forecast"], {"glucose": LAKE["glucose"][LAKE["glucose"].event_id.isin([e.get("event_id") for e in events])]})
    assert_same_rows(proc.store.rows("glucose_forecast", "u001"), batch, FEATURE_SETS["glucose_forecast"])


def test_a_store_that_keeps_failing_dead_letters_after_max_attempts(built, app_env):
    app = stream_app(built, app_env)
    events = [e for e in events_from_frames({t: LAKE[t][LAKE[t].user_id == "u002"] for t in LAKE}) if e["type"] == "glucose"][:10]
    proc, event = app.stream_processor(), kinesis_event(as_records(events))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(proc.store, "put_rows", lambda *a: (_ for _ in ()).throw(OSError("disk I/O error")))
        reported = [len(app.features_from_stream(event, None)["batchItemFailures"]) for _ in range(3)]  # NUTRINO_STREAM_MAX_ATTEMPTS=3
    assert reported == [10, 10, 0], reported  # reported while a retry may help, then dead-lettered: the shard moves on
    dead = SQLiteDeadLetter(app_env / "online.db").list()
    assert len(dead) == 10 and all("the online store failed: OSError: disk I/O error (failed 3 deliveries)" == d["reason"] for d in dead), dead[:2]


class FlakyStore:
    "The SQLite store, whose writes of feature rows fail now and then (a transient failure, as a throttled DynamoDB's)."
    def __init__(self, store, rng, p):
        self._store, self._rng, self._p = store, rng, p
    def __getattr__(self, name):
        return getattr(self._store, name)
    def put_rows(self, *a):
        if self._rng.random() < self._p: raise OSError("throttled")
        return self._store.put_rows(*a)


POISON = [b"{not json", b"[1, 2]", json.dumps({"type": "steps", "user_id": "u000"}).encode(),
          json.dumps({"type": "glucose", "event_id": "p1", "user_id": "u000", "ts": "9999-01-01T00:00:00Z", "glucose_mgdl": 100}).encode(),
          json.dumps({"type": "glucose", "event_id": "p2", "user_id": "u000", "ts": 1767254400, "glucose_mgdl": 100}).encode(),
          json.dumps({"type": "glucose", "event_id": "p3", "user_id": "u000", "ts": 1e20, "glucose_mgdl": 100}).encode(),
          json.dumps({"type": "glucose", "event_id": "p4", "user_id": "u001", "ts": "2026-01-01T08:00:00Z", "glucose_mgdl": 4000}).encode(),
          "not base64"]
STREAM = [e for e in events_from_frames(LAKE)]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, len(STREAM) - 60), st.integers(20, 60), st.lists(st.tuples(st.integers(0, 59), st.sampled_from(POISON)), max_size=8),
       st.integers(5, 40), st.sampled_from([0.0, 0.2, 0.5]), st.integers(0, 2**32 - 1))
def test_every_record_is_stored_dead_lettered_or_reported_and_a_redelivery_changes_nothing(start, n, poison, batch_size, p_fail, seed):
    """A property over random batches with poison mixed in, delivered as Lambda's event source mapping does (again from the
    lowest reported record), to a store that fails now and then: each record ends stored or dead-lettered, never lost; then the
    whole stream delivered again changes no stored event, no feature row and sends nothing more to the dead letters."""
    import random, tempfile
    from pathlib import Path
    from nutrino_ml.runtime.stream import StreamProcessor
    tmp = Path(tempfile.mkdtemp())
    rng = random.Random(seed)
    store, dead, sent = SQLiteStore(tmp / "s.db"), SQLiteDeadLetter(tmp / "s.db"), []
    proc = StreamProcessor(FlakyStore(store, rng, p_fail), dead, max_attempts=3,
                           log=lambda r: sent.append(r["record_id"]) if r.get("event") == "stream_dead_letter" else None)
    events = STREAM[:3] + STREAM[3 + start:3 + start + n]  # profiles, then a stretch of meals and readings
    recs = as_records(events)
    for i, payload in sorted(poison, key=lambda p: p[0], reverse=True):
        recs.insert(min(i, len(recs)), ("p", payload, "u000"))
    recs = [(f"{k + 1:056d}", d, pk) for k, (_, d, pk) in enumerate(recs)]  # sequence numbers in stream order
    def deliver(records):
        event = kinesis_event([(s, d if isinstance(d, bytes) else b"", pk) for s, d, pk in records])
        for r, (_, d, _) in zip(event["Records"], records):
            if not isinstance(d, bytes): r["kinesis"]["data"] = d  # a payload that is not base64
        return proc.process_event(event)
    replay(lambda event, ctx: deliver([(r["kinesis"]["sequenceNumber"], next(d for s, d, _ in recs if s == r["kinesis"]["sequenceNumber"]), r["kinesis"]["partitionKey"])
                                       for r in event["Records"]]), [(s, b"", pk) for s, _, pk in recs], batch_size, max_deliveries=10)
    stored = {(t, e.get("event_id") or e["user_id"]) for t in ("glucose", "meals", "users") for u in ("u000", "u001", "u002") for e in store.events(t, u)}
    dead_ids = {d["record_id"] for d in dead.list()}
    table = {"glucose": "glucose", "meal": "meals", "user": "users"}
    for s, d, _ in recs:
        try: e = json.loads(d) if isinstance(d, bytes) else None
        except ValueError: e = None
        key = (table.get(e.get("type")), e.get("event_id") or e.get("user_id")) if isinstance(e, dict) else None
        assert (key in stored) or (s in dead_ids), f"record {s} ({d[:60]!r}) was neither stored nor dead-lettered"
    assert len(sent) == len(set(sent)), "a record was sent to the dead letters twice"
    proc.store._p = 0.0  # from here on the store is healthy: one more delivery completes what the failures left undone ...
    redeliver = lambda: replay(lambda event, ctx: deliver([(r["kinesis"]["sequenceNumber"], by_seq[r["kinesis"]["sequenceNumber"]], r["kinesis"]["partitionKey"])
                                                           for r in event["Records"]]), [(s, b"", pk) for s, _, pk in recs], batch_size)
    by_seq = {s: d for s, d, _ in recs}
    redeliver()
    state = lambda: ({(n, u): store.rows(n, u) for n in FEATURE_SETS for u in ("u000", "u001", "u002")},
                     {(t, u): store.events(t, u) for t in ("glucose", "meals", "users") for u in ("u000", "u001", "u002")},
                     sorted(d["record_id"] for d in dead.list()))
    before = state()
    redeliver()  # ... and another changes nothing: no event, no feature row, no dead letter
    assert state() == before
    assert len(sent) == len(set(sent)), "a record was sent to the dead letters twice"


def test_serving_fills_a_request_from_online_features(built, app_env):
    app = stream_app(built, app_env)
    replay(app.features_from_stream, as_records(events_from_frames(LAKE)))
    store = SQLiteStore(app_env / "online.db")
    with Client(app.app) as c:
        post = lambda path, body: c.http.post(path, headers=JSON, body=json.dumps(body))  # noqa: E731
        now = store.latest_row("glucose_forecast", "u002")
        r = post("/models/glucose-forecast/predict", {"user_id": "u002"})
        assert r.status_code == 200 and r.json_body["online"]["user_id"] == "u002"
        full = post("/models/glucose-forecast/predict", {"rows": [{"user_id": "u002", "glucose_mgdl": now["glucose_mgdl"],
                                                                   "glucose_trend": None if np.isnan(now["glucose_trend"]) else now["glucose_trend"]}]})
        assert r.json_body["predictions"] == full.json_body["predictions"]
        meal = {"carbs_g": 60.0, "fibre_g": 4.0, "fat_g": 12.0, "protein_g": 20.0, "hour": 8.5}
        r = post("/models/glucose-response/predict", {"user_id": "u002", "meal": meal})
        ctx = store.latest_row("meal_response", "u002")
        row = {**{k: ctx[k] for k in ("bmi", "glucose_before", "glucose_trend")}, **meal}
        assert r.status_code == 200 and r.json_body["predictions"] == post("/models/glucose-response/predict", {"rows": [row]}).json_body["predictions"]
        # a missing entity is a clear 404; a missing meal field a 400 naming it
        r = post("/models/glucose-response/predict", {"user_id": "u999", "meal": meal})
        assert r.status_code == 404 and "no online features for user_id 'u999'" in r.json_body["Message"]
        r = post("/models/glucose-response/predict", {"user_id": "u002", "meal": {k: v for k, v in meal.items() if k != "carbs_g"}})
        assert r.status_code == 400 and "field 'carbs_g' is required" in r.json_body["Message"]


# --- AWS: DynamoDB, SQS and Kinesis on a moto server ----------------------------------------------------------
def test_dynamodb_store_and_sqs_dead_letters_behave_like_sqlite(moto_server, tmp_path):
    dyn = DynamoStore("features-store-test", "eu-west-1", moto_server, create=True, bucket_us=10_000)  # chunks of 10 events' times
    lite = SQLiteStore(tmp_path / "s.db")
    ev = [{"event_id": f"g{i}", "user_id": "u1", "ts": 1000 * i, "glucose_mgdl": 100.0 + i} for i in range(60)]
    for kind, st in (("dynamodb", dyn), ("sqlite", lite)):
        assert st.put_events("glucose", "u1", ev, "event_id") == 60 and st.put_events("glucose", "u1", ev[::3], "event_id") == 0, kind
        st.put_rows("fs", "u1", [{"event_id": f"g{i}", "ts": 1000 * i, "x": float(i)} for i in range(30)])
        st.put_rows("fs", "u1", [{"event_id": "g3", "ts": 3000, "x": -1.0}])
        st.put_latest_row("fs", "u1", {"x": float("nan")})
        assert [st.attempt("r1", "bad"), st.attempt("r1", "bad")] == [1, 2], kind
    queries = {"events": lambda s: s.events("glucose", "u1"), "events from 5000 to 9000": lambda s: s.events("glucose", "u1", 5000, 9000),
               "newest_ts": lambda s: s.newest_ts("glucose", "u1"), "rows of u1": lambda s: s.rows("fs", "u1"),
               "rows of everyone": lambda s: s.rows("fs"), "latest_row of nobody": lambda s: s.latest_row("fs", "nobody")}
    for query, q in queries.items():
        assert q(dyn) == q(lite), query
    assert np.isnan(dyn.latest_row("fs", "u1")["x"])
    assert dyn.prune("glucose", "u1", 30_000) == lite.prune("glucose", "u1", 30_000) == 30  # 30,000 starts a bucket
    assert dyn.events("glucose", "u1") == lite.events("glucose", "u1")
    sqs = SQSDeadLetter("dead-test", "eu-west-1", moto_server, create=True)
    sqs.send("r1", "kinesis", "not JSON", "e30=")
    assert [(d["record_id"], d["reason"]) for d in open_dead_letter("sqs://dead-test", "eu-west-1", moto_server).drain()] == [("r1", "not JSON")]


def test_kinesis_to_lambda_to_dynamodb_end_to_end(built, moto_server, tmp_path, monkeypatch):
    """Records put on a (moto) Kinesis stream, read back with GetRecords, delivered to the app's handler in Lambda's event shape,
    redelivered from the lowest failed sequence number as Lambda does; features land in DynamoDB, dead letters in SQS."""
    from nutrino_ml.runtime.online import aws_client
    kin = aws_client("kinesis", "eu-west-1", moto_server)
    kin.create_stream(StreamName="events-e2e", ShardCount=1)
    kin.get_waiter("stream_exists").wait(StreamName="events-e2e")
    DynamoStore("features-e2e", "eu-west-1", moto_server, create=True)
    SQSDeadLetter("dead-e2e", "eu-west-1", moto_server, create=True)
    for k, v in {"ONLINE_STORE": "dynamodb://features-e2e", "DEAD_LETTER": "sqs://dead-e2e", "AWS_ENDPOINT_URL": moto_server,
                 "STREAM_NAME": "events-e2e", "STREAM_MAX_ATTEMPTS": "2", "REGION": "eu-west-1"}.items():
        monkeypatch.setenv(f"NUTRINO_{k}", v)
    app = stream_app(built, tmp_path)
    lake = {t: LAKE[t][LAKE[t].user_id == "u001"] for t in LAKE}
    events = messy(events_from_frames(lake), seed=3)[:250]
    payloads = [json.dumps(e, default=str).encode() for e in events]
    payloads.insert(17, b"not json at all")
    for i in range(0, len(payloads), 100):
        kin.put_records(StreamName="events-e2e", Records=[{"Data": d, "PartitionKey": "u001"} for d in payloads[i:i + 100]])
    shard = kin.list_shards(StreamName="events-e2e")["Shards"][0]["ShardId"]
    arn = kin.describe_stream_summary(StreamName="events-e2e")["StreamDescriptionSummary"]["StreamARN"]
    # the event source mapping: read a batch, invoke, on a partial failure read again from the lowest failed sequence number
    position, invocations, done = {"ShardIteratorType": "TRIM_HORIZON"}, 0, 0
    while True:
        it = kin.get_shard_iterator(StreamName="events-e2e", ShardId=shard, **position)["ShardIterator"]
        recs = kin.get_records(ShardIterator=it, Limit=60)["Records"]
        if not recs:
            break
        batch = [(r["SequenceNumber"], r["Data"], r["PartitionKey"]) for r in recs]
        event = kinesis_event(batch, arn)
        assert [d for _, d in event_records(event)] == [d for _, d, _ in batch]
        failed = [f["itemIdentifier"] for f in app.features_from_stream(event, None)["batchItemFailures"]]
        invocations += 1
        seq = min(failed, key=int) if failed else batch[-1][0]
        position = {"ShardIteratorType": "AT_SEQUENCE_NUMBER" if failed else "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": seq}
        done += 0 if failed else len(batch)
        assert invocations < 20
    store = DynamoStore("features-e2e", "eu-west-1", moto_server)
    clean = {t: lake[t][lake[t].event_id.isin([e.get("event_id") for e in events])] if "event_id" in lake[t] else lake[t] for t in lake}
    for name, fs in FEATURE_SETS.items():
        assert_same_rows(store.rows(name, "u001"), build_features(fs, clean), fs)
    dead = SQSDeadLetter("dead-e2e", "eu-west-1", moto_server).drain()
    assert len(dead) == 1 and "not JSON" in dead[0]["reason"]
    with Client(app.app) as c:
        r = c.http.post("/models/glucose-forecast/predict", headers=JSON, body=json.dumps({"user_id": "u001"}))
        assert r.status_code == 200 and r.json_body["online"]["feature_set"] == "glucose_forecast"
    assert set(MODELS) == {m["name"] for m in json.loads(Client(app.app).http.get("/models").body)["models"]}


# --- issue 18: one write per batch, each window read once, a window cache that the store keeps honest ----------
DAY = as_records(events_from_frames(simulate_lake(users=20, days=2, seed=7)))  # 20 profiles, then readings and meals in time order
SHARD = DAY[:1020]  # the profiles and 1,000 readings and meals


def count_requests(client):
    """The DynamoDB operations `client` sends over HTTP (every round trip, retries included), as a list that grows."""
    sent = []
    def hook(request, **kw):
        target = request.headers.get("X-Amz-Target", "?")
        sent.append((target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1])
    client.meta.events.register("before-send.dynamodb", hook)
    return sent


@pytest.mark.parametrize("cache_events", [0, 200_000], ids=["cold container", "warm container"])
@pytest.mark.parametrize("size,records", [(100, 1020), (1000, None)], ids=["batch 100", "batch 1000"])
def test_dynamodb_takes_at_most_three_round_trips_per_user_per_batch(moto_server, tmp_path, cache_events, size, records):
    """Batches of 100 records of 20 users (about five each), and of 1,000 over two days (about fifty each, across midnight
    and past the retention window): the DynamoDB requests of a batch, counted at the client, are at most 3 per user once a
    user has a head (and on average over the stream), and the store ends as the SQLite one does."""
    from nutrino_ml.runtime.stream import StreamProcessor
    dyn = DynamoStore(f"round-trips-{cache_events}-{size}", "eu-west-1", moto_server, create=True)
    sent, shard = count_requests(dyn.db), DAY[:records]
    procs = [StreamProcessor(store, SQLiteDeadLetter(tmp_path / "dead.db"), log=lambda r: None, cache_events=cache_events, retention_min=24 * 60)
             for store in (dyn, SQLiteStore(tmp_path / "online.db"))]
    per_user = []
    for i in range(0, len(shard), size):
        batch, before = shard[i:i + size], len(sent)
        assert [p.process_event(kinesis_event(batch)) for p in procs] == [{"batchItemFailures": []}] * 2
        per_user.append((len(sent) - before) / len({pk for _, _, pk in batch}))
    print(f"round trips per user per batch: {[round(x, 2) for x in per_user]}; mean {sum(per_user) / len(per_user):.2f}")
    assert "PutItem" not in sent and "DeleteItem" not in sent, sorted(set(sent))  # every write in a BatchWriteItem
    assert max(per_user[1:]) <= 3 and sum(per_user) / len(per_user) <= 3, per_user  # the first batch meets every user (no head yet)
    lite = procs[1].store
    for u in sorted({pk for _, _, pk in shard}):
        for name in FEATURE_SETS:
            assert dyn.rows(name, u) == lite.rows(name, u) and dyn.latest_row(name, u) == lite.latest_row(name, u), (name, u)
        cut = dyn.heads([u])[u]["newest"]["glucose"] - 24 * 60 * 60_000_000  # what both keep (DynamoDB prunes whole days)
        assert dyn.events("glucose", u, cut) == lite.events("glucose", u, cut) and dyn.heads([u])[u]["newest"] == lite.heads([u])[u]["newest"], u


def test_a_warm_container_reads_again_what_another_container_wrote(built, app_env):
    """The shard moves between two containers (two app modules, each with its own window cache) batch after batch, with late,
    repeated and out-of-order events: each container uses its cached windows only while the store's heads say nobody else
    wrote the user, and the rows are the pandas rows."""
    apps = [stream_app(built, app_env / name) for name in ("a", "b")]
    procs, stats = [app.stream_processor() for app in apps], []
    for p in procs:
        p.log = lambda r: stats.append(r) if r.get("event") == "stream_batch" else None
    recs = as_records(messy(events_from_frames(LAKE), seed=4))
    owner = np.random.default_rng(0).integers(0, 2, len(recs) // 50 + 1).repeat(3)  # a few batches in a row, then the other one
    for k, i in enumerate(range(0, len(recs), 50)):
        assert apps[owner[k]].features_from_stream(kinesis_event(recs[i:i + 50]), None) == {"batchItemFailures": []}
    store = SQLiteStore(app_env / "online.db")
    for name, fs in FEATURE_SETS.items():
        assert_same_rows(store.rows(name), build_features(fs, LAKE), fs)
    assert sum(s.get("windows_cached", 0) for s in stats) > 0 and sum(s.get("windows_read", 0) for s in stats) > len(LAKE["users"]), stats[:3]


class Unhurried:
    """A DynamoDB client that processes only half of every other BatchWriteItem and BatchGetItem, as a throttled table does."""
    def __init__(self, client):
        self.client, self.calls = client, 0
    def __getattr__(self, name):
        return getattr(self.client, name)
    def batch_write_item(self, RequestItems):
        self.calls += 1
        (table, reqs), = RequestItems.items()
        if self.calls % 2 or len(reqs) < 2:
            return self.client.batch_write_item(RequestItems=RequestItems)
        self.client.batch_write_item(RequestItems={table: reqs[:len(reqs) // 2]})
        return {"UnprocessedItems": {table: reqs[len(reqs) // 2:]}}
    def batch_get_item(self, RequestItems):
        self.calls += 1
        (table, ask), = RequestItems.items()
        if self.calls % 2 or len(ask["Keys"]) < 2:
            return self.client.batch_get_item(RequestItems=RequestItems)
        half = len(ask["Keys"]) // 2
        r = self.client.batch_get_item(RequestItems={table: {**ask, "Keys": ask["Keys"][:half]}})
        return {**r, "UnprocessedKeys": {table: {**ask, "Keys": ask["Keys"][half:]}}}


def test_unprocessed_items_are_sent_again_and_the_window_cache_stays_bounded(moto_server, tmp_path):
    """DynamoDB leaves half of some batch calls unprocessed: they are sent again, and the store ends as the SQLite one does;
    a container whose cache holds 60 events keeps no more than that, and computes the same rows."""
    from nutrino_ml.runtime.online import aws_client
    from nutrino_ml.runtime.stream import StreamProcessor
    DynamoStore("unhurried", "eu-west-1", moto_server, create=True)
    client = Unhurried(aws_client("dynamodb", "eu-west-1", moto_server))
    dyn = StreamProcessor(DynamoStore("unhurried", client=client), SQLiteDeadLetter(tmp_path / "d.db"), log=lambda r: None, cache_events=60)
    lite = StreamProcessor(SQLiteStore(tmp_path / "s.db"), SQLiteDeadLetter(tmp_path / "d.db"), log=lambda r: None)
    for i in range(0, 600, 100):
        assert dyn.process_event(kinesis_event(SHARD[i:i + 100])) == lite.process_event(kinesis_event(SHARD[i:i + 100])) == {"batchItemFailures": []}
        assert dyn.cache.events <= 60 and dyn.cache.events == sum(len(w) for w in dyn.cache.windows.values())
    assert client.calls > 10 and 0 < len(dyn.cache.windows) < 20
    for u in sorted({pk for _, _, pk in SHARD[:600]}):
        for name in FEATURE_SETS:
            assert dyn.store.rows(name, u) == lite.store.rows(name, u) and dyn.store.latest_row(name, u) == lite.store.latest_row(name, u), (name, u)
