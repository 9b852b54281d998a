"""One measured step of the features benchmark, in a fresh process (started by bench/features/run.py).

    python worker.py synth    --lake DIR --events N [--days D] [--seed S]
    python worker.py features --lake DIR --engine pandas|spark [--master local[2]] [--driver-memory 2g] [--watch-pids 1,2]
    python worker.py score    --lake DIR --bundles DIR --tracking-uri URI --rows N [--master local[2]]

Each prints one line `RESULT {json}` at the end. While it works, a thread samples the resident memory and the CPU
time (user + system) of this process and of every process it started (for Spark: the JVM, and the Python workers the
JVM starts), and of the process trees of `--watch-pids` (a standalone cluster's master and workers, whose executors
do the work), so the peak memory and the CPU time are the whole engine's, not only the driver's. CPU time is what a
busy machine does not distort much: other work on the same cores stretches the wall time, not this tree's CPU time.
"""
from __future__ import annotations

import argparse, json, os, threading, time
from contextlib import contextmanager
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


# --- memory of this process tree -------------------------------------------------------------------------------
def _children() -> dict:
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(root: int) -> list:
    kids, out, todo = _children(), [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _rss(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE
    except OSError:
        return 0


def _cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process `pid` has used so far; 0 once it is gone."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0.0
    f = stat[stat.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / TICK


def _hwm(pid: int) -> int:
    try:
        return next(int(l.split()[1]) * 1024 for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


class TreeMemory:
    """Samples the summed RSS of this process, its descendants and the trees of `also` (pids) every `every` seconds; keeps
    the peak, and each process's CPU time as last seen (a process that lives less than `every` may be missed)."""
    def __init__(self, every=0.1, also=()):
        self.every, self.also, self.peak, self.peak_procs, self.hwm, self.cpu = every, tuple(also), 0, 0, {}, {}
        self._stop, self._lock = threading.Event(), threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        kids, pids = _children(), []
        for root in (os.getpid(), *self.also):
            todo = [root]
            while todo:
                p = todo.pop()
                pids.append(p)
                todo += kids.get(p, [])
        total = sum(_rss(p) for p in pids)
        with self._lock:
            if total > self.peak:
                self.peak, self.peak_procs = total, len(pids)
            for p in pids:   # each process's own high-water mark and CPU time, as last seen
                self.hwm[p] = max(self.hwm.get(p, 0), _hwm(p))
                self.cpu[p] = max(self.cpu.get(p, 0.0), _cpu(p))

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def cpu_s(self) -> float:
        """CPU seconds of the watched trees so far (sampled now)."""
        self._sample()
        with self._lock:
            return sum(self.cpu.values())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()

    def report(self) -> dict:
        return {"peak_tree_rss_mib": self.peak / MiB, "processes_at_peak": self.peak_procs,
                "driver_vmhwm_mib": _hwm(os.getpid()) / MiB, "sum_of_process_peaks_mib": sum(self.hwm.values()) / MiB,
                "cpu_s": sum(self.cpu.values()), "sample_every_s": self.every}


@contextmanager
def timed(out: dict, name: str, mem: TreeMemory):
    """Wall seconds of the block into out[name + "_s"], CPU seconds of the watched trees into out[name + "_cpu_s"]."""
    t, c = time.perf_counter(), mem.cpu_s()
    yield
    out[name + "_s"], out[name + "_cpu_s"] = time.perf_counter() - t, mem.cpu_s() - c


# --- synthetic lake ---------------------------------------------------------------------------------------------
def synth(lake_dir: str, events: int, days: int, seed: int) -> dict:
    """A lake with ~`events` events (glucose every 5 minutes, ~2% missing; ~3.5 meals a day) in the lake's schema,
    written as daily partitions: like `nutrino_ml.simulate`, but vectorized so that 10^7 events take seconds."""
    import numpy as np, pandas as pd
    from nutrino_ml.datalake import Lake
    rng = np.random.default_rng(seed)
    per_user = days * 288 * 0.98 + days * 3.5
    n_users = max(1, round(events / per_user))
    start = pd.Timestamp("2026-01-01", tz="UTC")
    uid = np.array([f"u{i:06d}" for i in range(n_users)], dtype=object)
    users = pd.DataFrame({"user_id": uid, "age": rng.integers(18, 80, n_users), "sex": rng.choice(["f", "m"], n_users),
                          "weight_kg": rng.normal(78, 12, n_users).clip(40, 200).round(1),
                          "height_cm": rng.normal(171, 9, n_users).clip(145, 205).round(1)})
    # glucose: a reading every 5 minutes per user, 2% dropped; a daily rhythm, meal bumps are left out
    slots = days * 288
    keep = rng.random(n_users * slots) > 0.02
    u = np.repeat(np.arange(n_users), slots)[keep]
    k = np.tile(np.arange(slots), n_users)[keep]
    minutes = k * 5
    base = rng.normal(95, 8, n_users)[u]
    g = (base + 15 * np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 6, len(u))).clip(40, 400).round(1)
    ts = start + pd.to_timedelta(minutes, unit="min")
    glucose = pd.DataFrame({"event_id": pd.Series(uid[u]).str.replace("u", "g-", n=1) + "-" + pd.Series(k).astype(str),
                            "user_id": uid[u], "ts": ts.as_unit("us"), "glucose_mgdl": g})
    # meals: 3-4 a day at random minutes
    n_meals = int(n_users * days * 3.5)
    mu = rng.integers(0, n_users, n_meals)
    mm = rng.integers(0, days * 1440, n_meals)
    carbs = rng.gamma(4, 12, n_meals).clip(0, 400).round(1)
    meals = pd.DataFrame({"event_id": [f"m-{i:09d}" for i in range(n_meals)], "user_id": uid[mu],
                          "ts": (start + pd.to_timedelta(mm, unit="min")).as_unit("us"), "carbs_g": carbs,
                          "fibre_g": (carbs * rng.uniform(0.02, 0.18, n_meals)).round(1),
                          "fat_g": rng.gamma(2.5, 9, n_meals).clip(0, 250).round(1),
                          "protein_g": rng.gamma(3, 9, n_meals).clip(0, 250).round(1)})
    lake = Lake(lake_dir)
    lake.write_partition("users", "2026-01-01", users)
    for name, df in (("meals", meals), ("glucose", glucose)):
        for dt, part in df.groupby(df.ts.dt.strftime("%Y-%m-%d")):
            lake.write_partition(name, dt, part)
    return {"users": n_users, "days": days, "rows": {"users": len(users), "meals": len(meals), "glucose": len(glucose)},
            "events": len(meals) + len(glucose)}


# --- features ---------------------------------------------------------------------------------------------------
def settings_for(lake_dir: str, master: str):
    import dataclasses
    from nutrino_ml.config import load_settings
    return dataclasses.replace(load_settings("test", environ={}), datalake_root=str(Path(lake_dir).resolve()), spark_master=master)


def features(lake_dir: str, engine: str, master: str, driver_memory: str, mem: TreeMemory) -> dict:
    """`build_feature_tables` (read + check the raw tables, compute both feature sets, write both offline tables),
    then the feature computation alone: pandas on frames already read and checked; Spark as the same one pass
    (read, check, compute both sets) writing nothing (`build_tables_spark(write=False)`). Wall and CPU seconds of each."""
    from nutrino_ml.datalake import Lake
    from nutrino_ml.runtime.features import FEATURE_SETS
    from nutrino_ml.offline import build_feature_tables, build_features
    from nutrino_ml.spark import build_tables_spark, spark_session
    settings, out = settings_for(lake_dir, master), {"engine": engine, "master": master}
    if engine == "pandas":
        with timed(out, "build", mem):
            out["tables"] = build_feature_tables(settings, "pandas")
        lake = Lake(settings.datalake_root)
        tables = {n: lake.read_table(n) for n in ("users", "meals", "glucose")}
        with timed(out, "compute", mem):
            out["compute_rows"] = {n: len(build_features(f, tables)) for n, f in FEATURE_SETS.items()}
        return out
    conf = {"spark.driver.memory": driver_memory, **({} if master.startswith("local") else {"spark.executor.memory": "1g"})}
    with timed(out, "session_start", mem):
        spark = spark_session(settings, "nutrino_ml-bench", conf)
    try:
        said = []
        with timed(out, "build", mem):
            out["tables"] = build_feature_tables(settings, "spark", spark=spark, progress=said.append)
        with timed(out, "compute", mem):
            dry = build_tables_spark(settings, list(FEATURE_SETS.values()), spark, write=False)
        out["compute_rows"], out["progress"] = {n: r["rows"] for n, r in dry.items()}, said
    finally:
        spark.stop()
    return out


# --- scoring ----------------------------------------------------------------------------------------------------
FSET_OF = {"glucose-response": "meal_response", "glucose-forecast": "glucose_forecast"}


def score(lake_dir: str, bundles: str, tracking_uri: str, rows: int, master: str, driver_memory: str) -> dict:
    """Per model, the same `rows` feature rows (the lake's offline table, repeated up to `rows`, cached in Spark):
    `score_spark` with the exported bundle vs `mlflow.pyfunc.spark_udf` on the same registered version, each run
    twice into the `noop` sink (the first run includes loading the model in each Python worker)."""
    import mlflow.pyfunc
    import numpy as np
    from pyspark.sql import functions as F
    from nutrino_ml.runtime.features import FEATURE_SETS
    from nutrino_ml.runtime.serving import ServedModels
    from nutrino_ml.offline import feature_table
    from nutrino_ml.scoring import score_spark
    from nutrino_ml.spark import read_lake_table_spark, spark_session
    settings = settings_for(lake_dir, master)
    mlflow.set_tracking_uri(tracking_uri)
    spark = spark_session(settings, "nutrino_ml-bench-score", {"spark.driver.memory": driver_memory})
    out = {}
    try:
        for name, fs in FSET_OF.items():
            m = ServedModels(Path(bundles), log=lambda r: None).resolve(name, "production")
            inputs = [f["name"] for f in m["inputs"]]
            base = read_lake_table_spark(spark, settings.datalake_root, feature_table(FEATURE_SETS[fs]), validate=False).drop("dt")
            n = base.count()
            df = base.crossJoin(spark.range((rows + n - 1) // n).withColumnRenamed("id", "_copy")).limit(rows).drop("_copy")
            df = df.repartition(spark.sparkContext.defaultParallelism).cache()
            rows_ = df.count()
            ours = lambda: score_spark(spark, df, bundles, name, m["version"]).write.format("noop").mode("overwrite").save()
            udf = mlflow.pyfunc.spark_udf(spark, f"models:/{name}/{m['version']}", result_type="double", env_manager="local")
            theirs = lambda: df.withColumn("prediction", udf(F.struct(*inputs))).write.format("noop").mode("overwrite").save()
            r = {"rows": rows_, "table_rows": n, "version": m["version"], "inputs": inputs}
            for label, fn in (("score_spark", ours), ("pyfunc_spark_udf", theirs)):
                times = []
                for _ in range(2):
                    t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
                r[label] = {"first_s": times[0], "second_s": times[1], "rows_per_s": rows_ / times[1], "rows_per_s_first": rows_ / times[0]}
            sample = df.limit(2000)
            a = score_spark(spark, sample, bundles, name, m["version"]).select("event_id", "prediction").toPandas()
            b = sample.select("event_id", udf(F.struct(*inputs)).alias("expected")).toPandas()
            both = a.drop_duplicates("event_id").merge(b.drop_duplicates("event_id"), on="event_id")
            r["max_abs_diff_vs_pyfunc"] = float(np.nanmax(np.abs(both.prediction - both.expected)))
            df.unpersist()
            out[name] = r
    finally:
        spark.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["synth", "features", "score"])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--events", type=int)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", choices=["pandas", "spark"])
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="2g")
    ap.add_argument("--bundles")
    ap.add_argument("--tracking-uri")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--watch-pids", default="", help="comma-separated pids whose process trees count too (a cluster's daemons)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    with TreeMemory(also=[int(p) for p in a.watch_pids.split(",") if p]) as mem:
        if a.step == "synth":
            r = synth(a.lake, a.events, a.days, a.seed)
        elif a.step == "features":
            r = features(a.lake, a.engine, a.master, a.driver_memory, mem)
        else:
            r = score(a.lake, a.bundles, a.tracking_uri, a.rows, a.master, a.driver_memory)
    r.update(memory=mem.report(), wall_s=time.perf_counter() - t0)
    print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
