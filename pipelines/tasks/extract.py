# %% [markdown]
# # extract
# Read every table of the datalake, checking each partition (columns, types, ranges, duplicate events).
# A bad partition stops the build here, before anything is trained or registered.

# %% tags=["parameters"]
upstream = None
product = None

# %%
from nutrino_ml.config import load_settings
from nutrino_ml.datalake import Lake, TABLES

settings = load_settings()
lake = Lake(settings.datalake_root, settings.s3_endpoint_url, settings.region)
print(f"profile {settings.profile}: reading {lake}")

# %%
for table in TABLES:
    df = lake.read_table(table)
    df.to_parquet(product[table], index=False)
    print(f"{table}: {df.dt.nunique()} partitions, {len(df)} rows")
