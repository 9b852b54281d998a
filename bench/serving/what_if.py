"""What-if estimate (not part of run.py, changes nothing): warm handler latency if the predict route skipped Chalice's
per-request machinery, small batches used python lists instead of numpy, and the log line were cheaper.

A prototype of those changes, written against the package's own ServedModels (routing, schema check and log record
kept), timed next to the deployed handler on the same rows. Run inside an unzipped package kept by `run.py --keep`:

    cd /tmp/nutrino-bench-serving-XXXX/unzipped
    /work/main/.venv/bin/python -I -S -B /work/main/bench/serving/what_if.py ../rows.json | cat > /dev/null

(stdout carries the log lines, as in Lambda; the results go to stderr as JSON.)
"""
import json, os, sys, time

sys.path.insert(0, ".")
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
from common import api_event as event  # noqa: E402
import app  # noqa: E402
import numpy as np  # noqa: E402
from nutrino_ml import serving  # noqa: E402

now = time.perf_counter_ns
MODELS = ("glucose-response", "glucose-forecast")


def p50(fn, n=5000):
    for _ in range(500):
        fn()
    ts = []
    for _ in range(n):
        t = now(); fn(); ts.append(now() - t)
    ts.sort()
    return round(ts[n // 2] / 1000, 1)


models = app.models
_dumps = json.JSONEncoder(separators=(",", ":")).encode   # one encoder, not one per json.dumps call
_sec = [0, ""]


def ts():
    "strftime once per second, not per request."
    s = int(time.time())
    if s != _sec[0]:
        _sec[0], _sec[1] = s, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))
    return _sec[1]


LOG = {"on": lambda rec: os.write(1, (_dumps(rec) + "\n").encode())}   # one write(2) per line, no TextIOWrapper


def small_batch_predictor(m):
    "Per bundle format: predictions for python-list columns (no per-column numpy arrays, no nan_to_num)."
    pred = models.predictor(m)
    if m["format"] == "forecaster-json":
        st, idx = pred.kernel.state, pred.kernel.index
        base, g, phi, beta = st["baseline"], st["global_baseline"], st["phi"], st["beta"]

        def pp(cols):
            out = []
            for u, x, t in zip(cols["user_id"], cols["glucose_mgdl"], cols["glucose_trend"]):
                mu = base[idx[u]] if u in idx else g
                out.append(mu + phi * (x - mu) + beta * (0.0 if t != t else t))
            return out
        return pp
    names, sess, inp = pred.names, pred.session, pred.input_name
    return lambda cols: sess.run(None, {inp: np.array([cols[n] for n in names], dtype=np.float32).T})[0].ravel().tolist()


SMALL = {n: small_batch_predictor(models.resolve(n)) for n in MODELS}


def fast(event, context):
    "POST /models/{name}/predict without Chalice's Request/Response/middleware/binary-type checks."
    body = event["body"]
    serving.check_size(body)
    name, rid = event["pathParameters"]["name"], event["requestContext"].get("requestId")
    t0 = time.perf_counter()
    rows = serving.parse_body(body)
    m, reason = models.route(name, (event.get("headers") or {}).get("x-model-version"), None, rid)
    cols = {f["name"]: [serving._field_value(r, i, f) for i, r in enumerate(rows)] for f in m["inputs"]}
    preds = SMALL[name](cols)
    LOG["on"]({"event": "prediction", "ts": ts(), "request_id": rid, "model": name, "version": m["version"], "route": reason,
               "shadow": False, "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "rows": len(preds),
               "entity": None, "predictions": preds})
    return {"statusCode": 200, "headers": {"X-Model-Version": str(m["version"])}, "multiValueHeaders": {},
            "body": _dumps({"model": name, "version": m["version"], "route": reason, "predictions": preds})}


cases = json.load(open(sys.argv[1]))
out = {}
for name in MODELS:
    evs = [event(name, json.dumps({"rows": [r]})) for r in cases[name]["rows"]]
    for e in evs:   # same answers as the deployed handler
        a, b = json.loads(app.app(e, None)["body"]), json.loads(fast(e, None)["body"])
        assert a["version"] == b["version"] and abs(a["predictions"][0] - b["predictions"][0]) < 1e-9, (a, b)
    it = [0]

    def nxt():
        it[0] += 1
        return evs[it[0] % len(evs)]
    r = {"deployed handler, logging on": p50(lambda: app.app(nxt(), None)),
         "prototype, logging on": p50(lambda: fast(nxt(), None))}
    saved_app, saved_fast = models.log, LOG["on"]
    models.log = LOG["on"] = lambda rec: None
    r["deployed handler, logging off"] = p50(lambda: app.app(nxt(), None))
    r["prototype, logging off"] = p50(lambda: fast(nxt(), None))
    models.log, LOG["on"] = saved_app, saved_fast
    out[name] = r
print(json.dumps(out, indent=1), file=sys.stderr)
