# %% [markdown]
# # register
# Build the serving bundle (and prove it predicts as the model does), then log the run to MLflow and
# register the model as a new version, with its lineage (library and notebook hashes, the partitions extract read).

# %% tags=["parameters"]
upstream = None
product = None
model_name = None
test_fraction = None
hyperparams = None
parity_tolerance = None
engine = None
code_hash = None

# %%
import json
import pandas as pd
from nutrino_ml.config import load_settings
from nutrino_ml.offline import time_split
from nutrino_ml.models import model_spec, load_model
from nutrino_ml.bundle import build_bundle
from nutrino_ml.registry import log_and_register
from nutrino_ml.lineage import training_lineage

settings = load_settings()
spec = model_spec(model_name)
train, test = time_split(pd.read_parquet(upstream["features"][spec.feature_set]), test_fraction)
trained, evaluated = upstream[f"train-{model_name}"], upstream[f"evaluate-{model_name}"]
model = load_model(trained["model"])

# %%
bundle = build_bundle(model, model_name, test, product["bundle"], tolerance=parity_tolerance)
print(f"{bundle['format']} bundle, parity {bundle['parity']}")

# %%
with open(evaluated["metrics"]) as f: metrics = json.load(f)
with open(upstream["extract"]["manifest"]) as f: manifest = json.load(f)
registered = log_and_register(
    model_name, model, product["bundle"], test.head(5), settings.mlflow_tracking_uri, settings.experiment_name,
    settings.mlflow_artifact_location, params={"hyperparams": hyperparams, "test_fraction": test_fraction, "parity_tolerance": parity_tolerance, "engine": engine},
    metrics=metrics, reports=[trained["nb"], evaluated["nb"]],
    tags={"datalake_root": settings.datalake_root, "settings_profile": settings.profile}, lineage=training_lineage(manifest, code_hash))
with open(product["registered"], "w") as f: json.dump(registered, f)
print(f"registered {registered['name']} version {registered['version']} (run {registered['run_id']})")
