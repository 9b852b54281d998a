"""Warm per-request latency of `mlflow.pyfunc.load_model("models:/<name>/1").predict(<1-row DataFrame>)`.

Started by bench/serving/run.py as `python pyfunc_worker.py ROWS OUT N_WARM N_REQ [BLOCKS MINE THEIRS]` with
MLFLOW_TRACKING_URI set to the benchmark's sqlite store; with BLOCKS and two FIFOs it takes turns with the Lambda
worker (common.Turns): loading and warm-up are one turn, each of BLOCKS blocks of requests another. The rows are the
same feature-table rows the Lambda worker sends (by position in the features parquet); each request is one prebuilt
1-row DataFrame with the parquet's dtypes (building it is not timed).
"""
import os, json, resource, sys, time

t0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Turns, timed  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import pandas as pd  # noqa: E402
IMPORT_S = time.perf_counter() - t0

rows_file, out_file, n_warm, n_req = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
BLOCKS = int(sys.argv[5]) if len(sys.argv) > 5 else 1
TURNS = Turns(*sys.argv[6:8])
CASES = json.loads(open(rows_file).read())
now = time.perf_counter_ns


result = {"import_mlflow_pyfunc_s": IMPORT_S, "mlflow_version": mlflow.__version__, "models": {}}
IMPL = "model_impl_predict (no schema enforcement)"
TURNS.take()
SETUP = {}
for name, case in CASES.items():
    X = pd.read_parquet(case["parquet"])[case["columns"]]
    frames = [(X.iloc[[i]].reset_index(drop=True),) for i in case["index"]]
    t = time.perf_counter(); model = mlflow.pyfunc.load_model(f"models:/{name}/1"); load_s = time.perf_counter() - t
    t = now(); model.predict(frames[0][0]); first_ns = now() - t
    preds = [float(pd.Series(model.predict(f)).iloc[0]) for f, in frames]
    timed(model.predict, frames, n_warm)
    r = {"load_model_s": load_s, "first_predict_ns": first_ns, "predictions": preds, "n": 0, "blocks": BLOCKS,
         "flavor_loader": model.metadata.flavors["python_function"].get("loader_module"),
         "samples_ns": {"pyfunc_predict": []}, "block_p50_us": {"pyfunc_predict": []}}
    # the wrapped model alone (no schema enforcement by pyfunc), to show what MLflow's layer costs
    impl = getattr(model, "_model_impl", None)
    if impl is not None and hasattr(impl, "predict"):
        try:
            impl.predict(frames[0][0])
            r["samples_ns"][IMPL], r["block_p50_us"][IMPL] = [], []
        except Exception as e:  # noqa: BLE001  private API; only used to explain
            r["model_impl_error"] = repr(e)
            impl = None
    SETUP[name] = model, impl, frames
    result["models"][name] = r
TURNS.give()

per = -(-n_req // BLOCKS)
for b in range(BLOCKS):
    TURNS.take()
    for name, (model, impl, frames) in SETUP.items():
        r, got = result["models"][name], {"pyfunc_predict": timed(model.predict, frames, per)}
        if impl is not None:
            got[IMPL] = timed(impl.predict, frames, -(-min(n_req, 1000) // BLOCKS))
        for k, v in got.items():
            r["samples_ns"][k] += v
            r["block_p50_us"][k].append(sorted(v)[len(v) // 2] / 1e3)
        r["n"] += per
    TURNS.give()
result["rss_after_warm_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result["vmhwm_after_warm_mib"] = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

with open(out_file, "w") as f:
    json.dump(result, f, default=list)   # the arrays of samples
