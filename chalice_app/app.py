"""nutrino_ml serving: the exported model versions behind one Lambda function (Chalice).

Three ways in, one path through: the native JSON API, MLflow's scoring protocol and the Open Inference
Protocol v2 all end in nutrino_ml.serving.ServedModels, which checks each version's input schema, routes by the
model's traffic policy (weights, sticky key, pins, shadows), scores and logs one JSON line per prediction.
Routes are adapters: they pass the request in and map library errors to 4xx/503 answers in each protocol's shape.

Bundles live in chalicelib/models (written by `nutrino-ml export`); the runtime modules come from
vendor/nutrino_ml in the Lambda package and from the installed library under `chalice local`.
"""
import os

# Nothing phones home, whatever imports later.
for _k, _v in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "PLOOMBER_STATS_ENABLED": "false", "PLOOMBER_VERSION_CHECK_DISABLED": "1"}.items():
    os.environ.setdefault(_k, _v)

from pathlib import Path

from chalice import Chalice, IAMAuthorizer, Response

from nutrino_ml.protocols import mlflow_invoke, oip_infer, oip_metadata
from nutrino_ml.serving import (InputError, ModelNotFound, ModelUnavailable, PayloadTooLarge, ServedModels,
                                check_size)

app = Chalice(app_name="nutrino-serving")
models = ServedModels(Path(__file__).parent / "chalicelib" / "models")

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


def _error(status, message, shape):
    body = {"native": {"Code": CODES[status][0], "Message": message},
            "mlflow": {"error_code": CODES[status][1], "message": message}, "oip": {"error": message}}[shape]
    return Response(body, status_code=status)


def _guard(shape, call):
    """Run `call` on the current request; library errors become JSON answers in the protocol's shape."""
    try:
        check_size(app.current_request.raw_body)
        return call()
    except (InputError, ModelNotFound, ModelUnavailable) as e:
        return _error(next(code for cls, code in STATUS if isinstance(e, cls)), str(e), shape)


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
