"""DynamoDB keeps an entity's events and feature rows in chunks (one item per write and time bucket, replayed in write
order); SQLite keeps a row per event. For any sequence of writes, in batches or not, repeated and out-of-order ids,
profiles overwritten, rows recomputed, prunes at bucket edges, both stores must read the same: a property test on a
moto server, with SQLite as the oracle. `make test` tries 40 sequences; `make fuzz` (CHUNK_EXAMPLES=2000) many more."""
import os, uuid

from hypothesis import HealthCheck, given, settings, strategies as st

from nutrino_ml.runtime.dynamo import DynamoStore
from nutrino_ml.runtime.online import SQLiteStore

B = 1_000  # µs in a DynamoDB chunk's time bucket here, so that a few ids span several buckets
ENTITIES = ("u1", "u2")
ids, times = st.sampled_from("abcdefgh"), st.integers(0, 5 * B - 1)
readings = st.lists(st.tuples(ids, times, st.integers(40, 400)), max_size=6)
profile = st.integers(18, 90)
op = st.one_of(
    st.tuples(st.just("events"), st.sampled_from(ENTITIES), readings),
    st.tuples(st.just("profile"), st.sampled_from(ENTITIES), profile),
    st.tuples(st.just("rows"), st.sampled_from(ENTITIES), readings),
    st.tuples(st.just("prune"), st.sampled_from(ENTITIES), st.integers(0, 5)),  # before = a bucket's start
    st.tuples(st.just("batch"), st.sampled_from(ENTITIES), readings, readings, profile),
)


def glucose(entity, rs): return [{"event_id": i, "user_id": entity, "ts": t, "glucose_mgdl": float(v)} for i, t, v in rs]
def fs_rows(entity, rs): return [{"event_id": i, "user_id": entity, "ts": t, "x": float(v)} for i, t, v in rs]


def apply(store, lite, o) -> tuple:
    """Run op `o` on `store`; returns what it returned. A batch writes only the events `lite` (the oracle, before the
    batch) does not hold, as the stream does with the window it read; SQLite would ignore the others anyway."""
    kind, e = o[0], o[1]
    if kind == "events": return store.put_events("glucose", e, glucose(e, o[2]), "event_id")
    if kind == "profile": return store.put_events("users", e, [{"user_id": e, "age": o[2]}], "user_id")
    if kind == "rows": return store.put_rows("fs", e, fs_rows(e, o[2]))
    if kind == "prune": return store.prune("glucose", e, o[2] * B)
    held = {x["event_id"] for x in lite.events("glucose", e)}
    fresh = [x for x in glucose(e, o[2]) if x["event_id"] not in held]
    store.begin()
    store.put_events("glucose", e, fresh, "event_id")
    store.put_events("users", e, [{"user_id": e, "age": o[4]}], "user_id")
    store.put_rows("fs", e, fs_rows(e, o[3]))
    store.put_latest_row("fs", e, {"x": float(o[4])})
    store.put_head(e, {"v": f"batch-{o[4]}", "newest": {"glucose": max([x["ts"] for x in fresh], default=None)}})
    return store.commit()


@settings(max_examples=int(os.environ.get("CHUNK_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=8), lo=times, hi=times)
def test_dynamodb_chunks_read_as_sqlite_rows_do(moto_server, tmp_path, ops, lo, hi):
    dyn = DynamoStore(f"chunks-{uuid.uuid4().hex[:8]}", "eu-west-1", moto_server, create=True, bucket_us=B)
    lite = SQLiteStore(tmp_path / f"{uuid.uuid4().hex}.db")
    for o in ops:
        got = apply(dyn, lite, o)  # first: a batch reads the oracle's state before the op
        want = apply(lite, lite, o)
        assert got == want, (o, got, want)
    for e in ENTITIES:
        for what, read in {"events": lambda s: s.events("glucose", e), "events between": lambda s: s.events("glucose", e, lo, hi),
                           "events from": lambda s: s.events("glucose", e, lo), "events until": lambda s: s.events("glucose", e, hi=hi),
                           "profile": lambda s: s.events("users", e), "newest": lambda s: s.newest_ts("glucose", e),
                           "rows": lambda s: s.rows("fs", e), "latest row": lambda s: s.latest_row("fs", e),
                           "head": lambda s: s.heads([e])}.items():
            assert read(dyn) == read(lite), (e, what, ops)
