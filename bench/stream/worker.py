"""One measured run of the stream benchmark, in a fresh process (started by bench/stream/run.py).

    python worker.py --records FILE --store sqlite|dynamodb --batch N [--endpoint URL] [--cache-events N] [--limit N]

Delivers the records of FILE (a pickle of `[(sequence number, data, partition key), ...]`, a stream in time order) to
`StreamProcessor.process_event` in batches of N, on Lambda's event shape, into a fresh online store: an SQLite file in a
temporary folder, or a new table on the DynamoDB (moto) server at URL. It imports `nutrino_ml` from wherever
`sys.path` finds it, so run.py can point it at an older revision (PYTHONPATH) to measure "before". Per batch it takes
the wall time (`perf_counter`), this process's CPU time (`process_time`: our code and botocore's, not the moto server's,
which runs in its own process) and the HTTP requests the store's client sent (a botocore `before-send` hook: every
round trip, retries included). Prints one line `RESULT {json}` at the end.
"""
from __future__ import annotations

import argparse, json, os, pickle, statistics, sys, tempfile, time, uuid
from collections import Counter
from pathlib import Path


def count_requests(client, counts: Counter):
    """Count every HTTP request `client` sends, by operation (X-Amz-Target), in `counts`."""
    def hook(request, **kw):
        target = request.headers.get("X-Amz-Target", "?")
        counts[(target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]] += 1
    client.meta.events.register("before-send.dynamodb", hook)


def processor(store: str, endpoint: str, tmp: Path, cache_events: int | None):
    from nutrino_ml.runtime.stream import StreamProcessor
    from nutrino_ml.runtime.online import SQLiteStore
    try:
        from nutrino_ml.runtime.dynamo import DynamoStore
    except ImportError:  # a revision before the DynamoDB store had its own module ("before")
        from nutrino_ml.runtime.online import DynamoStore
    from nutrino_ml.runtime.dead_letters import SQLiteDeadLetter
    if store == "sqlite":
        st = SQLiteStore(tmp / "online.db")
    else:
        st = DynamoStore(f"bench-stream-{uuid.uuid4().hex[:8]}", "eu-west-1", endpoint, create=True)
    kw = {} if cache_events is None else {"cache_events": cache_events}
    return StreamProcessor(st, SQLiteDeadLetter(tmp / "dead.db"), **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", required=True)
    ap.add_argument("--store", choices=("sqlite", "dynamodb"), required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--endpoint", default="")
    ap.add_argument("--cache-events", type=int, default=None, help="the processor's window cache size (0: off); default: the processor's own")
    ap.add_argument("--limit", type=int, default=None, help="only the first N records of the stream")
    a = ap.parse_args()
    from nutrino_ml.runtime.stream import kinesis_event
    records = pickle.loads(Path(a.records).read_bytes())[:a.limit]
    tmp = Path(tempfile.mkdtemp(prefix="nutrino-bench-stream-"))
    proc = processor(a.store, a.endpoint, tmp, a.cache_events)
    lines, counts = [], Counter()
    proc.log = lines.append
    if a.store == "dynamodb":
        count_requests(proc.store.db, counts)
    batches = [records[i:i + a.batch] for i in range(0, len(records), a.batch)]
    events = [kinesis_event(b) for b in batches]  # built before timing: Lambda hands the function a parsed event
    per = []
    load0 = os.getloadavg()
    w0, c0 = time.perf_counter(), time.process_time()
    for b, ev in zip(batches, events):
        n0, w, c = sum(counts.values()), time.perf_counter(), time.process_time()
        resp = proc.process_event(ev)
        per.append({"wall_ms": (time.perf_counter() - w) * 1e3, "cpu_ms": (time.process_time() - c) * 1e3,
                    "requests": sum(counts.values()) - n0, "records": len(b), "users": len({pk for _, _, pk in b})})
        if resp["batchItemFailures"]:
            raise SystemExit(f"batch reported failures: {resp['batchItemFailures'][:3]}")
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = len(records)
    stats = [l for l in lines if l.get("event") == "stream_batch"]
    out = {"store": a.store, "batch": a.batch, "records": n, "batches": len(batches), "users": len({pk for _, _, pk in records}),
           "wall_s": wall, "cpu_s": cpu, "records_per_s_wall": n / wall, "records_per_s_cpu": n / cpu,
           "wall_ms_per_batch": wall * 1e3 / len(batches), "cpu_ms_per_batch": cpu * 1e3 / len(batches),
           "wall_ms_per_batch_p50": statistics.median(p["wall_ms"] for p in per), "cpu_ms_per_batch_p50": statistics.median(p["cpu_ms"] for p in per),
           "users_per_batch": sum(p["users"] for p in per) / len(per),
           "requests": sum(counts.values()), "requests_by_operation": dict(counts),
           "requests_per_batch": sum(p["requests"] for p in per) / len(per),
           "requests_per_user_batch": sum(p["requests"] for p in per) / sum(p["users"] for p in per),
           "requests_per_user_batch_max": max((p["requests"] / p["users"] for p in per), default=0),
           "rows_written": sum(l.get("rows", 0) for l in stats),
           "loadavg_before": load0, "loadavg_after": os.getloadavg(),
           "code": str(Path(sys.modules["nutrino_ml"].__file__).parent)}
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
