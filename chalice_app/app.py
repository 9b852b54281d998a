"""nutrino_ml serving: the exported model versions behind one Lambda function (Chalice), and the Kinesis-triggered feature Lambda.

Three ways in, one path through: the native JSON API, MLflow's scoring protocol and the Open Inference
Protocol v2 all end in nutrino_ml.serving.ServedModels, which checks each version's input schema, routes by the
model's traffic policy (weights, sticky key, pins, shadows), scores and logs one JSON line per prediction.
Routes are adapters: they pass the request in and map library errors to 4xx/503 answers in each protocol's shape.

A request may also carry just an entity key (`{"user_id": "u17", "meal": {...}}`): the rest of the row comes from the
online feature store, which `features_from_stream` keeps current from the Kinesis stream of raw events.

Bundles live in chalicelib/models (written by `nutrino-ml export`); the runtime modules come from
vendor/nutrino_ml in the Lambda package and from the installed library under `chalice local`. Where the store, the
stream and the dead letters are comes from the settings (NUTRINO_* variables, set per stage in .chalice/config.json).
"""
import base64, os

# Nothing phones home, whatever imports later.
for _k, _v in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "PLOOMBER_STATS_ENABLED": "false", "PLOOMBER_VERSION_CHECK_DISABLED": "1"}.items():
    os.environ.setdefault(_k, _v)

from pathlib import Path

from chalice import Chalice, IAMAuthorizer, Response
from chalice.app import _matches_content_type

from nutrino_ml.config import load_settings
from nutrino_ml.protocols import mlflow_invoke, oip_infer, oip_metadata
from nutrino_ml.serving import (MAX_BODY_BYTES, InputError, ModelNotFound, ModelUnavailable, PayloadTooLarge, ServedModels,
                                answer_json, check_size, encode_json)

SETTINGS = load_settings()
REGION = os.environ.get("AWS_REGION") or SETTINGS.region  # in Lambda: the function's own region


def open_online_store():
    from nutrino_ml.online import open_store  # on first use: serving without online features never imports it
    return open_store(SETTINGS.online_store, REGION, SETTINGS.aws_endpoint_url)



class ServingApp(Chalice):
    """Chalice, with the two native predict routes answered straight from the Lambda event.

    For every request Chalice builds a Request, runs its middleware chain, a Response and header maps: about 60 µs,
    more than a one-row prediction costs. `POST /models/{name}/predict` and `.../versions/{version}/predict` are
    the hot path, so they skip that and call the same `models.predict` as the routes below, with the same answers:
    body, status, `X-Model-Version`, error shapes, the 413 size check and base64 bodies. Anything else, including
    a content type the route does not take (Chalice's 415), goes through Chalice. The routes stay declared below,
    so deployment (API Gateway, auth per stage) and `chalice local` see them as before.
    """
    def __call__(self, event, context):
        ctx = event.get("requestContext") if isinstance(event, dict) else None
        if ctx and ctx.get("resourcePath") in FAST_ROUTES and ctx.get("httpMethod") == "POST":
            answer = _fast_predict(event, ctx)
            if answer is not None: return answer
        return super().__call__(event, context)


app = ServingApp(app_name="nutrino-serving")
models = ServedModels(Path(__file__).parent / "chalicelib" / "models", store=open_online_store)
FAST_ROUTES = {"/models/{name}/predict", "/models/{name}/versions/{version}/predict"}

# Who may call the model routes is chosen per stage: .chalice/config.json sets API_AUTH, and Chalice sets a
# stage's environment before it imports this module to deploy or package it. `prod` requires an API key
# (clients send x-api-key; keys and usage plans live in API Gateway); `iam` requires SigV4-signed calls.
# Health routes (/ping, /v2/health/*) stay open for load balancers and probes.
AUTH_MODES = {"none": {}, "api_key": {"api_key_required": True}, "iam": {"authorizer": IAMAuthorizer()}}
if os.environ.get("API_AUTH", "none") not in AUTH_MODES:
    raise RuntimeError(f"API_AUTH={os.environ['API_AUTH']!r}: use one of {sorted(AUTH_MODES)} (set per stage in .chalice/config.json)")
AUTH = AUTH_MODES[os.environ.get("API_AUTH", "none")]

STATUS = [(PayloadTooLarge, 413), (InputError, 400), (ModelNotFound, 404), (ModelUnavailable, 503)]
CODES = {400: ("BadRequestError", "BAD_REQUEST"), 404: ("NotFoundError", "RESOURCE_DOES_NOT_EXIST"),
         413: ("PayloadTooLargeError", "BAD_REQUEST"), 503: ("ServiceUnavailable", "TEMPORARILY_UNAVAILABLE")}


def _error_body(status, message, shape):
    return {"native": {"Code": CODES[status][0], "Message": message},
            "mlflow": {"error_code": CODES[status][1], "message": message}, "oip": {"error": message}}[shape]


def _error(status, message, shape):
    return Response(_error_body(status, message, shape), status_code=status)


def _status(e):
    return next(code for cls, code in STATUS if isinstance(e, cls))


def _guard(shape, call):
    """Run `call` on the current request; library errors become JSON answers in the protocol's shape."""
    try:
        check_size(app.current_request.raw_body)
        return call()
    except (InputError, ModelNotFound, ModelUnavailable) as e:
        return _error(_status(e), str(e), shape)


