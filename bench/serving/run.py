"""Serving benchmark: our Lambda handler vs MLflow's own ways of serving the same registered model version.

    .venv/bin/python bench/serving/run.py [--quick] [--keep] [--no-readme]

One run builds a self-contained stack in a temp dir (simulated lake, `ploomber build`, both models promoted and
exported into a copy of chalice_app, `chalice package` offline from .wheelhouse, unzipped), then measures side by
side on version 1 of each model and the same feature rows (1 row per request):

  a. warm in-process latency and CPU time per request: the Lambda handler of the unzipped package (API Gateway proxy
     event, bare interpreter `python -I -S`), ServedModels.predict, mlflow.pyfunc.load_model(...).predict(1-row
     DataFrame) of the registered version (the scikit-learn pipeline, the Python forecaster), and the same for the
     exported bundle's model.onnx logged as an `onnx`-flavour model (MLflow's serving layer around our very model)
  b. HTTP: `chalice local --no-autoreload` vs `mlflow models serve --env-manager local`
  c. cold start (fresh process -> first answer) and the imports it is made of
  d. peak memory (ru_maxrss) of every cold-start process
  e. package size vs Lambda's limits

Writes bench/results/serving.json (serving-quick.json with --quick) and, for a full run, the results table into
bench/README.md between `<!-- serving:start -->` and `<!-- serving:end -->`. Every process it starts is stopped.
"""
from __future__ import annotations

import argparse, concurrent.futures, datetime, http.client, json, math, os, re, shutil, signal, statistics, subprocess
import sys, tempfile, time, urllib.request, zipfile
from pathlib import Path

from common import api_event
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared report helpers
from report import BENCH_ENV as TELEMETRY_OFF, README, RESULTS, ROOT, free_port, git_rev, log, machine, write_readme as _write_readme  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PY = Path(sys.executable)
START, END = "<!-- serving:start -->", "<!-- serving:end -->"
MODELS = ("glucose-response", "glucose-forecast")
TABLE = {"glucose-response": "meal_response", "glucose-forecast": "glucose_forecast"}
MiB = 1024 * 1024
LAMBDA_ZIP_LIMIT, LAMBDA_UNZIPPED_LIMIT = 50 * MiB, 250 * MiB

# warm_rounds x warm_blocks: each round starts a fresh Lambda worker and a fresh pyfunc worker side by side, and they
# take turns, block by block, so that a change of the machine's speed during the run (this VM's varies up to ~2x, in
# bursts of under a second to minutes) falls on both sides alike. n_req is ~15x n_pyfunc so that each side's samples
# of a model cover about as many seconds of the machine: in a block, 500 forecaster requests to the handler take
# ~20 ms, 33 to pyfunc ~35 ms; with equal counts, ours would sample a few 2 ms slices of the run, and one slow burst
# landing on them would decide its p50.
FULL = dict(users=8, days=6, rows=200, n_warm=500, n_req=30000, n_pyfunc=2000, warm_rounds=3, warm_blocks=20, n_http=400, http_warm=30,
            cold_runs=5)
QUICK = dict(users=8, days=6, rows=100, n_warm=100, n_req=3000, n_pyfunc=300, warm_rounds=2, warm_blocks=3, n_http=100, http_warm=10,
             cold_runs=3)

PROCS: list[subprocess.Popen] = []   # long-running servers started here; stopped in `finally`


# --- small helpers -------------------------------------------------------------------------------------------


def pct(samples, p):
    "Nearest-rank percentile of `samples` (p in 0..100)."
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summary_ns(samples):
    return {"n": len(samples), "p50_us": pct(samples, 50) / 1e3, "p99_us": pct(samples, 99) / 1e3,
            "mean_us": statistics.fmean(samples) / 1e3, "min_us": min(samples) / 1e3}


def cpu_summary(r, k):
    """CPU time per request of column `k` of worker model results `r`: the median over blocks (`cpu_us`: what a
    request typically costs), over all blocks (`cpu_all_us`: with every garbage collection that fell in them), and
    the collector's share (`gc_us`: its wall time ÷ requests)."""
    per_block = [c / n / 1e3 for c, n in zip(r["cpu_ns"][k], r["cpu_n"][k])]
    n = sum(r["cpu_n"][k])
    return {"cpu_us": statistics.median(per_block), "cpu_all_us": sum(r["cpu_ns"][k]) / n / 1e3, "gc_us": r["gc_ns"][k] / n / 1e3,
            "cpu_block_us": per_block}


def run(args, env=None, cwd=ROOT, timeout=600):
    p = subprocess.run([str(a) for a in args], cwd=cwd, env={**os.environ, **(env or {})}, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"{args} exited {p.returncode}:\n{p.stdout[-6000:]}")
    return p.stdout


