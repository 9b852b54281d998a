"""Records per second of the Kinesis feature Lambda (the app's `features_from_stream`), per batch size.

The handler runs in this process on Lambda's event shape, with the embedded SQLite online store in a fresh temporary
folder per batch size: decode + check every record, store the events, recompute the affected users' feature rows with
the feature functions, write rows and each user's newest row. Events come from the simulator, in time order, as a
stream delivers them. Run alone (`python bench/features/kinesis.py`) or from bench/features/run.py.
"""
import json, os, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kinesis_throughput(batch_sizes=(100, 10_000), users=20, days=3, seed=3) -> dict:
    """{batch size: {records, batches, seconds, records_per_s, cpu_ms_per_batch, records_per_cpu_s, rows_written}} for the app's
    Kinesis handler (CPU = this process's `process_time`: the machine may be shared; bench/stream measures more)."""
    import importlib.util
    from nutrino_ml.replay import as_records, events_from_frames
    from nutrino_ml.runtime.stream import kinesis_event
    from nutrino_ml.simulate import simulate_lake

    def load_app(app_dir):
        spec = importlib.util.spec_from_file_location(f"bench_app_{len(out)}", app_dir / "app.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    events = events_from_frames(simulate_lake(users=users, days=days, seed=seed))
    records = as_records(events)
    out = {}
    for size in batch_sizes:
        tmp = Path(tempfile.mkdtemp(prefix="nutrino-bench-kinesis-"))
        os.environ["NUTRINO_ONLINE_STORE"] = os.environ["NUTRINO_DEAD_LETTER"] = f"sqlite:///{tmp}/online.db"
        app = load_app(ROOT / "chalice_app")  # fresh module: its store is the new file
        batches = [kinesis_event(records[i:i + size]) for i in range(0, len(records), size)]
        lines = []
        app.stream_processor().log = lines.append  # keep the batch log lines out of stdout
        t, c = time.perf_counter(), time.process_time()
        for ev in batches:
            assert app.features_from_stream(ev, None) == {"batchItemFailures": []}
        s, cpu = time.perf_counter() - t, time.process_time() - c
        out[size] = {"records": len(records), "batches": len(batches), "seconds": round(s, 3), "records_per_s": round(len(records) / s),
                     "cpu_seconds": round(cpu, 3), "records_per_cpu_s": round(len(records) / cpu), "cpu_ms_per_batch": round(cpu * 1e3 / len(batches), 1),
                     "loadavg": os.getloadavg(),
                     "rows_written": sum(l.get("rows", 0) for l in lines if l.get("event") == "stream_batch"),
                     "users": users, "ms_per_batch_p50": sorted(l["ms"] for l in lines if l.get("event") == "stream_batch")[len(batches) // 2]}
    return out


if __name__ == "__main__":
    for k in ("PLOOMBER_STATS_ENABLED", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        os.environ.setdefault(k, "false" if k.startswith("PLOOMBER") else "true")
    print(json.dumps(kinesis_throughput(tuple(int(x) for x in sys.argv[1:]) or (100, 10_000)), indent=1))
