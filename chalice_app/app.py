"""nutrino_ml serving: the exported model versions behind a JSON API, as one Lambda function (Chalice).

Routes are adapters: parse the request, call nutrino_ml.serving, map its errors to HTTP.
Bundles live in chalicelib/models (written by `nutrino-ml export`); the runtime module comes from
vendor/nutrino_ml in the Lambda package and from the installed library under `chalice local`.
"""
import os

# Nothing phones home, whatever imports later.
for _k, _v in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "PLOOMBER_STATS_ENABLED": "false", "PLOOMBER_VERSION_CHECK_DISABLED": "1"}.items():
    os.environ.setdefault(_k, _v)

from pathlib import Path

from chalice import BadRequestError, Chalice, NotFoundError, Response

from nutrino_ml.serving import InputError, ModelNotFound, ModelUnavailable, ServedModels

app = Chalice(app_name="nutrino-serving")
models = ServedModels(Path(__file__).parent / "chalicelib" / "models")


def _answer(name, version=None):
    """Predict for the current request, mapping library errors to 4xx/503 JSON answers."""
    try:
        return models.predict(name, app.current_request.raw_body, version)
    except InputError as e:
        raise BadRequestError(str(e))
    except ModelNotFound as e:
        raise NotFoundError(str(e))
    except ModelUnavailable as e:
        return Response({"Code": "ServiceUnavailable", "Message": str(e)}, status_code=503)


@app.route("/ping")
def ping():
    return {"status": "ok", "versions": len(models.describe())}


@app.route("/models")
def list_models():
    return {"models": models.describe()}


@app.route("/models/{name}/predict", methods=["POST"])
def predict(name):
    return _answer(name)


@app.route("/models/{name}/versions/{version}/predict", methods=["POST"])
def predict_version(name, version):
    return _answer(name, version)
