# %% [markdown]
# # evaluate
# Score one model on the held-out (latest) share of its feature table, beside its naive baselines and the version
# in production on the same rows; the pictures are saved as PNG (the `figures` product, logged to MLflow by register).

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
from IPython.display import Image, display
from nutrino_ml.config import load_settings
from nutrino_ml.offline import time_split, training_rows
from nutrino_ml.models import model_spec, load_model
from nutrino_ml.evaluation import (score_held_out, held_out_metrics, comparison_table, production_predictions, save_figure,
                                   plot_predicted_vs_actual, plot_residuals_by, plot_user_curves)

spec = model_spec(model_name)
train, test = time_split(pd.read_parquet(upstream["features"][spec.feature_set]), test_fraction)
model = load_model(upstream[f"train-{model_name}"]["model"])
print(f"{model_name} (hyperparameters {hyperparams}) on {len(test)} held-out rows from {test.ts.min()}, code {code_hash[:12]}")

# %% [markdown]
# ## Metrics
# The model's, and each baseline's MAE on the same rows (`nutrino_ml.evaluation`); register refuses a model that
# does not beat its best baseline by `min_improvement` (pipelines/env.yaml).

# %%
scored = score_held_out(model, spec, test, train)
metrics = held_out_metrics(scored, len(training_rows(train, spec.fset)))
with open(product["metrics"], "w") as f: json.dump(metrics, f, indent=1)
pd.Series(metrics, name=model_name).to_frame()

# %% [markdown]
# ## Model, baselines and production on the same rows
# `model_better_by`: how much lower the model's MAE is than each predictor's (0.10 = 10% lower).

# %%
note, production = production_predictions(model_name, load_settings().mlflow_tracking_uri, scored[spec.inputs])
print(note)
if production is not None: scored["production"] = production
comparison_table(scored)

# %% [markdown]
# ## Pictures

# %%
# the glucose curves: the readings of the forecast feature table (about one in three, with their times)
readings = pd.read_parquet(upstream["features"]["glucose_forecast"], columns=["user_id", "ts", "glucose_mgdl"])
figures = {"predicted_vs_actual": plot_predicted_vs_actual(scored, model_name),
           "residuals_by_hour": plot_residuals_by(scored, model_name, "hour"),
           "residuals_by_user": plot_residuals_by(scored, model_name, "user_id"),
           "user_curves": plot_user_curves(scored, readings, model_name, spec.feature_set)}
for stem, fig in figures.items(): display(Image(filename=save_figure(fig, product["figures"], stem)))
