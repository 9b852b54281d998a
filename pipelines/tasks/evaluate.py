# %% [markdown]
# # evaluate
# Score one model on the held-out (latest) share of its feature table.

# %% tags=["parameters"]
upstream = None
product = None
model_name = None
test_fraction = None
hyperparams = None
code_hash = None

# %%
import json
import pandas as pd
from nutrino_ml.offline import time_split
from nutrino_ml.models import model_spec, load_model, evaluate_model

spec = model_spec(model_name)
train, test = time_split(pd.read_parquet(upstream["features"][spec.feature_set]), test_fraction)
model = load_model(upstream[f"train-{model_name}"]["model"])
print(f"{model_name} on {len(test)} held-out rows from {test.ts.min()}, code {code_hash[:12]}")

# %%
metrics = evaluate_model(model, model_name, test, train)
with open(product["metrics"], "w") as f: json.dump(metrics, f, indent=1)
pd.Series(metrics, name=model_name).to_frame()
