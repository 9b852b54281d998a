"""Warm per-request latency of the Lambda package, run INSIDE the unzipped `chalice package` output.

Started by bench/serving/run.py as `python -I -S -B lambda_worker.py ROWS OUT N_WARM N_REQ details|- [BLOCKS MINE THEIRS]`
with cwd = the unzipped deployment.zip: no site-packages, only what the zip holds (as in Lambda); `details` adds the
pieces of a request and a cProfile (the first round only). With BLOCKS and two FIFOs, it takes turns with the pyfunc
worker (common.Turns): its import, its warm-up and each of BLOCKS blocks of requests are one turn. Every variant also
gets its CPU time (`time.process_time_ns` around its share of each block) and its time in the garbage collector. Standard library only besides the package.
Prints the app's JSON log lines to stdout (a pipe read by the parent, like Lambda's stdout -> CloudWatch); writes
its measurements as JSON to OUT.
"""
import gc, os, cProfile, io, json, pstats, resource, sys, time

sys.path.insert(0, ".")
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder off the path
from common import Turns, api_event as event, timed, timed_cpu  # noqa: E402
from array import array  # noqa: E402
rows_file, out_file, n_warm, n_req = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
DETAILS = sys.argv[5:6] == ["details"]
BLOCKS = int(sys.argv[6]) if len(sys.argv) > 6 else 5
TURNS = Turns(*sys.argv[7:9])
TURNS.take()
t0 = time.perf_counter()
import app  # noqa: E402  the deployed module: Chalice app + ServedModels over chalicelib/models
IMPORT_S = time.perf_counter() - t0

from nutrino_ml.runtime import prediction_log, protocols, schema, serving  # noqa: E402  the vendored copy the package carries
from chalice import Chalice  # noqa: E402  the runtime copy the package carries

CASES = json.loads(open(rows_file).read())
now = time.perf_counter_ns
VARIANTS = ("handler_log", "handler_nolog", "direct_nolog", "direct_log", "chalice_log")


def rss_mib():
    "ru_maxrss of this process (MiB; started by spawn.py so it is its own)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vmhwm_mib():
    "Peak RSS since exec (MiB), from /proc."
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024


LOG = app.models.log          # print_json_line: one JSON line per prediction on stdout
def nolog(record): pass


def native_answer(*a):
    "What the native predict route computes: `protocols.native_answer` on the app's ServedModels."
    return protocols.native_answer(app.models, *a)


def chalice_dispatch(event, context):
    "The route as Chalice alone would answer it: ServingApp's fast path skipped."
    return Chalice.__call__(app.app, event, context)


result = {"import_app_s": IMPORT_S, "rss_after_import_mib": rss_mib(), "vmhwm_after_import_mib": vmhwm_mib(), "serving_file": serving.__file__,
          "python": sys.version, "flags": {"isolated": sys.flags.isolated, "no_site": sys.flags.no_site},
          "site_loaded": "site" in sys.modules, "models": {}}

SETUP = {}
for name, case in CASES.items():
    bodies = [json.dumps({"rows": [r]}) for r in case["rows"]]
    events = [(event(name, b), None) for b in bodies]
    direct = [(name, b, None, "bench-request") for b in bodies]
    app.models.log = LOG
    t = now(); first = app.app(*events[0]); first_ns = now() - t   # loads the version (sha256 check, session)
    assert first["statusCode"] == 200, first
    # the answers for every row, checked against mlflow by the parent
    answers = [json.loads(app.app(*e)["body"]) for e in events]
    assert all(app.app(*e) == chalice_dispatch(*e) for e in events[:50]), "the fast path must answer as Chalice does"
    assert all(a["version"] == 1 for a in answers), answers[0]
    preds = [a["predictions"][0] for a in answers]
    timed(app.app, events, n_warm)
    SETUP[name] = bodies, events, direct
    result["models"][name] = {"first_request_ns": first_ns, "predictions": preds, "n": 0, "blocks": BLOCKS,
                              "samples_ns": {k: array("q") for k in VARIANTS}, "block_p50_us": {k: [] for k in VARIANTS},
                              "cpu_ns": {k: [] for k in VARIANTS}, "cpu_n": {k: [] for k in VARIANTS}, "gc_ns": dict.fromkeys(VARIANTS, 0)}
app.models.log = nolog
gc.collect()   # as the pyfunc worker does after its loads: no collection left due from the setup
TURNS.give()

