"""No request breaks serving: random requests of every route and protocol, over real HTTP to `chalice local`, get an
answer below 500 (a 503 only for a version that cannot be served), and the server answers correctly afterwards.

`make test` sends a few thousand; `make fuzz` (FUZZ_EXAMPLES=20000) a long run. Statuses are counted by route and printed.
"""
import collections, http.client, json, os, shutil, string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import MODELS
from nutrino_ml.local import ChaliceLocal

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2500"))
ROUTES = ["/ping", "/models", "/v2", "/models/{name}/predict", "/models/{name}/versions/{version}/predict",
          "/models/{name}/invocations", "/models/{name}/versions/{version}/invocations",
          "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/versions/{version}",
          "/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready",
          "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]
COUNTS, ROUTE_COUNTS = collections.Counter(), collections.Counter()

odd_text = st.one_of(st.text(max_size=12), st.sampled_from(["٣", "²", "１", "0x1", " 1 ", "-1", "1e3", "production", "canary", "..", "%2F", "\ud800",
                                                           "x" * 300, "日本", "", "latest", "99999999999999999999"]))
names = st.one_of(st.sampled_from(MODELS), odd_text)
versions = st.one_of(st.sampled_from(["1", "production", "2"]), odd_text)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True), odd_text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)), max_leaves=12)
fields = ["user_id", "glucose_mgdl", "glucose_trend", "carbs_g", "fibre_g", "fat_g", "protein_g", "hour", "bmi", "glucose_before"]
rows = st.lists(st.dictionaries(st.one_of(st.sampled_from(fields), odd_text), values, max_size=10), max_size=4)
tensor = st.fixed_dictionaries({"name": st.one_of(st.sampled_from(fields), values), "shape": values, "datatype": st.one_of(st.sampled_from(["FP64", "BYTES", "INT32", "BOOL"]), values),
                                "data": values})
num = st.one_of(st.floats(-1e6, 1e6), st.integers(-1000, 1000), scalars)
forecast_row = st.fixed_dictionaries({"user_id": st.one_of(st.sampled_from(["u000", "u003"]), odd_text), "glucose_mgdl": num},
                                     optional={"glucose_trend": num, "extra": values})
response_row = st.fixed_dictionaries({k: num for k in ("carbs_g", "fibre_g", "fat_g", "protein_g", "hour", "bmi")},
                                     optional={"glucose_before": num, "glucose_trend": num, "user_id": values})
near_valid = st.lists(st.one_of(forecast_row, response_row), min_size=1, max_size=3)
bodies = st.one_of(
    st.builds(lambda r: {"rows": r}, near_valid), st.builds(lambda r: {"dataframe_records": r}, near_valid), st.builds(lambda r: {"instances": r}, near_valid),
    st.builds(lambda u, m: {"user_id": u, "meal": m}, st.one_of(st.sampled_from(["u000", "u003", "nobody"]), values), st.one_of(response_row, values)),
    st.builds(lambda r: {"rows": r}, rows), st.builds(lambda r, u: {"user_id": u, "rows": r}, rows, values), st.builds(lambda u, m: {"user_id": u, "meal": m}, values, values),
    st.builds(lambda c, d: {"dataframe_split": {"columns": c, "data": d}}, values, values), st.builds(lambda r: {"dataframe_records": r}, rows),
    st.builds(lambda v: {"instances": v}, values), st.builds(lambda v, p: {"inputs": v, "params": p}, values, values),
    st.builds(lambda ts, o: {"inputs": ts, "outputs": o, "id": "r"}, st.lists(tensor, max_size=3), values), values)
raw = st.one_of(st.builds(lambda b: json.dumps(b).encode(), bodies), st.binary(max_size=64), st.builds(lambda t: t.encode("utf-8", "surrogatepass"), st.text(max_size=64)),
                st.builds(lambda h, cells: (",".join(h) + "\n" + "\n".join(",".join(r) for r in cells)).encode("utf-8", "surrogatepass"),
                          st.lists(st.sampled_from(fields + ["x"]), min_size=1, max_size=4),
                          st.lists(st.lists(st.one_of(st.text(alphabet=string.printable, max_size=6), st.just("a\rb"), st.just("x" * 140_000)), max_size=4), max_size=3)))
content_types = st.one_of(st.just("application/json"), st.sampled_from(["text/csv", "text/plain", "application/json; charset=utf-8", "*/*", "application/octet-stream", "APPLICATION/JSON"]))
requests = st.fixed_dictionaries({"route": st.sampled_from(ROUTES), "name": names, "version": versions, "body": raw, "ctype": content_types,
                                  "pin": st.one_of(st.none(), versions), "wrong_method": st.integers(0, 9)})
POSTS = ("/predict", "/invocations", "/infer")


def send(port, r):
    path = r["route"].replace("{name}", quote(r["name"].encode("utf-8", "surrogatepass"), safe="")).replace(
        "{version}", quote(r["version"].encode("utf-8", "surrogatepass"), safe=""))
    headers = {"Content-Type": r["ctype"]}
    if r["pin"] is not None: headers["X-Model-Version"] = quote(r["pin"].encode("utf-8", "surrogatepass"), safe="")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        method = r.get("method") or ("POST" if r["route"].endswith(POSTS) else "GET")
        if r.get("wrong_method") == 0: method = "GET" if method == "POST" else "POST"  # one request in ten on the wrong method
        c.request(method, path, body=r["body"] if method == "POST" else None, headers=headers)
        resp = c.getresponse()
        return resp.status, resp.read()
    finally: c.close()


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    "`built`'s app, with a sticky traffic policy on the forecaster (so routing by a fuzzed user_id runs too)."
    app = tmp_path_factory.mktemp("fuzz") / "app"
    shutil.copytree(built["app"], app)
    (app / "chalicelib" / "models" / "glucose-forecast" / "policy.json").write_text(json.dumps({"weights": {"1": 100}, "shadow": [], "sticky_key": "user_id"}))
    with ChaliceLocal(app) as srv:
        yield srv


def test_no_request_gets_a_5xx_and_the_server_still_answers(server, built):
    port = int(server.url.rsplit(":", 1)[1])
    COUNTS.clear()

    errors = {}  # (route, status, body) -> the first request that got it

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(requests)
    def fuzz(r):
        status, body = send(port, r)
        COUNTS[status] += 1
        ROUTE_COUNTS[(r["route"], status)] += 1
        if status >= 500: errors.setdefault((r["route"], status, body[:200]), {k: (v[:80] if isinstance(v, (str, bytes)) else v) for k, v in r.items()})

    fuzz()
    print(f"fuzz: {sum(COUNTS.values())} requests, by status: {dict(sorted(COUNTS.items()))}")
    print("fuzz by route and status:", dict(sorted(ROUTE_COUNTS.items())))
    assert not errors, "\n".join(f"{route} -> {status} {body!r} for {req!r}" for (route, status, body), req in errors.items())
    example = json.loads(send(port, {"route": "/models", "name": "", "version": "", "body": b"", "ctype": "application/json", "pin": None, "method": "GET"})[1])
    for m in example["models"]:
        status, body = send(port, {"route": "/models/{name}/predict", "name": m["name"], "version": "", "method": "POST", "pin": None,
                                   "ctype": "application/json", "body": json.dumps({"rows": m["input_example"]}).encode()})
        assert status == 200 and len(json.loads(body)["predictions"]) == len(m["input_example"]), (m["name"], status, body[:300])
