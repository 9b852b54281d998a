"""Log the exported bundle's model.onnx as an MLflow `onnx`-flavour model, so that `mlflow.pyfunc` serves the very
model our Lambda serves (the serving-layer comparison, like for like).

Started once per run by bench/serving/run.py as
    `python onnx_model.py BUNDLE_DIR STACK_TRACKING_URI SOURCE_MODEL ONNX_TRACKING_URI OUT`
  BUNDLE_DIR           the exported bundle (manifest.json + model.onnx) of version 1 of SOURCE_MODEL
  STACK_TRACKING_URI   the run's registry: the signature is copied from `models:/SOURCE_MODEL/1`, so that pyfunc
                       enforces the same input schema on both flavours
  ONNX_TRACKING_URI    a throwaway tracking store (in the benchmark's temp dir) to log and register it in
Registers `<SOURCE_MODEL>-onnx` version 1 there and writes {"model_uri", "tracking_uri", ...} as JSON to OUT.
The onnxruntime session options are ours (`OnnxPredictor`: one intra-op and one inter-op thread), so that the two
sides run the same model the same way and differ only in what is around it. `pip_requirements` is given (inferring
it imports and runs the model in a subprocess: slow, and nothing here needs it).
"""
import json, sys, time
from importlib.metadata import version
from pathlib import Path

t0 = time.perf_counter()
import mlflow  # noqa: E402
import mlflow.onnx  # noqa: E402
import onnx  # noqa: E402

bundle, stack_uri, source, onnx_uri, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
manifest = json.loads((bundle / "manifest.json").read_text())
if manifest.get("format") != "onnx":
    raise SystemExit(f"{bundle}: format {manifest.get('format')!r}, not an ONNX bundle; pass the bundle of an ONNX model")
model_file = bundle / manifest["model_file"]

mlflow.set_tracking_uri(stack_uri)
signature = mlflow.models.get_model_info(f"models:/{source}/1").signature

name = f"{source}-onnx"
mlflow.set_tracking_uri(onnx_uri)
mlflow.set_experiment("bench-serving-onnx")
t = time.perf_counter()
with mlflow.start_run(run_name=f"{source} v1 model.onnx, onnx flavour"):
    info = mlflow.onnx.log_model(onnx.load(str(model_file)), name="model", signature=signature, registered_model_name=name,
                                 pip_requirements=[f"onnx=={version('onnx')}", f"onnxruntime=={version('onnxruntime')}"],
                                 onnx_session_options={"intra_op_num_threads": 1, "inter_op_num_threads": 1},
                                 save_as_external_data=False)
log_s = time.perf_counter() - t
Path(out).write_text(json.dumps({"model_uri": f"models:/{name}/1", "tracking_uri": onnx_uri, "source_model": source,
                                 "logged_model_uri": info.model_uri, "model_file": str(model_file), "signature": str(signature),
                                 "log_model_s": log_s, "total_s": time.perf_counter() - t0}))
