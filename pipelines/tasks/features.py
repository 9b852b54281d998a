# %% [markdown]
# # features
# Build every feature set from the extracted tables, with the pandas runtime or the Spark runtime (`engine`);
# both run the same feature functions and write the same products.

# %% tags=["parameters"]
upstream = None
product = None
engine = "pandas"
code_hash = None

# %%
from nutrino_ml.config import load_settings
from nutrino_ml.runtime.features import FEATURE_SETS
from nutrino_ml.offline import build_feature_frames

print(f"features with the {engine} runtime, code {code_hash[:12]}")
frames = build_feature_frames({t: upstream["extract"][t] for t in ("users", "meals", "glucose")}, engine, load_settings())

# %%
for name, df in frames.items():
    df.to_parquet(product[name], index=False)
    print(f"{name} ({engine}): {len(df)} rows, {df[FEATURE_SETS[name].target].notna().sum()} with a target")
