# %% [markdown]
# # extract
# Read every table of the datalake, checking each partition (columns, types, ranges, duplicate events).
# A bad partition stops the build here, before anything is trained or registered. The manifest lists the partitions
# read (rows, sha256) for the models' lineage.

# %% tags=["parameters"]
upstream = None
product = None
lake_state = None
code_hash = None

# %%
import json
from nutrino_ml.config import load_settings
from nutrino_ml.datalake import Lake, TABLES
from nutrino_ml.lineage import partition_manifest

settings = load_settings()
lake = Lake(settings.datalake_root, settings.s3_endpoint_url, settings.region)
print(f"profile {settings.profile}: reading {lake} (listing {lake_state[:12]}, code {code_hash[:12]})")

# %%
for table in TABLES:
    df = lake.read_table(table)
    df.to_parquet(product[table], index=False)
    print(f"{table}: {df.dt.nunique()} partitions, {len(df)} rows")

# %%
with open(product["manifest"], "w") as f: json.dump(partition_manifest(lake, list(TABLES)), f, indent=1)
