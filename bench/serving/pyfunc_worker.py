"""Warm per-request latency of `mlflow.pyfunc.load_model("models:/<name>/1").predict(<1-row DataFrame>)`.

Started by bench/serving/run.py as `python pyfunc_worker.py ROWS OUT N_WARM N_REQ [BLOCKS MINE THEIRS [ONNX]]` with
MLFLOW_TRACKING_URI set to the benchmark's sqlite store; with BLOCKS and two FIFOs it takes turns with the Lambda
worker (common.Turns): loading and warm-up are one turn, each of BLOCKS blocks of requests another. The rows are the
same feature-table rows the Lambda worker sends (by position in the features parquet); each request is one prebuilt
1-row DataFrame with the parquet's dtypes (building it is not timed).
ONNX (optional, "-" for none) is the JSON written by onnx_model.py: the exported bundle's model.onnx logged as an
`onnx`-flavour model in a throwaway store; it is loaded with `mlflow.pyfunc.load_model` too and timed on the same
frames as its source model, in the same blocks, so that MLflow's serving layer and ours are compared on one model.
Every timed column also gets its CPU time (`time.process_time_ns` around each column's share of a block) and its time
in the garbage collector.
"""
import gc, os, json, resource, sys, time

t0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Turns, timed_cpu  # noqa: E402
import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import pandas as pd  # noqa: E402
IMPORT_S = time.perf_counter() - t0

rows_file, out_file, n_warm, n_req = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
BLOCKS = int(sys.argv[5]) if len(sys.argv) > 5 else 1
TURNS = Turns(*sys.argv[6:8])
ONNX = json.loads(open(sys.argv[8]).read()) if sys.argv[8:9] not in ([], ["-"]) else None
CASES = json.loads(open(rows_file).read())
now = time.perf_counter_ns

result = {"import_mlflow_pyfunc_s": IMPORT_S, "mlflow_version": mlflow.__version__, "models": {}}
IMPL, OPY, OIMPL = ("model_impl_predict (no schema enforcement)", "onnx_pyfunc_predict",
                    "onnx_model_impl_predict (no schema enforcement)")


def load(uri, tracking_uri=None):
    "`mlflow.pyfunc.load_model(uri)` (from `tracking_uri` if given) and the seconds it took."
    before = mlflow.get_tracking_uri()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        t = time.perf_counter()
        return mlflow.pyfunc.load_model(uri), time.perf_counter() - t
    finally:
        mlflow.set_tracking_uri(before)


def answers(model, frames):
    "The model's answer for every frame, as floats (pyfunc returns a Series, an array or a DataFrame by flavour)."
    return [float(pd.DataFrame(model.predict(f)).iloc[0, 0]) for f, in frames]


def wrapped(model, frame, r, key):
    "The model pyfunc wraps, if it answers on its own (private API, used only to show what pyfunc's layer costs)."
    impl = getattr(model, "_model_impl", None)
    if impl is None or not hasattr(impl, "predict"):
        return None
    try:
        impl.predict(frame)
    except Exception as e:  # noqa: BLE001
        r[f"{key}_error"] = repr(e)
        return None
    return impl


def add(r, key):
    for k in ("samples_ns", "block_p50_us"):
        r[k][key] = []
    r["cpu_ns"][key], r["cpu_n"][key], r["gc_ns"][key] = [], [], 0


TURNS.take()
SETUP = {}
for name, case in CASES.items():
    X = pd.read_parquet(case["parquet"])[case["columns"]]
    frames = [(X.iloc[[i]].reset_index(drop=True),) for i in case["index"]]
    model, load_s = load(f"models:/{name}/1")
    t = now(); model.predict(frames[0][0]); first_ns = now() - t
    preds = answers(model, frames)
    timed_cpu(model.predict, frames, n_warm)
    r = {"load_model_s": load_s, "first_predict_ns": first_ns, "predictions": preds, "n": 0, "blocks": BLOCKS,
         "flavor_loader": model.metadata.flavors["python_function"].get("loader_module"),
         "samples_ns": {}, "block_p50_us": {}, "cpu_ns": {}, "cpu_n": {}, "gc_ns": {}}
    cols = {"pyfunc_predict": model.predict}
    if impl := wrapped(model, frames[0][0], r, "model_impl"):
        cols[IMPL] = impl.predict
    if ONNX and ONNX["source_model"] == name:
        om, r["onnx_load_model_s"] = load(ONNX["model_uri"], ONNX["tracking_uri"])
        r["onnx"] = {**ONNX, "flavor_loader": om.metadata.flavors["python_function"].get("loader_module"),
                     "predictions": answers(om, frames)}
        timed_cpu(om.predict, frames, n_warm)
        cols[OPY] = om.predict
        if oimpl := wrapped(om, frames[0][0], r, "onnx_model_impl"):
            cols[OIMPL] = oimpl.predict
    for k in cols:
        add(r, k)
    SETUP[name] = cols, frames
    result["models"][name] = r
# loading the models leaves a full collection of the ~400 MB heap due: run it now, untimed, rather than on whichever
# column happens to allocate first (it would add ~0.5 s to one column's CPU time)
gc.collect()
TURNS.give()

per, per_impl = -(-n_req // BLOCKS), -(-min(n_req, 1000) // BLOCKS)
for b in range(BLOCKS):
    TURNS.take()
    for name, (cols, frames) in SETUP.items():
        r = result["models"][name]
        for k, fn in cols.items():   # the columns take turns too, in the same order every block
            v, cpu, gc_ns = timed_cpu(fn, frames, per if k in ("pyfunc_predict", OPY) else per_impl)
            r["samples_ns"][k] += v
            r["block_p50_us"][k].append(sorted(v)[len(v) // 2] / 1e3)
            r["cpu_ns"][k].append(cpu)
            r["cpu_n"][k].append(len(v))
            r["gc_ns"][k] += gc_ns
        r["n"] += per
    TURNS.give()
result["rss_after_warm_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result["vmhwm_after_warm_mib"] = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

with open(out_file, "w") as f:
    json.dump(result, f, default=list)   # the arrays of samples
