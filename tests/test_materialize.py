"""`nutrino-ml features materialize` and `features check-skew` on the built lake: the online store materialized from the lake
holds what the stream holds after replaying the same events (SQLite, and DynamoDB on a moto server through batch writes),
a latest row of another feature definition is refused by the app until materialize refreshes it, and planted skew is caught."""
import json
from collections import Counter

import pytest
from chalice.test import Client

from helpers import BIN, JSON, load_app, run
from nutrino_ml.datalake import Lake
from nutrino_ml.materialize import materialize
from nutrino_ml.replay import as_records, events_from_frames
from nutrino_ml.runtime.features import FEATURE_SETS
from nutrino_ml.runtime.dynamo import DynamoStore
from nutrino_ml.runtime.online import SQLiteStore, aws_client
from nutrino_ml.runtime.stream import StreamProcessor, event_records, kinesis_event


def same(a, b):
    """Rows equal value for value (NaN equal to NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def cli(built, store_db, *args):
    """`nutrino-ml ARGS` on the built lake with the online store (and dead letters) in `store_db`; the CompletedProcess."""
    url = f"sqlite:///{store_db}"
    return run([BIN / "nutrino-ml", *args], env={**built["env"], "NUTRINO_ONLINE_STORE": url, "NUTRINO_DEAD_LETTER": url}, check=False)


@pytest.fixture(scope="module")
def lake(built):
    return Lake(built["env"]["NUTRINO_DATALAKE_ROOT"]).read_lake(["users", "meals", "glucose"])


@pytest.fixture(scope="module")
def streamed(lake, tmp_path_factory):
    """An SQLite online store filled by replaying every lake event through `StreamProcessor`, as Kinesis batches."""
    proc = StreamProcessor(SQLiteStore(tmp_path_factory.mktemp("streamed") / "online.db"), dead_letter=None, log=lambda r: None)
    recs = as_records(events_from_frames(lake))
    for i in range(0, len(recs), 250):
        proc.process(event_records(kinesis_event(recs[i:i + 250])))
    return proc.store


def assert_as_streamed(store, streamed, users):
    for name in FEATURE_SETS:
        for u in users:
            assert streamed.latest_row(name, u) is not None and same(store.latest_row(name, u), streamed.latest_row(name, u)), (name, u)
        rows = store.rows(name, users[0])
        assert rows and same(rows, [r for r in streamed.rows(name, users[0]) if r["event_id"] in {x["event_id"] for x in rows}]), name
    assert same(store.events("glucose", users[-1]), streamed.events("glucose", users[-1]))  # the same retention window


def test_materialize_on_sqlite_leaves_the_latest_rows_the_stream_leaves(built, lake, streamed, tmp_path):
    p = cli(built, tmp_path / "online.db", "features", "materialize", "--batch-size", "2")
    assert p.returncode == 0, p.stdout
    users = sorted(lake["users"].user_id)
    progress = [l.split(",")[0] for l in p.stdout.splitlines() if l.startswith("materialize: ")]
    assert progress == ["materialize: 2/5 entities", "materialize: 4/5 entities", "materialize: 5/5 entities"], p.stdout
    assert f"materialized {len(users)} entities into sqlite:///" in p.stdout and "5 latest rows, definition" in p.stdout, p.stdout
    assert_as_streamed(SQLiteStore(tmp_path / "online.db"), streamed, users)


class CountingClient:
    """A boto3 client that counts the calls made through it."""
    def __init__(self, client):
        self.client, self.calls = client, Counter()

    def __getattr__(self, name):
        f = getattr(self.client, name)
        if name == "exceptions" or not callable(f):
            return f
        def call(*a, **kw):
            self.calls[name] += 1
            return f(*a, **kw)
        return call


def test_materialize_on_dynamodb_writes_in_batches_what_the_stream_holds(moto_server, lake, streamed):
    DynamoStore("materialize-test", "eu-west-1", moto_server, create=True)
    client = CountingClient(aws_client("dynamodb", "eu-west-1", moto_server))
    r = materialize(DynamoStore("materialize-test", client=client), lake, batch_size=2)
    print(f"dynamodb: {r['entities']} entities, {r['rows']} rows, {r['batch_writes']} batch writes, {r['seconds']} s; calls {dict(client.calls)}")
    assert r["entities"] == 5 and r["batch_writes"] == client.calls["batch_write_item"] > 0, (r, client.calls)
    assert client.calls["put_item"] == 0, client.calls  # every write went in a BatchWriteItem
    assert_as_streamed(DynamoStore("materialize-test", "eu-west-1", moto_server), streamed, sorted(lake["users"].user_id))


def test_a_row_of_another_definition_is_refused_until_materialize(built, tmp_path, monkeypatch):
    db = tmp_path / "online.db"
    monkeypatch.setenv("NUTRINO_ONLINE_STORE", f"sqlite:///{db}")
    monkeypatch.setenv("NUTRINO_DEAD_LETTER", f"sqlite:///{db}")
    assert cli(built, db, "features", "materialize").returncode == 0
    store = SQLiteStore(db)
    store.put_latest_row("glucose_forecast", "u001", {**store.latest_row("glucose_forecast", "u001"), "_fingerprint": "0123456789ab"})
    meal = {"carbs_g": 60.0, "fibre_g": 4.0, "fat_g": 12.0, "protein_g": 20.0, "hour": 8.5}
    with Client(load_app(built["app"])) as c:
        post = lambda path, body: c.http.post(path, headers=JSON, body=json.dumps(body))  # noqa: E731
        r = post("/models/glucose-forecast/predict", {"user_id": "u001"})
        assert r.status_code == 409 and "0123456789ab" in r.json_body["Message"] and "nutrino-ml features materialize" in r.json_body["Message"], r.json_body
        assert post("/models/glucose-response/predict", {"user_id": "u001", "meal": meal}).status_code == 200  # the other set is current
        assert cli(built, db, "features", "materialize", "--feature-set", "glucose_forecast").returncode == 0
        r = post("/models/glucose-forecast/predict", {"user_id": "u001"})
        assert r.status_code == 200 and r.json_body["online"]["user_id"] == "u001", r.json_body


def test_check_skew_names_a_planted_difference_and_passes_after_materialize(built, lake, tmp_path):
    db = tmp_path / "online.db"
    materialize(SQLiteStore(db), lake)
    store = SQLiteStore(db)
    row = store.latest_row("glucose_forecast", "u003")
    store.put_latest_row("glucose_forecast", "u003", {**row, "glucose_mgdl": row["glucose_mgdl"] + 0.5})
    p = cli(built, db, "features", "check-skew", "--sample", "5", "--seed", "3")
    assert p.returncode == 2, p.stdout
    assert "error: check-skew: glucose_forecast.glucose_mgdl differ from the lake past tolerance 1e-06" in p.stdout, p.stdout
    assert [l.split()[:5] for l in p.stdout.splitlines() if " glucose_mgdl " in l] == [["glucose_forecast", "glucose_mgdl", "5", "1", "0.5"]], p.stdout
    assert cli(built, db, "features", "materialize", "--batch-size", "3").returncode == 0
    p = cli(built, db, "features", "check-skew", "--sample", "5")
    assert p.returncode == 0 and "check-skew: 5 entities of the online store" in p.stdout, p.stdout
