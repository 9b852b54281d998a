"""Stream benchmark: the Kinesis feature Lambda's `StreamProcessor` on the SQLite and the DynamoDB (moto) online store,
batches of 100, 1,000 and 10,000 records, before and after issue 18 (one transaction / batched writes per batch, each
user's window read once, a window cache in a warm container).

    .venv/bin/python bench/stream/run.py [--sizes 100,1000,10000] [--stores sqlite,dynamodb] [--workloads users20,users500]
                                         [--variants before,cold,warm] [--before-rev REV] [--no-readme]

Workloads (simulated with `nutrino_ml.simulate`, delivered in time order as a stream delivers them, partitioned by user):
`users20` is the issue's (20 users, 3 days: 16,924 records); `users500` is a shard with many users (500 users, the
profiles and then the first 20,000 readings and meals of the day: about 100 users in a batch of 100, one or two
records each).

Variants: `before` runs the code of `--before-rev` (default 8b56544, the last revision before this work; its `nutrino_ml`
is taken with `git archive` into a temporary folder and put first on PYTHONPATH); `cold` is the working tree with the
window cache off (every batch reads every window from the store, as a new container does); `warm` is the working tree as
deployed (the cache on). Each run is a fresh process (bench/stream/worker.py) on a fresh store; the variants of one
(workload, store, batch size) run one after the other, so they share the machine's load of that minute.

Round trips are counted at the DynamoDB client (every HTTP request it sends, retries included); CPU time is the
worker's own (`process_time`; the moto server runs in its own process and is not counted). The machine is shared, so
targets are judged in CPU terms: records/s = records ÷ CPU seconds. DynamoDB wall time on moto says nothing about AWS;
the table states what one Lambda would do at a per-request latency instead.

Writes bench/results/stream.json and, unless --no-readme, the tables into bench/README.md between
`<!-- stream:start -->` and `<!-- stream:end -->`.
"""
from __future__ import annotations

import argparse, datetime, json, os, pickle, shutil, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared report helpers
from report import BENCH_ENV, RESULTS, ROOT, free_port, git_rev, log, machine, wait_http, write_readme  # noqa: E402

HERE = Path(__file__).resolve().parent
PY, BIN = Path(sys.executable), Path(sys.executable).parent
START, END = "<!-- stream:start -->", "<!-- stream:end -->"
BEFORE_REV = "8b56544"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}
WORKLOADS = {"users20": "20 users, 3 days (the issue's: 16,924 records)",
             "users500": "500 users, the first 20,500 records of a day (profiles, then readings and meals)"}
# moto answers a DynamoDB request in 10-100 ms on this machine, so the old code (~4 requests a record) runs on a prefix
# of the stream on DynamoDB: (workload, variant) -> {batch size: records, or None to skip}; absent: the whole stream
DYNAMO_LIMITS = {("users20", "before"): {100: 3000, 1000: 3000, 10000: 10000},
                 ("users500", "before"): {100: 1500, 1000: 1500, 10000: None},
                 ("users500", "cold"): {100: 10500, 1000: 10500, 10000: 10500},
                 ("users500", "warm"): {100: 10500, 1000: 10500, 10000: 10500}}
LATENCY_MS = (5, 10)  # per DynamoDB request, sequential, for the "one Lambda keeps up" column
SHARD = 1000  # records/s one Kinesis shard takes in


def workload(name: str) -> list:
    from nutrino_ml.replay import as_records, events_from_frames
    from nutrino_ml.simulate import simulate_lake
    if name == "users20":
        return as_records(events_from_frames(simulate_lake(users=20, days=3, seed=3)))
    if name == "users500":
        return as_records(events_from_frames(simulate_lake(users=500, days=1, seed=3))[:20_500])
    raise SystemExit(f"unknown workload {name!r}; use one of {sorted(WORKLOADS)}")


def start_moto() -> tuple:
    port = free_port()
    proc = subprocess.Popen([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **AWS},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc)
    return proc, url


