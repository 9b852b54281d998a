"""Lineage of the versions the pipeline registers, that training again at the same commit on the same partitions reproduces them,
and that building again on the same code and lake registers no second identical version."""
import hashlib, json, subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient

from helpers import MODELS, ROOT, TASKS, build, local_env, ran_tasks
from nutrino_ml.datalake import Lake
from nutrino_ml.lineage import format_lineage, library_lineage, lineage


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_lineage_names_run_git_code_params_and_partitions(built):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    manifest = json.loads((built["products"] / "extract" / "partitions.json").read_text())
    lake = Lake(built["env"]["NUTRINO_DATALAKE_ROOT"])
    for name, reg in built["registered"].items():
        d = lineage(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"], name, "production")
        assert (d["version"], d["run_id"], d["aliases"]) == (reg["version"], reg["run_id"], ["production"]), name
        assert {"mae", "rmse", "r2", "baseline_mae"} <= set(d["metrics"]), name
        assert d["git"]["commit"] == head and d["git"]["dirty"] in (True, False), name
        assert d["library"] == library_lineage()["sha256"], name
        notebooks = {n["notebook"]: n["notebook_sha256"] for n in d["notebooks"]}
        for nb in ("nbs/01_datalake.ipynb", "nbs/runtime/05_features.ipynb", "nbs/05_models.ipynb"):
            assert notebooks[nb] == sha256(ROOT / nb), (name, nb)
        assert {"test_fraction", "parity_tolerance", "engine"} <= set(d["params"]) and any(k.startswith("hyperparams.") for k in d["params"]), name
        assert d["datalake_root"] == lake.root and d["partitions"] == manifest["partitions"], name
        assert {(p["table"], p["dt"]) for p in d["partitions"]} == {(t, dt) for t in ("users", "meals", "glucose") for dt in lake.partitions(t)}, name
    for p in d["partitions"]:
        where = f"{p['table']}/dt={p['dt']}"
        assert p["sha256"] == sha256(Path(lake.root) / p["table"] / f"dt={p['dt']}" / "part-0.parquet"), where
        assert p["rows"] == len(lake.read_partition(p["table"], p["dt"])), where


def test_format_lineage_prints_every_part(built):
    d = lineage(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"], "glucose-response", 1)
    text = format_lineage(d)
    rows = [line.split() for line in text.splitlines()]
    assert text.startswith("glucose-response version 1 (production)\n")
    assert ["run", d["run_id"]] in rows and ["library", d["library"]] in rows and d["git"]["commit"] in text
    assert ["mae", f"{d['metrics']['mae']:.6g}"] in rows and ["hyperparams.n_estimators", "200"] in rows and ["engine", "pandas"] in rows
    assert ["nbs/runtime/05_features.ipynb", sha256(ROOT / "nbs" / "runtime" / "05_features.ipynb")] in rows
    assert f"partitions of {d['datalake_root']} ({len(d['partitions'])}, {sum(p['rows'] for p in d['partitions'])} rows):" in text
    for p in d["partitions"]:
        assert [p["table"], p["dt"], str(p["rows"]), p["sha256"]] in rows, f"{p['table']}/dt={p['dt']}"


def test_training_again_on_the_same_partitions_reproduces_the_version(built, tmp_path):
    """A second build from a clean products folder on the same lake (its own MLflow) logs the same metrics and lineage."""
    env = {**local_env(tmp_path), "NUTRINO_DATALAKE_ROOT": built["env"]["NUTRINO_DATALAKE_ROOT"]}
    assert ran_tasks(build(env, tmp_path / "products").stdout) == TASKS
    for name in MODELS:
        first = lineage(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"], name, 1)
        again = lineage(env["NUTRINO_MLFLOW_TRACKING_URI"], name, 1)
        assert again["run_id"] != first["run_id"] and again["metrics"] == first["metrics"], name
        for part in ("partitions", "datalake_root", "library", "notebooks", "code_hash", "params", "git"):
            assert again[part] == first[part], (name, part)
    state = "models/glucose-forecast.json"
    assert (tmp_path / "products" / state).read_bytes() == (built["products"] / state).read_bytes()


def printed(notebook):
    """What the cells of an executed notebook printed."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


def test_two_builds_on_the_same_code_and_lake_register_one_version(built, tmp_path):
    """A build into a fresh products folder (Ploomber runs every task again) on `built`'s lake and registry registers nothing:
    the register tasks name the versions that already hold the models."""
    client = MlflowClient(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"])
    before = {name: len(client.search_model_versions(f"name='{name}'")) for name in MODELS}
    assert ran_tasks(build(built["env"], tmp_path / "products").stdout) == TASKS
    for name, first in built["registered"].items():
        assert len(client.search_model_versions(f"name='{name}'")) == before[name], name
        assert json.loads((tmp_path / "products" / "registered" / f"{name}.json").read_text()) == {**first, "reused": True}, name
        said = printed(tmp_path / "products" / f"register-{name}.ipynb")
        assert f"{name}: version {first['version']} already holds this model (same code, parameters and data); not registering another" in said, name
        assert f"registered {name} version" not in said, name
