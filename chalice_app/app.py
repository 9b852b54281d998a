"""nutrino_ml serving: the exported model versions behind one Lambda function (Chalice), and the Kinesis-triggered feature Lambda.

Routes are adapters, in the spirit of Chalice's samples: each reads the request, makes one call into
`nutrino_ml.runtime` and returns its answer. Reading a request in each protocol (native JSON, MLflow's scoring
protocol, the Open Inference Protocol v2), the error shapes and the status codes live in
`nutrino_ml.runtime.protocols`; routing, schema checks, scoring and the prediction log in `nutrino_ml.runtime.serving`.
The two native predict routes are also answered straight from the API Gateway event (`nutrino_ml.runtime.apigw`),
with what Chalice would answer, without building its Request and Response objects.

Bundles live in chalicelib/models (written by `nutrino-ml export`); the runtime comes from vendor/nutrino_ml in the
Lambda package and from the installed library under `chalice local`. Where the store, the stream and the dead letters
are comes from the settings (NUTRINO_* variables, set per stage in .chalice/config.json).
"""
import functools, os
from pathlib import Path

from nutrino_ml import __version__
from nutrino_ml.config import disable_telemetry, load_settings

disable_telemetry()  # nothing phones home, whatever imports later

from chalice import Chalice, IAMAuthorizer, Response  # noqa: E402
from nutrino_ml.runtime import oip, protocols  # noqa: E402
from nutrino_ml.runtime.apigw import FastPredict  # noqa: E402
from nutrino_ml.runtime.serving import ServedModels  # noqa: E402

SETTINGS = load_settings()
REGION = os.environ.get("AWS_REGION") or SETTINGS.region  # in Lambda: the function's own region


def open_online_store():
    from nutrino_ml.runtime.online import open_store  # on first use: serving without online features never imports it
    return open_store(SETTINGS.online_store, REGION, SETTINGS.aws_endpoint_url)


models = ServedModels(Path(__file__).parent / "chalicelib" / "models", store=open_online_store, require_index=True)
fast_predict = FastPredict(models)


class ServingApp(Chalice):
    """Chalice, with the native predict routes answered by `fast_predict` when it can (it returns None otherwise)."""
    def __call__(self, event, context):
        return fast_predict(event) or super().__call__(event, context)


app = ServingApp(app_name="nutrino-serving")

# Who may call the model routes is chosen per stage: .chalice/config.json sets API_AUTH, and Chalice sets a
# stage's environment before it imports this module to deploy or package it. `prod` requires an API key
# (clients send x-api-key; keys and usage plans live in API Gateway); `iam` requires SigV4-signed calls.
# Health routes (/ping, /v2/health/*) stay open for load balancers and probes.
AUTH_MODES = {"none": {}, "api_key": {"api_key_required": True}, "iam": {"authorizer": IAMAuthorizer()}}
if os.environ.get("API_AUTH", "none") not in AUTH_MODES:
    raise RuntimeError(f"API_AUTH={os.environ['API_AUTH']!r}: use one of {sorted(AUTH_MODES)} (set per stage in .chalice/config.json)")
AUTH = AUTH_MODES[os.environ.get("API_AUTH", "none")]


def _reply(r: protocols.Reply) -> Response:
    return Response(r.body, headers=r.headers, status_code=r.status)


def _request():
    """`(raw body, X-Model-Version pin, request id)` of the current request."""
    req = app.current_request
    return req.raw_body, req.headers.get("x-model-version"), (req.context or {}).get("requestId")


# --- native JSON API -------------------------------------------------------------------------------
@app.route("/ping")
def ping():
    return {"status": "ok", "versions": len(models.describe())}


@app.route("/models", **AUTH)
def list_models():
    return {"models": models.describe()}


@app.route("/models/{name}/predict", methods=["POST"], **AUTH)
def predict(name):
    body, pin, rid = _request()
    return _reply(protocols.native_predict(models, name, body, pin, rid))


@app.route("/models/{name}/versions/{version}/predict", methods=["POST"], **AUTH)
def predict_version(name, version):
    body, _, rid = _request()
    return _reply(protocols.native_predict(models, name, body, version, rid))


# --- MLflow scoring protocol (what `mlflow models serve` answers on /invocations) -------------------
MLFLOW_TYPES = ["application/json", "text/csv"]


@app.route("/models/{name}/invocations", methods=["POST"], content_types=MLFLOW_TYPES, **AUTH)
def invocations(name):
    body, pin, rid = _request()
    return _reply(protocols.mlflow_invocations(models, name, body, app.current_request.headers.get("content-type", ""), pin, rid))


@app.route("/models/{name}/versions/{version}/invocations", methods=["POST"], content_types=MLFLOW_TYPES, **AUTH)
def invocations_version(name, version):
    body, _, rid = _request()
    return _reply(protocols.mlflow_invocations(models, name, body, app.current_request.headers.get("content-type", ""), version, rid))


# --- Open Inference Protocol v2 (KServe, Triton, MLServer clients) -------------------------------------
@app.route("/v2")
def v2_server():
    return _reply(oip.oip_server(__version__))


@app.route("/v2/health/live")
def v2_live():
    return {"live": True}


@app.route("/v2/health/ready")
def v2_ready():
    return _reply(oip.oip_server_ready(models))


@app.route("/v2/models/{name}", **AUTH)
def v2_model(name):
    return _reply(oip.oip_model(models, name))


@app.route("/v2/models/{name}/versions/{version}", **AUTH)
def v2_model_version(name, version):
    return _reply(oip.oip_model(models, name, version))


@app.route("/v2/models/{name}/ready", **AUTH)
def v2_model_ready(name):
    return _reply(oip.oip_model_ready(models, name))


@app.route("/v2/models/{name}/versions/{version}/ready", **AUTH)
def v2_model_version_ready(name, version):
    return _reply(oip.oip_model_ready(models, name, version))


@app.route("/v2/models/{name}/infer", methods=["POST"], **AUTH)
def v2_infer(name):
    body, pin, rid = _request()
    return _reply(oip.oip_infer(models, name, body, pin, rid, app.current_request.headers.get("inference-header-content-length")))


@app.route("/v2/models/{name}/versions/{version}/infer", methods=["POST"], **AUTH)
def v2_infer_version(name, version):
    body, _, rid = _request()
    return _reply(oip.oip_infer(models, name, body, version, rid, app.current_request.headers.get("inference-header-content-length")))


# --- the Kinesis-triggered feature extraction --------------------------------------------------------
@functools.cache
def stream_processor():
    """The StreamProcessor of this container: online store, dead letters, attempts from the settings."""
    from nutrino_ml.runtime.stream import open_stream_processor
    return open_stream_processor(SETTINGS.online_store, SETTINGS.dead_letter, REGION, SETTINGS.aws_endpoint_url,
                                 SETTINGS.stream_max_attempts, SETTINGS.stream_max_clock_skew_s)


@app.on_kinesis_record(stream=SETTINGS.stream_name, batch_size=100, starting_position="TRIM_HORIZON")
def features_from_stream(event):
    """Raw events -> each affected user's features in the online store; bad records come back as batchItemFailures."""
    return stream_processor().process_event(event.to_dict())  # the raw records: one that is not base64 is dead-lettered, not fatal