def before_code(rev: str, tmp: Path) -> Path:
    """`nutrino_ml` of git revision `rev`, unpacked into `tmp`/src; the folder to put on PYTHONPATH."""
    src = tmp / "src"
    src.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["git", "archive", rev, "nutrino_ml"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=tar, check=True)
    return src


def run_worker(records: Path, store: str, batch: int, endpoint: str, variant: str, before_src: Path | None, limit: int | None) -> dict:
    env = {**os.environ, **BENCH_ENV, **AWS}
    args = [PY, HERE / "worker.py", "--records", records, "--store", store, "--batch", batch, "--endpoint", endpoint]
    if limit:
        args += ["--limit", limit]
    if variant == "before":
        env["PYTHONPATH"] = str(before_src)
    elif variant == "cold":
        args += ["--cache-events", 0]
    p = subprocess.run([str(a) for a in args], env=env, cwd=tempfile.gettempdir(), text=True, capture_output=True, timeout=7200)
    line = next((l for l in reversed(p.stdout.splitlines()) if l.startswith("RESULT ")), None)
    if p.returncode or line is None:
        raise RuntimeError(f"worker {store} {batch} {variant} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    res = json.loads(line[7:])
    if variant == "before" and not res["code"].startswith(str(before_src)):
        raise RuntimeError(f"the 'before' worker imported {res['code']}, not the code of the old revision")
    return res


# --- report -------------------------------------------------------------------------------------------------------
def n0(x) -> str: return f"{x:,.0f}"
def n1(x) -> str: return f"{x:,.1f}"
def n2(x) -> str: return f"{x:,.2f}"


def keeps_up(r: dict, latency_ms: float) -> float:
    """Records/s one Lambda processes at `latency_ms` per (sequential) store request: CPU time + requests × latency per batch."""
    return r["records"] / r["batches"] / ((r["cpu_ms_per_batch"] + r["requests_per_batch"] * latency_ms) / 1e3)


def max_latency_ms(r: dict) -> float | None:
    """The per-request latency (ms, requests sequential) up to which one Lambda keeps up with one shard (SHARD records/s); None if CPU alone is too slow."""
    budget = r["records"] / r["batches"] / SHARD * 1e3 - r["cpu_ms_per_batch"]  # ms a batch may take, less its CPU
    return budget / r["requests_per_batch"] if budget > 0 and r["requests_per_batch"] else None


def latency_text(r: dict) -> str:
    x = max_latency_ms(r)
    return "no (CPU alone)" if x is None else f"≤ {x:.1f} ms"


def targets(res: dict) -> list:
    """`(what, measured, target, met)` of issue 18's targets."""
    out, runs = [], res["runs"]
    for wl in res["workloads"]:
        for batch, goal in ((100, 5000), (1000, 20000)):
            r = runs.get(f"{wl}/sqlite/{batch}/warm")
            if r:
                out.append((f"SQLite, batch {batch:,}, {wl}: records per CPU second (warm container)", n0(r["records_per_s_cpu"]), f"≥ {goal:,}", r["records_per_s_cpu"] >= goal))
        for batch in res["sizes"]:
            for v in ("warm", "cold"):
                r = runs.get(f"{wl}/dynamodb/{batch}/{v}")
                if r:
                    out.append((f"DynamoDB, batch {batch:,}, {wl}, {v}: round trips per user per batch (mean; worst batch {n1(r['requests_per_user_batch_max'])})",
                                n2(r["requests_per_user_batch"]), "≤ 3", r["requests_per_user_batch"] <= 3))
        for batch in res["sizes"]:
            r = runs.get(f"{wl}/dynamodb/{batch}/warm")
            if r:
                out.append((f"DynamoDB, batch {batch:,}, {wl}, warm: one Lambda keeps up with one shard ({SHARD:,} records/s) at a per-request latency "
                            f"(sequential requests; records/s at {LATENCY_MS[1]} ms: {n0(keeps_up(r, LATENCY_MS[1]))})", latency_text(r),
                            f"≥ {LATENCY_MS[0]} ms", (max_latency_ms(r) or 0) >= LATENCY_MS[0]))
    return out


def merged(old: dict, new: dict) -> dict:
    """`new` with the runs of `old` it did not measure again; the axes are the union of both."""
    for r in old["runs"].values():
        r.setdefault("measured", f"{old['date']}, git {old['git']}")
    out = {**new, "runs": {**old["runs"], **new["runs"]}, "earlier": old.get("earlier", []) + [{k: old[k] for k in ("date", "git", "command", "total_s", "loadavg_start", "loadavg_end")}]}
    for axis in ("sizes", "stores", "workloads", "variants"):
        out[axis] = list(dict.fromkeys(old[axis] + new[axis]))
    out["sizes"] = sorted(out["sizes"])
    out["variants"] = [v for v in ("before", "cold", "warm") if v in out["variants"]]
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    L = [START, "", "### `bench/stream`: results", "",
         f"Measured {res['date']} on {m['cpu']} (nproc {m['nproc']}, {m['mem_total_mib'] / 1024:.0f} GiB), Python {m['python']}; "
         f"`{res['command']}` (git {res['git']}; before = git {res['before_rev']}), {res['total_s']:.0f} s in all; load average (1/5/15 min) "
         + "/".join(f"{x:.2f}" for x in res["loadavg_start"]) + " at the start, " + "/".join(f"{x:.2f}" for x in res["loadavg_end"])
         + " at the end (the machine is shared: compare CPU columns, not wall ones; each run's load is in the JSON)."
         + "".join(f" Runs not measured again were kept from `{e['command']}` of {e['date']} (git {e['git']}); each run's `measured` field in the JSON says which." for e in res.get("earlier", [])), "",
         "| target (issue 18) | measured | target | met? |", "|---|---|---|---|"]
    T = targets(res)
    L += [f"| {w} | {v} | {t} | {'yes' if ok else '**no**'} |" for w, v, t, ok in T]
    missed = [w for w, _, _, ok in T if not ok]
    L += ["", "All targets met." if not missed else f"Missed: {len(missed)} of {len(T)} (see the rows marked **no**)."]
    for wl in res["workloads"]:
        L += ["", f"**{WORKLOADS[wl]}**: before = git {res['before_rev']}; cold = this code, window cache off (every window read from the store, "
              "as a new container does); warm = this code as deployed (one container for the whole stream).", "",
              "| store | batch | variant | records | records/s per CPU s | CPU ms / batch | wall ms / batch (p50) | records/s, wall | users / batch | "
              "round trips / batch | round trips / user / batch | one Lambda at 5 / 10 ms per request, records/s | keeps up with a shard up to | load avg (1 min) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for store in res["stores"]:
            for batch in res["sizes"]:
                for v in res["variants"]:
                    r = res["runs"].get(f"{wl}/{store}/{batch}/{v}")
                    if not r:
                        continue
                    dyn = store == "dynamodb"
                    L.append(f"| {store} | {batch:,} | {v} | {r['records']:,} | {n0(r['records_per_s_cpu'])} | {n1(r['cpu_ms_per_batch'])} | {n1(r['wall_ms_per_batch_p50'])} | "
                             f"{n0(r['records_per_s_wall'])} | {n1(r['users_per_batch'])} | {n1(r['requests_per_batch']) if dyn else '–'} | "
                             f"{n2(r['requests_per_user_batch']) if dyn else '–'} | "
                             f"{' / '.join(n0(keeps_up(r, x)) for x in LATENCY_MS) if dyn else '–'} | {latency_text(r) if dyn else '–'} | {r['loadavg_before'][0]:.2f} |")
    L += ["", "Round trips by operation (all batches of a run; warm and cold of this code, and before):", ""]
    for k, r in res["runs"].items():
        if "/dynamodb/" in k:
            L.append(f"- {k}: " + ", ".join(f"{op} {n:,}" for op, n in sorted(r["requests_by_operation"].items(), key=lambda x: -x[1])))
    L += ["", "How measured: each run is a fresh process (`bench/stream/worker.py`) that builds Lambda's Kinesis events of the stream "
          "first, then hands them one by one to `StreamProcessor.process_event` (what the app's `features_from_stream` calls), on a "
          "fresh store: an SQLite file (WAL, the embedded default) or a new table on a moto DynamoDB server in another process, with "
          "SQLite dead letters (there are no bad records). CPU = `time.process_time()` of the worker (our code, numpy, sqlite3, "
          "botocore's serialization; not the moto server). Round trips = the HTTP requests the DynamoDB client sends (a botocore "
          "`before-send` hook). \"One Lambda at x ms\" = records per batch ÷ (CPU per batch + round trips per batch × x ms): "
          "requests are sequential within a batch. On DynamoDB, the old code runs on a prefix of the stream (the records column; "
          "moto takes 10-100 ms a request on this machine and the old code sends about 4 a record). A batch's writes are "
          "⌈items ÷ 25⌉ `BatchWriteItem` calls; this code writes an entity's events and feature rows as chunks (one item per "
          "entity, table or feature set, and day that a batch touches), so its round trips per user do not grow with the "
          "records a user has in a batch (before, every event and row was an item). Raw numbers: `bench/results/stream.json`.", "", END]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--stores", default="sqlite,dynamodb")
    ap.add_argument("--workloads", default="users20,users500")
    ap.add_argument("--variants", default="before,cold,warm")
    ap.add_argument("--before-rev", default=BEFORE_REV)
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--out", default="stream.json", help="file name in bench/results")
    ap.add_argument("--report-only", action="store_true", help="rewrite the README section from bench/results/<out>, measuring nothing")
    ap.add_argument("--merge", action="store_true", help="keep the runs of bench/results/<out> that this command does not measure again")
    a = ap.parse_args()
    if a.report_only:
        md = markdown(json.loads((RESULTS / a.out).read_text()))
        write_readme(md, START, END)
        return print(md)
    sizes, stores, wls, variants = [int(x) for x in a.sizes.split(",")], a.stores.split(","), a.workloads.split(","), a.variants.split(",")
    t0, tmp = time.perf_counter(), Path(tempfile.mkdtemp(prefix="nutrino-bench-stream-"))
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "git": git_rev(),
           "command": ".venv/bin/python bench/stream/run.py" + "".join(f" {x}" for x in sys.argv[1:]), "before_rev": a.before_rev,
           "sizes": sizes, "stores": stores, "workloads": wls, "variants": variants, "loadavg_start": os.getloadavg(), "runs": {}}
    moto = None
    try:
        src = before_code(a.before_rev, tmp) if "before" in variants else None
        if "dynamodb" in stores:
            moto, url = start_moto()
        for wl in wls:
            recs = workload(wl)
            path = tmp / f"{wl}.pkl"
            path.write_bytes(pickle.dumps(recs))
            for store in stores:
                for batch in sizes:
                    for v in variants:
                        limits = DYNAMO_LIMITS.get((wl, v), {}) if store == "dynamodb" else {}
                        if batch in limits and limits[batch] is None:
                            log(f"{wl}, {store}, batch {batch:,}, {v}: skipped (too slow on moto)")
                            continue
                        limit = limits.get(batch)
                        log(f"{wl} ({limit or len(recs):,} records), {store}, batch {batch:,}, {v}")
                        r = run_worker(path, store, batch, url if store == "dynamodb" else "", v, src, limit)
                        r["measured"] = f"{res['date']}, git {res['git']}"
                        res["runs"][f"{wl}/{store}/{batch}/{v}"] = r
                        log(f"  {r['records_per_s_cpu']:,.0f} records/CPU s, {r['cpu_ms_per_batch']:.1f} CPU ms/batch, "
                            f"{r['wall_ms_per_batch']:.1f} wall ms/batch" + (f", {r['requests_per_batch']:.1f} round trips/batch "
                            f"({r['requests_per_user_batch']:.2f} per user)" if store == "dynamodb" else ""))
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)
    res["total_s"], res["loadavg_end"] = time.perf_counter() - t0, os.getloadavg()
    if a.merge and (RESULTS / a.out).exists():
        res = merged(json.loads((RESULTS / a.out).read_text()), res)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / a.out).write_text(json.dumps(res, indent=1))
    md = markdown(res)
    if not a.no_readme:
        write_readme(md, START, END)
    print(md)


if __name__ == "__main__":
    main()
