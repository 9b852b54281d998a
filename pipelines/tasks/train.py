# %% [markdown]
# # train
# Train one model (`model_name`) on the training share of its feature table. The executed notebook is the
# model's training report (HTML), logged with the run in MLflow.

# %% tags=["parameters"]
upstream = None
product = None
model_name = None
test_fraction = None
hyperparams = None
code_hash = None

# %%
import pandas as pd
from nutrino_ml.offline import time_split
from nutrino_ml.models import model_spec, train_model, save_model, describe_model

spec = model_spec(model_name)
train, test = time_split(pd.read_parquet(upstream["features"][spec.feature_set]), test_fraction)
print(f"{model_name} ({spec.kind}) on '{spec.feature_set}': {len(train)} training rows up to {train.ts.max()}, hyperparameters {hyperparams}, code {code_hash[:12]}")

# %%
model = train_model(model_name, train, hyperparams)
save_model(model, product["model"])

# %%
describe_model(model, model_name)
