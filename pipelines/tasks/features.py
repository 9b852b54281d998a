# %% [markdown]
# # features
# Build every feature set from the extracted tables with the pandas runtime.

# %% tags=["parameters"]
upstream = None
product = None

# %%
import pandas as pd
from nutrino_ml.features import FEATURE_SETS, build_features

tables = {t: pd.read_parquet(upstream["extract"][t]) for t in ("users", "meals", "glucose")}

# %%
for name, fset in FEATURE_SETS.items():
    df = build_features(fset, tables)
    df.to_parquet(product[name], index=False)
    print(f"{name}: {len(df)} rows, {df[fset.target].notna().sum()} with a target")
