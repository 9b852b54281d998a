# %% [markdown]
# # extract
# Read every table of the datalake, checking every file of each partition (columns, types, ranges, duplicate
# events) and the events' times against the partition's day and the build's start (settings.ini's
# lake_max_lateness_days and lake_max_clock_skew_s). A bad partition stops the build here, before anything is
# trained or registered. Columns the tables do not have and events of unknown users are warned of (refused when
# strict_columns is true in env.yaml). The manifest lists the partitions read (rows, sha256) for the models' lineage.

# %% tags=["parameters"]
upstream = None
product = None
lake_state = None
strict_columns = None
code_hash = None

# %%
import json
from nutrino_ml.config import load_settings
from nutrino_ml.datalake import Lake, TABLES, TimeRules
from nutrino_ml.lineage import partition_manifest

settings = load_settings()
lake = Lake(settings.datalake_root, settings.s3_endpoint_url, settings.region)
print(f"profile {settings.profile}: reading {lake} (listing {lake_state[:12]}, code {code_hash[:12]})")

# %%
frames = lake.read_lake(list(TABLES), TimeRules.from_settings(settings), strict=strict_columns)
for table, df in frames.items():
    df.to_parquet(product[table], index=False)
    print(f"{table}: {df.dt.nunique()} partitions, {len(df)} rows")

# %%
with open(product["manifest"], "w") as f: json.dump(partition_manifest(lake, list(TABLES)), f, indent=1)