# BLOCKS turns; in each, per model, every variant in turn, so that a drift of the machine does not favour one of them
per = -(-n_req // BLOCKS)
for b in range(BLOCKS):
    TURNS.take()
    for name, (bodies, events, direct) in SETUP.items():
        r, got = result["models"][name], {}
        # (i) Lambda handler, logging on (the deployed configuration), then with app.models.log -> no-op
        app.models.log = LOG
        got["handler_log"] = timed_cpu(app.app, events, per)
        app.models.log = nolog
        got["handler_nolog"] = timed_cpu(app.app, events, per)
        # (ii) protocols.native_answer on app.models directly (what the handler calls), both ways
        got["direct_nolog"] = timed_cpu(native_answer, direct, per)
        app.models.log = LOG
        got["direct_log"] = timed_cpu(native_answer, direct, per)
        # (iii) the same route through Chalice's own dispatch (Request, middleware, Response), without the fast path
        got["chalice_log"] = timed_cpu(chalice_dispatch, events, per)
        app.models.log = nolog
        for k, (v, cpu, gc_ns) in got.items():
            r["samples_ns"][k] += v
            r["block_p50_us"][k].append(sorted(v)[len(v) // 2] / 1e3)
            r["cpu_ns"][k].append(cpu)
            r["cpu_n"][k].append(len(v))
            r["gc_ns"][k] += gc_ns
        r["n"] += per
    if b < BLOCKS - 1:
        TURNS.give()   # the last turn goes on: the details below are measured before handing over

for name, (bodies, events, direct) in SETUP.items() if DETAILS else ():
    r, preds = result["models"][name], result["models"][name]["predictions"]
    # pieces of one request (logging off), to show where the time goes
    m = app.models.resolve(name)
    pred = app.models.predictor(m)
    parsed = [(json.loads(b)["rows"],) for b in bodies]
    cols = [(schema.validate_rows(p[0], m["inputs"]),) for p in parsed]
    line = prediction_log.prediction_line("bench-request", name, 1, "production", False, 0.012, None, preds[:1]) + "\n"
    pieces = {
        "json.loads(body)": timed(json.loads, [(b,) for b in bodies], n_req),
        "decode_json+native_rows": timed(lambda b: protocols.native_rows(protocols.decode_json(b)), [(b,) for b in bodies], n_req),
        "policy()": timed(app.models.policy, [(name,)], n_req),
        "route()": timed(app.models.route, [(name, None, None, "bench-request")], n_req),
        "validate_rows": timed(lambda rows: schema.validate_rows(rows, m["inputs"]), parsed, n_req),
        "predictor.predict": timed(pred.predict, cols, n_req),
        "score() (validate+predict)": timed(lambda rows: app.models.score(m, rows, None), parsed, n_req),
        "prediction_line() (the log line)": timed(lambda: prediction_log.prediction_line("bench-request", name, 1, "production", False,
                                                                                  0.012, None, preds[:1]), [()], n_req),
        "stdout write+flush of the line": timed(lambda: (sys.stdout.write(line), sys.stdout.flush()), [()], n_req),
    }
    if hasattr(pred, "session"):
        import numpy as np
        X = [(np.array([c[0][n] for n in pred.names], dtype=np.float32).T,) for c in cols]
        pieces["onnxruntime session.run only"] = timed(lambda x: pred.session.run(None, {pred.input_name: x}), X, n_req)
    if hasattr(pred, "kernel"):
        pieces["ForecastKernel.predict_list only"] = timed(
            lambda c: pred.kernel.predict_list(c["user_id"], c["glucose_mgdl"], c["glucose_trend"]), cols, n_req)
    r["pieces_ns"] = pieces

result["rss_after_warm_mib"], result["vmhwm_after_warm_mib"] = rss_mib(), vmhwm_mib()

# cProfile of the deployed configuration (logging on), per model: where a warm request spends its time
app.models.log = LOG
for name, case in CASES.items() if DETAILS else ():
    events = [(event(name, json.dumps({"rows": [r]})), None) for r in case["rows"]]
    prof = cProfile.Profile()
    prof.enable()
    for i in range(min(n_req, 2000)):
        app.app(*events[i % len(events)])
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
    result["models"][name]["cprofile_tottime"] = s.getvalue()
    result["models"][name]["cprofile_calls"] = min(n_req, 2000)

with open(out_file, "w") as f:
    json.dump(result, f, default=list)   # the arrays of samples
TURNS.give()