def _fast_predict(event, ctx):
    """The native predict routes on the raw API Gateway event; None hands the request to Chalice."""
    content_type, pin = "application/json", None
    for k, v in (event.get("headers") or {}).items():  # the two headers we read, in any case (API Gateway passes ~15-20)
        if len(k) == 12 or len(k) == 15:  # len("content-type"), len("x-model-version"): skip the rest without lower()
            k = k.lower()
            if k == "content-type": content_type = v
            elif k == "x-model-version": pin = v
    if content_type != "application/json" and not _matches_content_type(content_type, ["application/json"]):
        return None
    params, body = event.get("pathParameters") or {}, event.get("body")
    try:
        if body is not None:  # the size limit counts bytes, as of Chalice's raw_body; a str under a quarter of it cannot be over
            if event.get("isBase64Encoded"): body = base64.b64decode(body)
            elif isinstance(body, str) and len(body) * 4 > MAX_BODY_BYTES: body = body.encode()
        check_size(body)
        answer = models.predict(params["name"], body, params.get("version") or pin, ctx.get("requestId"))
    except (InputError, ModelNotFound, ModelUnavailable) as e:
        return {"headers": {}, "multiValueHeaders": {}, "statusCode": _status(e), "body": encode_json(_error_body(_status(e), str(e), "native"))}
    except Exception:
        app.log.exception("Caught exception for predict")
        return {"headers": {}, "multiValueHeaders": {}, "statusCode": 500,
                "body": encode_json({"Code": "InternalServerError", "Message": "An internal server error occurred."})}
    return {"headers": {"X-Model-Version": str(answer["version"])}, "multiValueHeaders": {}, "statusCode": 200, "body": answer_json(answer)}


def _pin(version=None):
    return version or app.current_request.headers.get("x-model-version")


def _request_id():
    return (app.current_request.context or {}).get("requestId")


def _reply(answer, body=None):
    return Response(answer if body is None else body, headers={"X-Model-Version": str(answer["version"])})


# --- native JSON API -------------------------------------------------------------------------------
@app.route("/ping")
def ping():
    return {"status": "ok", "versions": len(models.describe())}


@app.route("/models", **AUTH)
def list_models():
    return {"models": models.describe()}


@app.route("/models/{name}/predict", methods=["POST"], **AUTH)
def predict(name):
    return _guard("native", lambda: _reply(models.predict(name, app.current_request.raw_body, _pin(), _request_id())))


@app.route("/models/{name}/versions/{version}/predict", methods=["POST"], **AUTH)
def predict_version(name, version):
    return _guard("native", lambda: _reply(models.predict(name, app.current_request.raw_body, version, _request_id())))


# --- MLflow scoring protocol (what `mlflow models serve` answers on /invocations) -------------------
def _invoke(name, version=None):
    req = app.current_request
    return _reply(*mlflow_invoke(models, name, req.raw_body, req.headers.get("content-type", ""), _pin(version), _request_id()))


@app.route("/models/{name}/invocations", methods=["POST"], content_types=["application/json", "text/csv"], **AUTH)
def invocations(name):
    return _guard("mlflow", lambda: _invoke(name))


@app.route("/models/{name}/versions/{version}/invocations", methods=["POST"], content_types=["application/json", "text/csv"], **AUTH)
def invocations_version(name, version):
    return _guard("mlflow", lambda: _invoke(name, version))


# --- Open Inference Protocol v2 (KServe, Triton, MLServer clients) -------------------------------------
@app.route("/v2/health/live")
def v2_live():
    return {"live": True}


@app.route("/v2/health/ready")
def v2_ready():
    problems = {k: v for k, v in models.ready().items() if v}
    return Response({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)


@app.route("/v2/models/{name}", **AUTH)
def v2_model(name):
    return _guard("oip", lambda: oip_metadata(name, models.versions(name)))


@app.route("/v2/models/{name}/versions/{version}", **AUTH)
def v2_model_version(name, version):
    return _guard("oip", lambda: oip_metadata(name, [models.resolve(name, version)]))


def _ready(name, version=None):
    problems = {k: v for k, v in models.ready(name, version).items() if v}
    return Response({"name": name, "ready": not problems, **({"error": "; ".join(problems.values())} if problems else {})},
                    status_code=503 if problems else 200)


@app.route("/v2/models/{name}/ready", **AUTH)
def v2_model_ready(name):
    return _guard("oip", lambda: _ready(name))


@app.route("/v2/models/{name}/versions/{version}/ready", **AUTH)
def v2_model_version_ready(name, version):
    return _guard("oip", lambda: _ready(name, version))


@app.route("/v2/models/{name}/infer", methods=["POST"], **AUTH)
def v2_infer(name):
    return _guard("oip", lambda: _reply(*oip_infer(models, name, app.current_request.raw_body, _pin(), _request_id())))


@app.route("/v2/models/{name}/versions/{version}/infer", methods=["POST"], **AUTH)
def v2_infer_version(name, version):
    return _guard("oip", lambda: _reply(*oip_infer(models, name, app.current_request.raw_body, version, _request_id())))


# --- the Kinesis-triggered feature extraction --------------------------------------------------------
_stream = []


def stream_processor():
    """The StreamProcessor of this container: online store, dead letters, attempts from the settings."""
    if not _stream:
        from nutrino_ml.online import open_dead_letter
        from nutrino_ml.stream import StreamProcessor
        _stream.append(StreamProcessor(open_online_store(), open_dead_letter(SETTINGS.dead_letter, REGION, SETTINGS.aws_endpoint_url),
                                       max_attempts=int(SETTINGS.stream_max_attempts)))
    return _stream[0]


@app.on_kinesis_record(stream=SETTINGS.stream_name, batch_size=100, starting_position="TRIM_HORIZON")
def features_from_stream(event):
    """Raw events -> each affected user's features in the online store; bad records come back as batchItemFailures."""
    return stream_processor().process([(r.sequence_number, r.data) for r in event])