def start_server(args, cwd, env, logfile):
    """Start a server in its own session (so its children can be stopped with it); registered for cleanup."""
    f = open(logfile, "w")
    proc = subprocess.Popen([str(a) for a in args], cwd=cwd, env={**os.environ, **env}, stdout=f,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc._bench_log = f
    PROCS.append(proc)
    return proc


def stop_server(proc):
    """SIGTERM the server's process group (its id is the pid of the process started here), SIGKILL if needed."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    else:  # the leader is gone: make sure nothing it started is left in its group
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    proc._bench_log.close()
    if proc in PROCS:
        PROCS.remove(proc)


def wait_ready(url, proc, logfile, timeout=120):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}:\n{Path(logfile).read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on {url} within {timeout}s")


# --- 1. the stack --------------------------------------------------------------------------------------------
def stack_env(tmp: Path) -> dict:
    """NUTRINO_* overrides that put the lake, MLflow, bundles and the app in `tmp` (as tests/conftest.local_env)."""
    return {**TELEMETRY_OFF, "NUTRINO_PROFILE": "test", "NUTRINO_DATALAKE_ROOT": str(tmp / "lake"),
            "NUTRINO_MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow/mlflow.db",
            "NUTRINO_MLFLOW_ARTIFACT_LOCATION": str(tmp / "mlflow" / "artifacts"),
            "NUTRINO_APP_DIR": str(tmp / "app"), "NUTRINO_BUNDLE_DIR": str(tmp / "app" / "chalicelib" / "models"),
            "NUTRINO_ONLINE_STORE": f"sqlite:///{tmp}/online_store.db"}


def build_stack(tmp: Path, cfg: dict, timings: dict) -> dict:
    env = stack_env(tmp)
    shutil.copytree(ROOT / "chalice_app", tmp / "app", ignore=shutil.ignore_patterns(
        "models", "vendor", "deployments", "__pycache__", "packaged"))
    t = time.perf_counter()
    run([BIN / "nutrino-ml", "datalake", "simulate", "--users", cfg["users"], "--days", cfg["days"], "--seed", "11"], env=env)
    timings["simulate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    run([BIN / "ploomber", "build", "--env--products", tmp / "products"], env=env, cwd=ROOT / "pipelines")
    timings["ploomber_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for name in MODELS:
        run([BIN / "nutrino-ml", "models", "promote", name, "latest"], env=env)
    run([BIN / "nutrino-ml", "export"], env=env)
    timings["promote_export_s"] = time.perf_counter() - t
    registered = {m: json.loads((tmp / "products" / "registered" / f"{m}.json").read_text()) for m in MODELS}
    for m, r in registered.items():
        if int(r["version"]) != 1:
            raise RuntimeError(f"{m}: expected version 1 in a fresh registry, got {r}")
    # `nutrino-ml package` (chalice package, checked, the cold path's bytecode added), offline from the wheelhouse
    wheels = ROOT / ".wheelhouse"
    if not any(wheels.glob("onnxruntime-*.whl")):
        raise RuntimeError(f"{wheels} has no Lambda wheels: run `make venv` once")
    t = time.perf_counter()
    run([BIN / "nutrino-ml", "package", tmp / "package", "--stage", "dev"], env={**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)})
    timings["package_s"] = time.perf_counter() - t
    unzip_both(tmp)
    return {"env": env, "registered": registered, "tracking_uri": env["NUTRINO_MLFLOW_TRACKING_URI"]}


def unzip_both(tmp: Path):
    """tmp/unzipped: the package as deployed; tmp/unzipped-plain: the same without any .pyc (what `chalice package`
    and `chalice deploy` alone ship)."""
    for d in ("unzipped", "unzipped-plain"):
        shutil.rmtree(tmp / d, ignore_errors=True)
        zipfile.ZipFile(tmp / "package" / "deployment.zip").extractall(tmp / d)
    clean_pyc(tmp / "unzipped-plain")


def pick_rows(tmp: Path, n: int) -> dict:
    """Per model: `n` feature rows spread evenly over the features parquet of the build, as JSON rows (NaN -> null)."""
    import numpy as np
    import pandas as pd
    cases = {}
    for name in MODELS:
        manifest = json.loads((tmp / "app" / "chalicelib" / "models" / name / "1" / "manifest.json").read_text())
        cols = [f["name"] for f in manifest["inputs"]]
        parquet = tmp / "products" / "features" / f"{TABLE[name]}.parquet"
        X = pd.read_parquet(parquet)[cols]
        idx = sorted(set(np.linspace(0, len(X) - 1, min(n, len(X))).astype(int).tolist()))
        rows = json.loads(X.iloc[idx].to_json(orient="records"))   # NaN -> null, as a client would send it
        cases[name] = {"parquet": str(parquet), "columns": cols, "index": idx, "rows": rows,
                       "inputs": manifest["inputs"], "table_rows": len(X)}
    return cases


ONNX_SOURCE = "glucose-response"   # the model whose bundle is ONNX: its model.onnx is also served by mlflow.pyfunc


def log_onnx(tmp: Path, tracking_uri: str, timings: dict) -> Path:
    """The exported model.onnx of version 1 of ONNX_SOURCE, logged as an `onnx`-flavour model in a throwaway tracking
    store in `tmp` (bench/serving/onnx_model.py); the JSON that says where it is."""
    out = tmp / "onnx-model.json"
    if out.exists():   # --reuse: logged by the run that kept the dir
        return out
    log(f"logging the exported {ONNX_SOURCE} model.onnx with mlflow.onnx.log_model into a throwaway store")
    t = time.perf_counter()
    (tmp / "mlflow-onnx").mkdir(exist_ok=True)
    run([PY, HERE / "onnx_model.py", tmp / "app" / "chalicelib" / "models" / ONNX_SOURCE / "1", tracking_uri, ONNX_SOURCE,
         f"sqlite:///{tmp}/mlflow-onnx/mlflow.db", out], env=TELEMETRY_OFF, cwd=tmp / "mlflow-onnx")
    timings["log_onnx_s"] = time.perf_counter() - t
    return out


# --- launcher (clean ru_maxrss for the processes it starts) ---------------------------------------------------
class Launcher:
    """bench/serving/spawn.py on a bare interpreter: starts processes for us so their ru_maxrss is their own."""
    def __init__(self):
        self.proc = subprocess.Popen([str(PY), "-I", "-S", str(HERE / "spawn.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def call(self, args, cwd, env=None, stderr=None, count=None) -> dict:
        self.proc.stdin.write(json.dumps({"args": [str(a) for a in args], "cwd": str(cwd), "env": {**os.environ, **(env or {})},
                                          "stderr": str(stderr) if stderr else None, "count": count}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the launcher exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()


LAUNCHER: Launcher | None = None
LAUNCHER2: Launcher | None = None   # a second one, for the worker that runs beside the first (warm latency)


def launch(args, cwd, env=None, stderr=None, count=None, answer=True, launcher=None) -> dict:
    r = (launcher or LAUNCHER).call(args, cwd, env, stderr, count)
    if r["returncode"] or (answer and r["wall_s"] is None):
        err = Path(stderr).read_text()[-4000:] if stderr and Path(stderr).exists() else r["stdout_tail"]
        raise RuntimeError(f"{[str(a) for a in args][:4]} exited {r['returncode']}{'' if r['wall_s'] else ' without an answer'}:\n{err}")
    return r


# --- 2a. warm in-process latency -----------------------------------------------------------------------------
def merge_rounds(runs: list) -> dict:
    """One worker's results over its rounds: samples concatenated, the first round's answers and details."""
    out = dict(runs[0])
    out["models"] = {}
    for name in runs[0]["models"]:
        m = dict(runs[0]["models"][name])
        m["samples_ns"] = {k: [x for r in runs for x in r["models"][name]["samples_ns"][k]] for k in m["samples_ns"]}
        m["n"] = sum(r["models"][name]["n"] for r in runs)
        m["round_p50_us"] = {k: [pct(r["models"][name]["samples_ns"][k], 50) / 1e3 for r in runs] for k in m["samples_ns"]}
        m["block_p50_us"] = {k: [x for r in runs for x in r["models"][name]["block_p50_us"][k]] for k in m["samples_ns"]}
        for key in ("cpu_ns", "cpu_n"):   # per block
            m[key] = {k: [x for r in runs for x in r["models"][name][key][k]] for k in m["samples_ns"]}
        m["gc_ns"] = {k: sum(r["models"][name]["gc_ns"][k] for r in runs) for k in m["samples_ns"]}
        out["models"][name] = m
    for k in ("rss_after_warm_mib", "vmhwm_after_warm_mib", "process_maxrss_mib"):
        if k in out:
            out[k] = max(r[k] for r in runs)
    return out


def warm_latency(tmp: Path, cases: dict, cfg: dict, tracking_uri: str, onnx_json: Path) -> dict:
    rows_file = tmp / "rows.json"
    rows_file.write_text(json.dumps(cases))
    out, lam, pyf, k, blocks = {"loadavg_rounds": []}, [], [], cfg["warm_rounds"], cfg["warm_blocks"]
    for i in range(k):
        out["loadavg_rounds"].append(os.getloadavg())
        log(f"warm latency, round {i + 1}/{k}: the Lambda handler in the unzipped package under `python -I -S -B` "
            f"({cfg['n_req'] // k} requests per model and variant) and mlflow.pyfunc ({cfg['n_pyfunc'] // k} per model and flavour), "
            f"side by side, taking turns in {blocks} blocks")
        turns = {side: tmp / f"turn-{side}" for side in ("lambda", "pyfunc")}
        for f in turns.values():
            f.unlink(missing_ok=True)
            os.mkfifo(f)
        hold = {side: os.open(f, os.O_RDWR) for side, f in turns.items()}   # keeps a token alive until a worker reads it
        os.write(hold["pyfunc"], b"t")   # pyfunc loads first (seconds), while the Lambda worker waits for its turn
        jobs = {"lambda": lambda: launch([PY, "-I", "-S", "-B", HERE / "lambda_worker.py", rows_file, tmp / "lambda.json", cfg["n_warm"],
                                          cfg["n_req"] // k, "details" if i == 0 else "-", blocks, turns["lambda"], turns["pyfunc"]],
                                         tmp / "unzipped", stderr=tmp / "lambda-worker.err", count='"event":"prediction"', answer=False),
                "pyfunc": lambda: launch([PY, HERE / "pyfunc_worker.py", rows_file, tmp / "pyfunc.json", cfg["n_warm"] // 5, cfg["n_pyfunc"] // k,
                                          blocks, turns["pyfunc"], turns["lambda"], onnx_json], tmp,
                                         env={**TELEMETRY_OFF, "MLFLOW_TRACKING_URI": tracking_uri}, stderr=tmp / "pyfunc-worker.err",
                                         answer=False, launcher=LAUNCHER2)}
        try:
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                futs = {side: ex.submit(job) for side, job in jobs.items()}
                done, _ = concurrent.futures.wait(futs.values(), return_when=concurrent.futures.FIRST_EXCEPTION)
                if any(f.exception() for f in done):   # one worker failed: let the other run to its end, then report
                    for fd in hold.values():
                        os.write(fd, b"t" * (blocks + 2))
                r = {side: f.result() for side, f in futs.items()}
        finally:
            for fd in hold.values():
                os.close(fd)
            for f in turns.values():
                f.unlink(missing_ok=True)
        lam.append(json.loads((tmp / "lambda.json").read_text()))
        lam[-1]["log_lines_on_stdout"], lam[-1]["process_maxrss_mib"] = r["lambda"]["counted"], r["lambda"]["maxrss_kib"] / 1024
        pyf.append(json.loads((tmp / "pyfunc.json").read_text()))
        pyf[-1]["process_maxrss_mib"] = r["pyfunc"]["maxrss_kib"] / 1024
    out["loadavg_rounds"].append(os.getloadavg())   # and at the end of the last
    out["lambda"], out["pyfunc"] = merge_rounds(lam), merge_rounds(pyf)
    out["lambda"]["log_lines_on_stdout"] = sum(r["log_lines_on_stdout"] for r in lam)
    # pyfunc p50 ÷ handler p50 of the same round, and of each pair of blocks (a pyfunc block, then the Lambda block after it)
    ratios = lambda key, col="pyfunc_predict", names=MODELS: {  # noqa: E731
        name: [p / h for p, h in zip(out["pyfunc"]["models"][name][key][col], out["lambda"]["models"][name][key]["handler_log"])]
        for name in names}
    out["round_ratios"], out["block_ratios"] = ratios("round_p50_us"), ratios("block_p50_us")
    out["onnx_round_ratios"] = ratios("round_p50_us", "onnx_pyfunc_predict", [ONNX_SOURCE])
    out["onnx_block_ratios"] = ratios("block_p50_us", "onnx_pyfunc_predict", [ONNX_SOURCE])
    # same answers? (ONNX trees run in float32 and the sklearn pipeline in float64: ~1e-5 mg/dL; ONNX against ONNX: 0)
    diff = lambda a, b: max(abs(x - y) for x, y in zip(a, b))  # noqa: E731
    ours = {m: out["lambda"]["models"][m]["predictions"] for m in MODELS}
    out["max_abs_diff_vs_pyfunc"] = {m: diff(ours[m], out["pyfunc"]["models"][m]["predictions"]) for m in MODELS}
    out["max_abs_diff_vs_onnx_pyfunc"] = {ONNX_SOURCE: diff(ours[ONNX_SOURCE], out["pyfunc"]["models"][ONNX_SOURCE]["onnx"]["predictions"])}
    return out


# --- 2b. HTTP ----------------------------------------------------------------------------------------------
def http_post(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t = time.perf_counter_ns()
        c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        dt = time.perf_counter_ns() - t
    finally:
        c.close()
    if r.status != 200:
        raise RuntimeError(f"POST {path} -> {r.status}: {data[:500]!r}")
    return dt, json.loads(data)


def http_series(port, path, bodies, n, warm):
    for i in range(warm):
        http_post(port, path, bodies[i % len(bodies)])
    first = http_post(port, path, bodies[0])[1]
    return [http_post(port, path, bodies[i % len(bodies)])[0] for i in range(n)], first


def split_body(case, row):
    return json.dumps({"dataframe_split": {"columns": case["columns"], "data": [[row[c] for c in case["columns"]]]}})


def http_bench(tmp: Path, cases: dict, cfg: dict, tracking_uri: str) -> dict:
    out = {"chalice": {}, "mlflow": {}}
    port = free_port()
    logf = tmp / "chalice-local.log"
    log(f"HTTP: chalice local on :{port} ({cfg['n_http']} sequential requests per route)")
    proc = start_server([BIN / "chalice", "local", "--no-autoreload", "--host", "127.0.0.1", "--port", port, "--stage", "dev"],
                        tmp / "app", TELEMETRY_OFF, logf)
    try:
        out["chalice"]["ready_s"] = wait_ready(f"http://127.0.0.1:{port}/ping", proc, logf)
        for name, case in cases.items():
            split = [split_body(case, r) for r in case["rows"]]
            native = [json.dumps({"rows": [r]}) for r in case["rows"]]
            s1, a1 = http_series(port, f"/models/{name}/invocations", split, cfg["n_http"], cfg["http_warm"])
            s2, a2 = http_series(port, f"/models/{name}/predict", native, cfg["n_http"], cfg["http_warm"])
            out["chalice"][name] = {"invocations_split": summary_ns(s1), "native_predict": summary_ns(s2),
                                    "first_answer": a1["predictions"][0]}
    finally:
        stop_server(proc)
    for name, case in cases.items():
        port = free_port()
        logf = tmp / f"mlflow-serve-{name}.log"
        log(f"HTTP: mlflow models serve {name} on :{port}")
        proc = start_server([BIN / "mlflow", "models", "serve", "-m", f"models:/{name}/1", "--env-manager", "local",
                             "--host", "127.0.0.1", "-p", port], tmp,
                            # the venv's bin on PATH, as when it is activated: mlflow execs `uvicorn` by name
                            {**TELEMETRY_OFF, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
                            logf)
        try:
            ready = wait_ready(f"http://127.0.0.1:{port}/ping", proc, logf, timeout=180)
            split = [split_body(case, r) for r in case["rows"]]
            s, a = http_series(port, "/invocations", split, cfg["n_http"], cfg["http_warm"])
            out["mlflow"][name] = {"ready_s": ready, "invocations_split": summary_ns(s), "first_answer": a["predictions"][0]}
        finally:
            stop_server(proc)
    out["first_answer_abs_diff"] = {n: abs(out["chalice"][n]["first_answer"] - out["mlflow"][n]["first_answer"]) for n in cases}
    return out


# --- 2c/d. cold start and peak memory ----------------------------------------------------------------------
def timed_process(args, cwd, env=None, stderr_file=None):
    """Wall time from spawning `args` to the line starting with ANSWER on its stdout (measured by the launcher),
    that line's payload, and the process's peak RSS: ru_maxrss from wait4 and VmHWM it read itself (MiB)."""
    r = launch(args, cwd, env, stderr_file)
    a = r["answer"]
    return {"wall_s": r["wall_s"], "peak_rss_mib": r["maxrss_kib"] / 1024, "vmhwm_mib": a.pop("vmhwm_kib") / 1024, **a}


VMHWM = 'int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])'

OURS_COLD = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, ".")
import app
t1 = time.perf_counter()
r = app.app(EVENT, None)
t2 = time.perf_counter()
import json
print("ANSWER " + json.dumps({"status": r["statusCode"], "prediction": json.loads(r["body"])["predictions"][0],
                              "import_app_s": t1 - t0, "first_request_s": t2 - t1, "vmhwm_kib": VMHWM}), flush=True)
""".replace("VMHWM", VMHWM)

MLFLOW_COLD = r"""
import time
t0 = time.perf_counter()
import mlflow.pyfunc
import pandas as pd
t1 = time.perf_counter()
model = mlflow.pyfunc.load_model("models:/NAME/1")
t2 = time.perf_counter()
pred = model.predict(pd.DataFrame([ROW])[COLUMNS])
t3 = time.perf_counter()
import json
print("ANSWER " + json.dumps({"prediction": float(pd.Series(pred).iloc[0]), "import_s": t1 - t0, "load_model_s": t2 - t1,
                              "first_predict_s": t3 - t2, "vmhwm_kib": VMHWM}), flush=True)
""".replace("VMHWM", VMHWM)

IMPORT_ONLY = r"""
import sys, time
sys.path.insert(0, ".")
t0 = time.perf_counter()
MODULE
t1 = time.perf_counter()
import json
print("ANSWER " + json.dumps({"import_s": t1 - t0, "vmhwm_kib": VMHWM}), flush=True)
""".replace("VMHWM", VMHWM)

# Lambda's /var/task is read-only: a cold start compiles every module it imports that has no .pyc in the package.
# "lambda" is the package as `nutrino-ml package` builds it (the cold path's bytecode inside), "plain" the same
# package without any .pyc (what `chalice package` or `chalice deploy` alone ship); -B: nothing is written, as in Lambda.
VARIANTS = {"lambda": ("unzipped", ["-I", "-S", "-B"]), "plain": ("unzipped-plain", ["-I", "-S", "-B"])}


def repeated(fn, runs):
    """`runs` measured runs after one discarded run (so every side starts with the files in the page cache)."""
    fn()
    res = [fn() for _ in range(runs)]
    walls = [r["wall_s"] for r in res]
    return {"runs": res, "median_wall_s": statistics.median(walls), "min_wall_s": min(walls), "max_wall_s": max(walls),
            "max_peak_rss_mib": max(r["peak_rss_mib"] for r in res), "max_vmhwm_mib": max(r["vmhwm_mib"] for r in res)}


def importtime_top(stderr_text, top=15, depth=3):
    """Imports by cumulative time (ms) from `python -X importtime`, nesting depth <= `depth` (0 = imported by the script)."""
    out = []
    for line in stderr_text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if m and len(m.group(3)) // 2 <= depth:
            out.append([m.group(4), len(m.group(3)) // 2, round(int(m.group(2)) / 1e3, 1)])
    return sorted(out, key=lambda x: -x[2])[:top]


def clean_pyc(d: Path):
    for p in list(d.rglob("__pycache__")):
        shutil.rmtree(p)


def cold_start(tmp: Path, cases: dict, cfg: dict, tracking_uri: str) -> dict:
    runs = cfg["cold_runs"]
    if not (tmp / "unzipped-plain").exists():
        unzip_both(tmp)
    mlenv = {**TELEMETRY_OFF, "MLFLOW_TRACKING_URI": tracking_uri}
    out = {"ours": {v: {} for v in VARIANTS}, "mlflow": {}, "imports": {}, "importtime_ms": {}}
    codes = {}
    for name, case in cases.items():
        row = next(r for r in case["rows"] if all(v is not None for v in r.values()))
        codes[name] = (OURS_COLD.replace("EVENT", repr(api_event(name, json.dumps({"rows": [row]}), "cold"))),
                       MLFLOW_COLD.replace("NAME", name).replace("ROW", repr(row)).replace("COLUMNS", repr(case["columns"])))
    lambda_side = {"(nothing: interpreter start)": "pass", "numpy": "import numpy", "onnxruntime": "import onnxruntime",
                   "chalice": "import chalice"}
    for variant, (folder, flags) in VARIANTS.items():
        unz = tmp / folder
        for name in MODELS:
            log(f"cold start: our package ({variant}), {name} ({runs} runs + 1 discarded)")
            out["ours"][variant][name] = repeated(lambda: timed_process([PY, *flags, "-c", codes[name][0]], unz,
                                                                        stderr_file=tmp / "cold-ours.err"), runs)
            p = subprocess.run([str(PY), *flags, "-X", "importtime", "-c", codes[name][0]], cwd=unz, capture_output=True, text=True)
            out["importtime_ms"][f"ours/{variant}/{name}"] = importtime_top(p.stderr)
        log(f"cold start: single imports in fresh processes ({variant})")
        for label, stmt in lambda_side.items():
            code = IMPORT_ONLY.replace("MODULE", stmt)
            out["imports"][f"ours ({variant}): {label}"] = repeated(lambda: timed_process([PY, *flags, "-c", code], unz), runs)
    for name in MODELS:
        log(f"cold start: mlflow.pyfunc, {name} ({runs} runs + 1 discarded)")
        out["mlflow"][name] = repeated(lambda: timed_process([PY, "-c", codes[name][1]], tmp, env=mlenv,
                                                             stderr_file=tmp / "cold-mlflow.err"), runs)
        p = subprocess.run([str(PY), "-X", "importtime", "-c", codes[name][1]], cwd=tmp, capture_output=True, text=True,
                           env={**os.environ, **mlenv})
        out["importtime_ms"][f"mlflow/{name}"] = importtime_top(p.stderr)
    for label, stmt in {"(nothing: interpreter start + site)": "pass", "pandas": "import pandas",
                        "sklearn.ensemble": "import sklearn.ensemble", "mlflow.pyfunc": "import mlflow.pyfunc"}.items():
        code = IMPORT_ONLY.replace("MODULE", stmt)
        out["imports"][f"mlflow side: {label}"] = repeated(lambda: timed_process([PY, "-c", code], tmp, env=mlenv), runs)
    return out


# --- 2e. package ---------------------------------------------------------------------------------------------
def package_size(tmp: Path) -> dict:
    z = tmp / "package" / "deployment.zip"
    infos = zipfile.ZipFile(z).infolist()
    by_top = {}
    for i in infos:
        top = i.filename.split("/")[0]
        by_top[top] = by_top.get(top, 0) + i.file_size
    return {"zipped_bytes": z.stat().st_size, "unzipped_bytes": sum(i.file_size for i in infos), "files": len(infos),
            "largest_top_level_unzipped_bytes": dict(sorted(by_top.items(), key=lambda kv: -kv[1])[:8]),
            "limit_zipped_bytes": LAMBDA_ZIP_LIMIT, "limit_unzipped_bytes": LAMBDA_UNZIPPED_LIMIT}


# --- 3. targets and report -----------------------------------------------------------------------------------
def mb(mib):
    "MiB (what ru_maxrss gives, /1024) as MB (10^6 bytes, the unit of the targets and of Lambda's memory setting)."
    return f"{mib * MiB / 1e6:.0f} MB"


# what each headline ratio compares: MLflow's side as a user would deploy it against ours; and, for the model whose
# bundle is ONNX, the same model.onnx on both sides (serving layer against serving layer)
END_TO_END = {"glucose-response": "end to end as a user would deploy (sklearn pipeline in MLflow vs our ONNX)",
              "glucose-forecast": "end to end as a user would deploy (Python pyfunc forecaster in MLflow vs our JSON-state kernel)"}
LIKE_FOR_LIKE = "serving layer vs serving layer (same ONNX model)"


def ratio_row(id_, what, pyf, lam, rounds, blocks, target, met_at=None, **extra):
    """A target row for `pyf` p50 ÷ `lam` p50 (summaries of the pyfunc and handler columns), with the ratio of their CPU
    time per request, per round and per pair of blocks beside it; `met_at`: the target ratio, if the issue set one."""
    ratio, cpu, cpu_all, b = pyf["p50_us"] / lam["p50_us"], pyf["cpu_us"] / lam["cpu_us"], pyf["cpu_all_us"] / lam["cpu_all_us"], sorted(blocks)
    return {"id": id_, "value": f"{ratio:.1f}x", "target": target, "met": None if met_at is None else bool(ratio >= met_at),
            "what": f"**{what}**: p50 {pyf['p50_us']:,.0f} µs ÷ {lam['p50_us']:.0f} µs; CPU per request (median of blocks) {pyf['cpu_us']:,.0f} µs ÷ "
                    f"{lam['cpu_us']:.1f} µs = **{cpu:.1f}x** (all blocks, garbage collections included: {cpu_all:.1f}x); "
                    f"p50 ratio per round: {', '.join(f'{x:.1f}' for x in rounds)}; "
                    f"per pair of blocks: median {statistics.median(b):.1f}, {b[0]:.1f}–{b[-1]:.1f}",
            "measured": ratio, "measured_cpu": cpu, "measured_cpu_all": cpu_all, "per_round": rounds, "per_block_pair": blocks, **extra}


MET = {True: "yes", False: "**no**", None: "n/a (reported)"}


def evaluate(res: dict) -> list:
    w, c, pk = res["warm"], res["cold"], res["package"]
    T = []
    for name in MODELS:
        lam = w["lambda"]["models"][name]["summary"]
        pyf = w["pyfunc"]["models"][name]["summary"]
        h, hq = lam["handler_log"]["p50_us"], lam["handler_nolog"]["p50_us"]
        T.append({"id": f"handler_p50/{name}", "what": f"handler p50, warm, 1 row, `{name}`, logging on as deployed (logging off: {hq:.0f} µs; "
                                                        f"CPU per request {lam['handler_log']['cpu_us']:.1f} µs, logging off {lam['handler_nolog']['cpu_us']:.1f} µs)",
                  "value": f"{h:.0f} µs", "target": "≤ 100 µs", "met": h <= 100, "measured": h, "measured_logging_off": hq,
                  "cpu_us": lam["handler_log"]["cpu_us"]})
        T.append(ratio_row(f"handler_vs_pyfunc/{name}", END_TO_END[name] + f", `{name}`: `mlflow.pyfunc` predict ÷ our handler",
                           pyf["pyfunc_predict"], lam["handler_log"], w["round_ratios"][name], w["block_ratios"][name], "≥ 30x", 30,
                           measured_logging_off=pyf["pyfunc_predict"]["p50_us"] / hq))
        if "onnx_pyfunc_predict" in pyf:
            T.append(ratio_row(f"onnx_pyfunc_vs_handler/{name}", LIKE_FOR_LIKE + f", `{name}`: `mlflow.pyfunc` predict of the exported "
                               "model.onnx (onnx flavour, same session options) ÷ our handler", pyf["onnx_pyfunc_predict"], lam["handler_log"],
                               w["onnx_round_ratios"][name], w["onnx_block_ratios"][name], "none set (issue 18: reported)"))
    for name in MODELS:
        o, q, m = (c["ours"]["lambda"][name]["median_wall_s"], c["ours"]["plain"][name]["median_wall_s"], c["mlflow"][name]["median_wall_s"])
        n = len(c["ours"]["lambda"][name]["runs"])
        T.append({"id": f"cold_start/{name}", "what": f"cold start, fresh process → first answer, `{name}`, median of {n}, the package as `nutrino-ml package` builds it (plain `chalice package`, no .pyc: {q:.3f} s)",
                  "value": f"{o:.3f} s", "target": "< 0.5 s", "met": o < 0.5, "measured": o, "measured_plain": q})
        T.append({"id": f"cold_vs_mlflow/{name}", "what": f"mlflow cold start ÷ ours, `{name}` ({m:.2f} s ÷ {o:.3f} s; plain `chalice package`: {m / q:.1f}x)",
                  "value": f"{m / o:.1f}x", "target": "≥ 8x", "met": m / o >= 8, "measured": m / o})
    for name in MODELS:
        r = max(c["ours"][v][name]["max_peak_rss_mib"] for v in c["ours"])
        T.append({"id": f"memory_cold/{name}", "what": f"peak memory (ru_maxrss), cold-start process, `{name}` (max of all runs)",
                  "value": mb(r), "target": "≤ 100 MB", "met": r * MiB <= 100e6, "measured_mib": r})
    r = w["lambda"]["rss_after_warm_mib"]
    T.append({"id": "memory_warm", "what": "peak memory (ru_maxrss), warm Lambda worker: both models loaded, after all its timed requests",
              "value": mb(r), "target": "≤ 100 MB", "met": r * MiB <= 100e6, "measured_mib": r})
    T.append({"id": "package", "what": "`nutrino-ml package` deployment.zip (chalice package + the cold path's bytecode): zipped / unzipped",
              "value": f"{pk['zipped_bytes'] / MiB:.1f} / {pk['unzipped_bytes'] / MiB:.1f} MiB",
              "target": "≤ 50 / 250 MiB", "met": pk["zipped_bytes"] <= LAMBDA_ZIP_LIMIT and pk["unzipped_bytes"] <= LAMBDA_UNZIPPED_LIMIT})
    return T


# the warm table's rows: (worker, column, label)
WARM_COLUMNS = [("lambda", "handler_log", "ours: handler, logging on (as deployed)"),
                ("lambda", "handler_nolog", "ours: handler, logging off"),
                ("lambda", "direct_log", "ours: `protocols.native_answer`, logging on"),
                ("lambda", "direct_nolog", "ours: `protocols.native_answer`, logging off"),
                ("lambda", "chalice_log", "ours: the same route through Chalice's own dispatch, logging on"),
                ("pyfunc", "pyfunc_predict", "MLflow as a user would deploy: `mlflow.pyfunc` predict of the registered version (sklearn pipeline; Python forecaster)"),
                ("pyfunc", "model_impl_predict (no schema enforcement)", "… its wrapped model alone, no schema enforcement"),
                ("pyfunc", "onnx_pyfunc_predict", "MLflow on our model: `mlflow.pyfunc` predict, onnx flavour, the same model.onnx"),
                ("pyfunc", "onnx_model_impl_predict (no schema enforcement)", "… its wrapped model alone (onnxruntime via MLflow's wrapper), no schema enforcement")]


def gc_ms(worker):
    "Wall time (ms) a warm worker spent in the garbage collector over all its timed requests."
    return sum(x["gc_us"] * x["n"] for m in worker["models"].values() for x in m["summary"].values()) / 1e3


def us(s):
    return f"{s['p50_us']:,.0f} / {s['p99_us']:,.0f}"


def cold_row(label, o, inside_import, inside_first):
    return (f"| {label} | {o['median_wall_s']:.3f} s ({o['min_wall_s']:.3f}–{o['max_wall_s']:.3f}) | {inside_import} | {inside_first} | "
            f"{mb(o['max_peak_rss_mib'])} ({mb(o['max_vmhwm_mib'])}) |")


def markdown(res: dict) -> str:
    m, w, c, h, pk = res["machine"], res["warm"], res["cold"], res["http"], res["package"]
    med = lambda o, k: statistics.median(r[k] for r in o["runs"])  # noqa: E731
    L = [START, "", "### `bench/serving`: results", "",
         f"Measured {res['date']} on {m['cpu']} (nproc {m['nproc']}, {m['mem_total_mib'] / 1024:.0f} GiB), Python {m['python']}, "
         f"{m['platform']}; `{res['command']}` (git {res['git']}), {res['total_s']:.0f} s in all; load average (1/5/15 min) "
         f"{'/'.join(f'{x:.2f}' for x in res['loadavg_start'])} at the start, {'/'.join(f'{x:.2f}' for x in res['loadavg_end'])} at the end "
         "(the benchmark itself keeps about one CPU busy" + (f"; other work shared the {m['nproc']} cores during this run, so wall times, "
         "cold starts most, are slower than on an idle machine: the CPU-time columns are the ones to compare across runs"
         if max(res["loadavg_start"][0], res["loadavg_end"][0]) >= 1.5 else "") + "). Stack built by the run: "
         f"`datalake simulate --users {res['config']['users']} --days {res['config']['days']}`, `ploomber build`, "
         f"version 1 of each model promoted, exported, `nutrino-ml package --stage dev` (offline), unzipped; mlflow {w['pyfunc']['mlflow_version']}.",
         "", "| target (issues 3 and 18) | measured (p50 ratio for ÷ rows) | target | met? |", "|---|---|---|---|"]
    for t in res["targets"]:
        L.append(f"| {t['what']} | {t['value']} | {t['target']} | {MET[t['met']]} |")
    missed = [t["id"] for t in res["targets"] if t["met"] is False]
    L += ["", (f"**Targets missed: {', '.join(missed)}.**" if missed else "All targets met.") + " Two kinds of ÷ row: *end to end as a user "
          "would deploy* times MLflow serving the registered version (the scikit-learn pipeline, or the Python forecaster) against our "
          "handler serving the exported bundle, so it compares inference engines as much as serving layers; *serving layer vs serving "
          "layer* times `mlflow.pyfunc` serving the very model.onnx our handler serves, so only what is around the model differs "
          "(the issue set no target for it). Wall p50 ratios grow with the machine's load (a call of a few ms is preempted far more "
          "often than one of tens of µs); the CPU-time ratio beside each leaves out the time a call spends preempted, so load "
          "inflates it far less.", ""]
    L += ["**Warm, in-process, 1 row per request**: wall time per call, p50 / p99, and CPU time per request: the process's CPU "
          "time over each column's share of a block ÷ its requests (all threads counted, time spent preempted not), the median "
          "over blocks, then in brackets over all blocks, and the garbage collector's wall time ÷ requests; µs; same rows, version 1:", "",
          "| serving path | " + " | ".join(f"`{n}` wall p50 / p99 | `{n}` CPU per request: median of blocks (all blocks; GC)" for n in MODELS) + " |",
          "|---|" + "---:|---:|" * len(MODELS)]
    for side, key, label in WARM_COLUMNS:
        cells = []
        for name in MODELS:
            x = w[side]["models"][name]["summary"].get(key)
            cells += [us(x), f"{x['cpu_us']:,.1f} ({x['cpu_all_us']:,.1f}; {x['gc_us']:,.1f})"] if x else ["", ""]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    ox = w["pyfunc"]["models"][ONNX_SOURCE].get("onnx", {})
    L += ["", f"{w['lambda']['models'][MODELS[0]]['n']:,} requests per cell for ours, {w['pyfunc']['models'][MODELS[0]]['n']:,} per `mlflow.pyfunc` predict cell "
          f"({w['pyfunc']['models'][MODELS[0]]['summary']['model_impl_predict (no schema enforcement)']['n']:,} per wrapped-model cell), "
          f"in {res['config']['warm_rounds']} rounds (a fresh Lambda worker and a fresh pyfunc worker each round, side by side, taking turns in {res['config']['warm_blocks']} blocks each), after warm-up, cycling over {', '.join(str(res['rows'][n]['rows_used']) + ' `' + res['rows'][n]['table'] + '` rows' for n in MODELS)}; "
          f"load average (1 min) at the start of each round and at the end: {', '.join(f'{x[0]:.2f}' for x in w['loadavg_rounds'])}. "
          f"Answers: ours equal the registered versions' `mlflow.pyfunc` answers within {max(w['max_abs_diff_vs_pyfunc'].values()):.1e} mg/dL "
          f"(our ONNX export runs in float32, the scikit-learn pipeline in float64) and the onnx flavour's (same model.onnx) within "
          f"{w['max_abs_diff_vs_onnx_pyfunc'][ONNX_SOURCE]:.1e} mg/dL. The onnx-flavour model is the exported bundle's model.onnx, logged with "
          "`mlflow.onnx.log_model` (the registered version's signature, so pyfunc enforces the same schema; onnxruntime session options as ours: "
          f"one intra-op and one inter-op thread) into a throwaway tracking store, loaded with `mlflow.pyfunc.load_model` (loader `{ox.get('flavor_loader')}`); "
          "it has no counterpart for the forecaster, whose bundle is not ONNX. Garbage collection during the timed requests: "
          f"Lambda worker {gc_ms(w['lambda']):,.0f} ms, pyfunc worker {gc_ms(w['pyfunc']):,.0f} ms in all (a full collection of the "
          "pyfunc worker's ~400 MB heap takes ~0.5 s and lands on whichever column allocates when it falls due: hence the untimed "
          "`gc.collect()` after loading, and the median of blocks first). Peak RSS of the warm processes: "
          f"Lambda worker {mb(w['lambda']['rss_after_warm_mib'])}, pyfunc worker {mb(w['pyfunc']['rss_after_warm_mib'])} (both models, and the ONNX one, loaded).", "",
          "**Where a warm handler request goes** (p50 of each piece timed alone in the same process, µs):", "",
          "| piece | " + " | ".join(f"`{n}`" for n in MODELS) + " |", "|---|" + "---|" * len(MODELS)]
    pieces = list(w["lambda"]["models"][MODELS[0]]["pieces_summary"])
    pieces += [k for k in w["lambda"]["models"][MODELS[1]]["pieces_summary"] if k not in pieces]
    for k in pieces:
        L.append(f"| {k} | " + " | ".join(f"{w['lambda']['models'][n]['pieces_summary'][k]['p50_us']:.1f}"
                                           if k in w['lambda']['models'][n]['pieces_summary'] else "" for n in MODELS) + " |")
    S = {n: w["lambda"]["models"][n]["summary"] for n in MODELS}
    L.append("| the handler around it: event → answer (handler − `protocols.native_answer`, p50s, logging off) | " + " | ".join(
        f"{S[n]['handler_nolog']['p50_us'] - S[n]['direct_nolog']['p50_us']:.1f}" for n in MODELS) + " |")
    L.append("| logging on − off (handler p50s) | " + " | ".join(
        f"{S[n]['handler_log']['p50_us'] - S[n]['handler_nolog']['p50_us']:.1f}" for n in MODELS) + " |")
    L += ["", "**HTTP, sequential, one new connection per request** (µs, p50 / p99):", "",
          "| model | `chalice local` `/models/{name}/invocations` (dataframe_split) | `chalice local` `/models/{name}/predict` | `mlflow models serve` `/invocations` (dataframe_split) |",
          "|---|---|---|---|"]
    for name in MODELS:
        L.append(f"| `{name}` | {us(h['chalice'][name]['invocations_split'])} | {us(h['chalice'][name]['native_predict'])} | "
                 f"{us(h['mlflow'][name]['invocations_split'])} |")
    L += ["", f"{h['chalice'][MODELS[0]]['invocations_split']['n']} requests per cell after {res['config']['http_warm']} warm-up "
          f"(same answers: first prediction differs by at most {max(h['first_answer_abs_diff'].values()):.1e}); "
          f"server start → first `/ping` 200: chalice local {h['chalice']['ready_s']:.1f} s, mlflow models serve "
          + ", ".join(f"{h['mlflow'][n]['ready_s']:.1f} s" for n in MODELS) + f" ({', '.join(MODELS)}).", "",
          f"**Cold start: fresh process → first answer** (median of {res['config']['cold_runs']} runs after one discarded; "
          "`-B` everywhere: /var/task is read-only in Lambda, so nothing is cached between cold starts; \"as packaged\" = the zip of "
          "`nutrino-ml package`, which carries the cold path's bytecode; \"no .pyc\" = the same zip without it, as `chalice package` "
          "or `chalice deploy` alone ship it, so every import compiles):", "",
          "| process | wall, median (min–max) | inside: imports | inside: load + first prediction | peak RSS: ru_maxrss (VmHWM) |",
          "|---|---|---|---|---|"]
    for variant, label in (("lambda", "as packaged"), ("plain", "no .pyc")):
        for name in MODELS:
            o = c["ours"][variant][name]
            L.append(cold_row(f"ours, `python -I -S -B`, {label}: import app + handler, `{name}`", o,
                              f"{med(o, 'import_app_s'):.3f} s (`import app`)", f"{med(o, 'first_request_s'):.3f} s"))
    for name in MODELS:
        o = c["mlflow"][name]
        L.append(cold_row(f"mlflow, `python -c`: import, `pyfunc.load_model`, predict, `{name}`", o,
                          f"{med(o, 'import_s'):.2f} s (`mlflow.pyfunc`, `pandas`)", f"{med(o, 'load_model_s') + med(o, 'first_predict_s'):.2f} s"))
    for label, o in c["imports"].items():
        L.append(cold_row(f"{label}, alone", o, f"{med(o, 'import_s'):.3f} s", ""))
    for key in (f"ours/lambda/{MODELS[0]}", f"mlflow/{MODELS[0]}"):
        top = ", ".join(f"{n} {ms:.0f}" for n, d, ms in c["importtime_ms"][key][:10])
        L += ["", f"`python -X importtime`, {key} (cumulative ms, nesting ≤ 3): {top}."]
    big = ", ".join(f"{k} {v / MiB:.1f}" for k, v in pk["largest_top_level_unzipped_bytes"].items())
    L += ["", f"**Package**: deployment.zip {pk['zipped_bytes'] / MiB:.1f} MiB zipped, {pk['unzipped_bytes'] / MiB:.1f} MiB unzipped "
          f"({pk['files']:,} files; largest, MiB unzipped: {big}); Lambda's limits: 50 MiB zipped (direct upload), 250 MiB unzipped.", "",
          "How measured: the handler is `app.app(event, None)` of the **unzipped package**, in a subprocess on a bare "
          "interpreter (`python -I -S`, cwd = the package, nothing else on `sys.path`), with an API Gateway proxy event for "
          "`POST /models/{name}/predict` as API Gateway sends it (17 headers, the request context; `bench/serving/common.py`) "
          "and a body `{\"rows\": [row]}`. \"Logging on\" leaves `app.models.log` as deployed "
          "(one JSON line per prediction to stdout, a pipe the launcher drains every 10 ms, as a log forwarder reads Lambda's stdout; a reader blocked on the pipe would be woken by each line, which on this 2-vCPU VM costs the writer an inter-processor interrupt through the hypervisor, 8–26 µs per line, and the table would time that instead of the handler; `bench/serving/spawn.py`), \"logging off\" points it at a no-op. "
          "`protocols.native_answer` is `app.models.predict(name, raw_body)` on the same object. `mlflow.pyfunc` is "
          "`load_model(\"models:/<name>/1\").predict(df)` (sqlite tracking store of the run) with prebuilt 1-row DataFrames of the same rows "
          "(parquet dtypes; building them is not timed, so MLflow is not charged for parsing JSON while ours is). Timer: "
          "`perf_counter_ns` around each call, GC on (one untimed `gc.collect()` in each worker after its loads and warm-up); CPU time: "
          "`process_time_ns` around each column's share of a block (`bench/serving/common.py`). The Lambda worker and the pyfunc worker of a round run side by side and take turns "
          "(two FIFOs pass a token): pyfunc's load and warm-up, then ours, then a block of each in turn (20 blocks per round; ours times ~15x as many requests as pyfunc, so that both cover about as many seconds of the machine), so both sample the same seconds of this VM, whose speed changes by up to ~2x from one second to the next. "
          "Cold start: wall time from spawning the process to reading its answer line on its stdout. Processes that report memory are started by a small launcher on a bare interpreter "
          "(`bench/serving/spawn.py`), because Linux carries the parent's peak RSS into a child's ru_maxrss; VmHWM is the "
          "child's own post-exec peak from /proc. Raw numbers: `bench/results/serving.json`.",
          "", END]
    return "\n".join(L)




def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests and runs (~2.5 min, most of it the build); writes serving-quick.json, not the README")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (stack, package, logs)")
    ap.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    ap.add_argument("--reuse", type=Path, help=argparse.SUPPRESS)  # development: a dir kept by --keep; skips the build
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    os.environ.update(TELEMETRY_OFF)
    # variables that change how Python runs (bytecode writing, buffering, paths) would differ between machines
    dropped = {k: os.environ.pop(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH", "PYTHONSTARTUP",
                                              "PYTHONHOME", "PYTHONOPTIMIZE") if k in os.environ}
    global LAUNCHER, LAUNCHER2
    LAUNCHER, LAUNCHER2 = Launcher(), Launcher()   # first, while this process is small
    t_all = time.perf_counter()
    tmp = args.reuse.resolve() if args.reuse else Path(tempfile.mkdtemp(prefix="nutrino-bench-serving-"))
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": ".venv/bin/python bench/serving/run.py" + (" --quick" if args.quick else ""),
           "mode": "quick" if args.quick else "full", "config": cfg, "machine": machine(), "git": git_rev(), "timings_s": {},
           "env_dropped_for_children": sorted(dropped), "loadavg_start": os.getloadavg()}
    log(f"stack in {tmp}")
    try:
        if args.reuse:
            res["reused_stack"] = True
            stack = {"tracking_uri": stack_env(tmp)["NUTRINO_MLFLOW_TRACKING_URI"]}
        else:
            stack = build_stack(tmp, cfg, res["timings_s"])
        onnx_json = log_onnx(tmp, stack["tracking_uri"], res["timings_s"])
        log("stack built: " + ", ".join(f"{k} {v:.1f}" for k, v in res["timings_s"].items()))
        res["package"] = package_size(tmp)
        cases = pick_rows(tmp, cfg["rows"])
        res["rows"] = {m: {"table": TABLE[m], "table_rows": c["table_rows"], "rows_used": len(c["rows"]), "columns": c["columns"]}
                       for m, c in cases.items()}
        # the warm, per-request timings come last: right after the build (~300 MB of files written, mlflow, pip),
        # this VM runs small loops up to ~2x slower for a minute or two; cold starts and HTTP are less sensitive
        os.sync()
        t = time.perf_counter()
        res["cold"] = cold_start(tmp, cases, cfg, stack["tracking_uri"])
        res["timings_s"]["cold_s"] = time.perf_counter() - t
        t = time.perf_counter()
        res["http"] = http_bench(tmp, cases, cfg, stack["tracking_uri"])
        res["timings_s"]["http_s"] = time.perf_counter() - t
        t = time.perf_counter()
        res["warm"] = warm_latency(tmp, cases, cfg, stack["tracking_uri"], onnx_json)
        for side in ("lambda", "pyfunc"):
            for name, r in res["warm"][side]["models"].items():
                r["summary"] = {k: {**summary_ns(v), **cpu_summary(r, k)} for k, v in r.pop("samples_ns").items()}
                if "pieces_ns" in r:
                    r["pieces_summary"] = {k: summary_ns(v) for k, v in r.pop("pieces_ns").items()}
        res["timings_s"]["warm_s"] = time.perf_counter() - t
        res["total_s"] = time.perf_counter() - t_all
        res["loadavg_end"] = os.getloadavg()
        res["targets"] = evaluate(res)
    finally:
        for p in list(PROCS):
            stop_server(p)
        LAUNCHER.close()
        LAUNCHER2.close()
        if args.keep or args.reuse:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("serving-quick.json" if args.quick else "serving.json")
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    print(md)
    log(f"wrote {out.relative_to(ROOT)}")
    if not args.quick and not args.no_readme:
        _write_readme(md, START, END)
        log(f"wrote the table into {README.relative_to(ROOT)}")
    missed = [t["id"] for t in res["targets"] if t["met"] is False]
    log(f"targets missed: {missed or 'none'}")


if __name__ == "__main__":
    main()
