"""`ploomber build` re-runs exactly what a change touches: library code (per task, per model), the lake; and `ploomber plot` draws it.

The edits are made to a copy of pipelines/ and of the nutrino_ml package, put first on PYTHONPATH for Ploomber and the
task kernels it starts; the copy starts from the lake and the products the `built` fixture made, so it starts up to date.
The tests run in order, each leaving the copy built.
"""
import json, shutil

import pyarrow.parquet as pq
import pytest

from helpers import BIN, ROOT, TASKS, local_env, ran_tasks, run
from nutrino_ml.datalake import Lake


def model_tasks(model):
    return {f"{step}-{model}" for step in ("train", "evaluate", "register")}


@pytest.fixture(scope="module")
def project(built, tmp_path_factory):
    """A copy of pipelines/, the nutrino_ml package (first on PYTHONPATH), `built`'s lake and products, and its own MLflow."""
    tmp = tmp_path_factory.mktemp("rebuild")
    shutil.copytree(ROOT / "pipelines", tmp / "pipelines", ignore=shutil.ignore_patterns("products", "__pycache__", ".ipynb_checkpoints"))
    shutil.copytree(ROOT / "nutrino_ml", tmp / "nutrino_ml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(built["tmp"] / "lake", tmp / "lake")  # copy2 keeps modification times: the same lake state
    shutil.copytree(built["products"], tmp / "products")
    env = {**local_env(tmp), "PYTHONPATH": str(tmp), "NUTRINO_SETTINGS": str(ROOT / "settings.ini")}
    return {"tmp": tmp, "env": env, "products": tmp / "products"}


def ploomber(project, *args, check=True):
    return run([BIN / "ploomber", *args, "--env--products", project["products"]], env={**project["env"], "COLUMNS": "400"},
               cwd=project["tmp"] / "pipelines", check=check)


def outdated(status_output):
    """Tasks that `ploomber status` does not call up to date (anything but False in its Outdated? column)."""
    rows = [line.split() for line in status_output.splitlines() if line.split() and line.split()[0] in TASKS]
    assert {r[0] for r in rows} == TASKS, status_output
    return {r[0] for r in rows if "False" not in r}


def edit(path, old, new):
    src = path.read_text()
    assert src.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(src.replace(old, new))


def test_nothing_changed_runs_nothing(project):
    out = ploomber(project, "build").stdout
    assert ran_tasks(out) == set(), out[-3000:]
    assert outdated(ploomber(project, "status").stdout) == set()


def test_editing_one_model_reruns_only_that_models_tasks(project):
    # the default is not what the pipeline passes (env.yaml's forecast_shrinkage), so results stay the same
    edit(project["tmp"] / "nutrino_ml" / "models.py", "shrinkage:float=20.0):", "shrinkage:float=25.0):")
    assert outdated(ploomber(project, "status").stdout) == model_tasks("glucose-forecast")
    out = ploomber(project, "build").stdout
    assert ran_tasks(out) == model_tasks("glucose-forecast"), out[-3000:]


def test_editing_a_feature_function_reruns_features_and_both_models(project):
    # whole hours only: a change the features product shows, so it also proves the task kernels imported the copy
    edit(project["tmp"] / "nutrino_ml" / "runtime" / "features.py", "return m // 60 + (m % 60) / 60", "return (m // 60).astype(float)")
    out = ploomber(project, "build").stdout
    assert ran_tasks(out) == TASKS - {"extract"}, out[-3000:]
    hours = pq.read_table(project["products"] / "features" / "meal_response.parquet").to_pandas().hour
    assert (hours % 1 == 0).all() and hours.nunique() > 1


def test_a_changed_partition_reruns_extract_and_everything_after_it(project):
    lake = Lake(str(project["tmp"] / "lake"))
    meals = lake.read_partition("meals", "2026-01-05")
    lake.write_partition("meals", "2026-01-05", meals.iloc[:-1])
    out = ploomber(project, "build").stdout
    assert ran_tasks(out) == TASKS, out[-3000:]
    manifest = json.loads((project["products"] / "extract" / "partitions.json").read_text())
    assert {(p["table"], p["dt"]): p["rows"] for p in manifest["partitions"]}[("meals", "2026-01-05")] == len(meals) - 1


def test_plot_draws_the_pipeline(built, tmp_path):
    out = tmp_path / "pipeline.html"
    run([BIN / "ploomber", "plot", "--output", out, "--env--products", built["products"]], env=built["env"], cwd=ROOT / "pipelines")
    html = out.read_text()
    for t in TASKS:
        assert f'"{t}"' in html, t
