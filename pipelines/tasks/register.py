# %% [markdown]
# # register
# First the quality gate: a model whose held-out MAE is not `min_improvement` below its best baseline's (env.yaml;
# null: no gate) is not registered, and the build fails. Then build the serving bundle (and prove it predicts as
# the model does), log the run to MLflow (with the evaluation's reports and pictures) and register the model as a
# new version, with its lineage (library and notebook hashes, the partitions extract read). A model with the
# training identity (code, training parameters, partitions) of a registered version is not registered again: the
# task names that version.

# %% tags=["parameters"]
upstream = None
product = None
model_name = None
test_fraction = None
hyperparams = None
parity_tolerance = None
min_improvement = None
engine = None
code_hash = None

# %%
import json
from pathlib import Path
import pandas as pd
from nutrino_ml.config import load_settings
from nutrino_ml.offline import time_split
from nutrino_ml.models import model_spec, load_model
from nutrino_ml.evaluation import check_improvement
from nutrino_ml.bundle import build_bundle
from nutrino_ml.registry import log_and_register, format_registration
from nutrino_ml.lineage import training_lineage, training_identity

trained, evaluated = upstream[f"train-{model_name}"], upstream[f"evaluate-{model_name}"]
with open(evaluated["metrics"]) as f: metrics = json.load(f)
print(check_improvement(model_name, metrics, min_improvement))

# %%
settings = load_settings()
spec = model_spec(model_name)
train, test = time_split(pd.read_parquet(upstream["features"][spec.feature_set]), test_fraction)
model = load_model(trained["model"])

# %%
bundle = build_bundle(model, model_name, test, product["bundle"], tolerance=parity_tolerance)
print(f"{bundle['format']} bundle, parity {bundle['parity']}")

# %%
with open(upstream["extract"]["manifest"]) as f: manifest = json.load(f)
params = {"hyperparams": hyperparams, "test_fraction": test_fraction, "parity_tolerance": parity_tolerance, "min_improvement": min_improvement, "engine": engine}
lineage = training_lineage(manifest, code_hash)
registered = log_and_register(
    model_name, model, product["bundle"], test.head(5), settings.mlflow_tracking_uri, settings.experiment_name,
    settings.mlflow_artifact_location, params=params,
    metrics=metrics, reports=[trained["nb"], evaluated["nb"]], figures=sorted(Path(evaluated["figures"]).glob("*.png")),
    tags={"datalake_root": settings.datalake_root, "settings_profile": settings.profile}, lineage=lineage,
    identity=training_identity(model_name, lineage, params), source="pipelines/tasks/register.py")
with open(product["registered"], "w") as f: json.dump(registered, f)
print(format_registration(registered))
