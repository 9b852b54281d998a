"""Scheduled training with Airflow: the DAGs `nutrino_ml.schedule.airflow_dags` writes load in a real Airflow 3
without import errors, and one model's DAG trains and registers a new version on a tiny lake, and registers nothing more
when it runs again on the same code, parameters and partitions.

Airflow lives in its own virtualenv, as in production (never the project's .venv): it is installed once with
pip into ~/.cache/nutrino-ml/ and reused by later runs. The test is skipped only when that env is missing and
the package index cannot be reached. Airflow runs with a temporary AIRFLOW_HOME, SQLite metadata, no examples,
and without the project's NUTRINO_* variables: the settings reach the tasks through the generated DAG.
"""
import fcntl, hashlib, json, os, shutil, subprocess, time, urllib.error, urllib.request, warnings
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import BIN, ROOT, TELEMETRY_OFF, local_env, run
from nutrino_ml.datalake import Lake

# Pinned to a set verified to resolve with plain pip; Airflow's constraints file is on raw.githubusercontent.com,
# which CI may not reach. Changing a pin makes a new cached env.
AIRFLOW_PINS = ("apache-airflow==3.3.2", "apache-airflow-core==3.3.2", "apache-airflow-task-sdk==1.3.2",
                "apache-airflow-providers-standard==1.21.0", "apache-airflow-providers-common-compat==1.23.0",
                "apache-airflow-providers-common-io==1.11.0", "apache-airflow-providers-common-sql==2.4.0",
                "apache-airflow-providers-smtp==3.2.0", "sqlalchemy==2.1.9", "alembic==1.20.1",
                "fastapi==0.136.3", "pydantic==2.14.4")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nutrino-ml"
AIRFLOW_VENV = CACHE / f"airflow-3.3.2-py312-{hashlib.sha256(' '.join(AIRFLOW_PINS).encode()).hexdigest()[:8]}"
MODEL, OTHER = "glucose-forecast", "glucose-response"
DAG_IDS = {MODEL: "nutrino-train-glucose-forecast", OTHER: "nutrino-train-glucose-response"}
# run in Airflow's python: what Airflow makes of each DAG file (DeprecationWarnings are errors)
DESCRIBE = """
import json, runpy, sys
out = {}
for f in sys.argv[1:]:
    dag = runpy.run_path(f)["dag"]
    out[dag.dag_id] = {"schedule": dag.schedule, "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
                       "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
                       "retries": sorted({t.retries for t in dag.tasks})}
print(json.dumps(out))
"""


def index_reachable() -> bool:
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + "/apache-airflow/"
    try:
        urllib.request.urlopen(url, timeout=15)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def install_airflow() -> Path:
    """The bin/ of the cached Airflow virtualenv, created (Python 3.12, pinned pip install) when missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "airflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ((AIRFLOW_VENV / ".complete").exists() and (AIRFLOW_VENV / "bin" / "airflow").exists()):
            if not index_reachable():  # the only reason to skip
                pytest.skip(f"no cached Airflow env at {AIRFLOW_VENV} and the package index is unreachable: cannot install {AIRFLOW_PINS[0]}")
            shutil.rmtree(AIRFLOW_VENV, ignore_errors=True)
            python = run([ROOT / ".ci" / "find-python312"]).stdout.strip()
            started = time.time()
            run([python, "-m", "venv", AIRFLOW_VENV])
            run([AIRFLOW_VENV / "bin" / "python", "-m", "pip", "install", "-q", "--no-input", "--disable-pip-version-check",
                 *AIRFLOW_PINS], timeout=1200)
            (AIRFLOW_VENV / ".complete").write_text(f"{' '.join(AIRFLOW_PINS)}\ninstalled in {time.time() - started:.0f}s\n")
    return AIRFLOW_VENV / "bin"


def airflow_env(bin_: Path, home: Path, dags: Path) -> dict:
    """Airflow's own environment: no project variables, venv or python path; its home, dags and SQLite DB in `home`."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("NUTRINO_", "AIRFLOW")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    path = os.pathsep.join([str(bin_), *(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN)])
    return {**keep, **TELEMETRY_OFF, "PATH": path, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """Airflow with the generated DAGs and a migrated DB, a tiny lake, and `call(cmd, *args)` running a command of Airflow's env."""
    from nutrino_ml.schedule import airflow_dags  # imports ploomber: only when this module runs
    bin_ = install_airflow()
    tmp = tmp_path_factory.mktemp("airflow")
    env = local_env(tmp)
    run([BIN / "nutrino-ml", "datalake", "simulate", "--users", "5", "--days", "5", "--seed", "11"], env=env)
    files = airflow_dags(ROOT / "pipelines", tmp / "dags", products_dir=tmp / "products", env=env, schedule={"retries": 0})
    aenv = airflow_env(bin_, tmp / "airflow-home", tmp / "dags")

    def call(*args, check=True, timeout=900):
        p = subprocess.run([str(bin_ / args[0]), *map(str, args[1:])], cwd=tmp, env=aenv, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        if check and p.returncode:
            raise AssertionError(f"{args} exited {p.returncode}:\n{p.stdout[-8000:]}")
        return p

    call("airflow", "db", "migrate")
    return {"call": call, "env": env, "files": files, "tmp": tmp}


def json_tail(out: str):
    """The JSON list an airflow command printed on its last line that starts with '[' (log lines come first)."""
    return json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("[")))


def test_generated_dags_load_without_import_errors(airflow):
    call = airflow["call"]
    assert json_tail(call("airflow", "dags", "list-import-errors", "--local", "-o", "json").stdout) == []
    listed = json_tail(call("airflow", "dags", "list", "--local", "-o", "json", "--columns", "dag_id,fileloc").stdout)
    assert {d["dag_id"]: Path(d["fileloc"]).name for d in listed} == {
        DAG_IDS[MODEL]: "nutrino_train_glucose_forecast.py", DAG_IDS[OTHER]: "nutrino_train_glucose_response.py"}


def test_airflow_sees_the_pipelines_dependencies_and_the_schedule(airflow):
    from nutrino_ml.schedule import model_tasks, pipeline_graph, read_schedule, schedule_config
    seen = json.loads(airflow["call"]("python", "-W", "error::DeprecationWarning", "-c", DESCRIBE, *airflow["files"]).stdout.splitlines()[-1])
    graph, block = pipeline_graph(ROOT / "pipelines"), read_schedule(ROOT / "pipelines")
    for model, dag_id in DAG_IDS.items():
        assert seen[dag_id]["upstream"] == {t: sorted(up) for t, up in model_tasks(graph, model).items()}, dag_id
        assert seen[dag_id]["schedule"] == schedule_config(block, model)["schedule"], dag_id
        assert (seen[dag_id]["catchup"], seen[dag_id]["max_active_runs"], seen[dag_id]["retries"]) == (False, 1, [0]), dag_id


def test_dag_run_registers_a_version_a_rerun_with_nothing_changed_registers_none_and_a_new_partition_another(airflow):
    client = MlflowClient(airflow["env"]["NUTRINO_MLFLOW_TRACKING_URI"])
    registered = airflow["tmp"] / "products" / MODEL / "registered" / f"{MODEL}.json"

    def versions():
        return sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))

    airflow["call"]("airflow", "dags", "test", DAG_IDS[MODEL])
    assert versions() == [1]
    assert {m.name for m in client.search_registered_models()} == {MODEL}  # only this model's tasks ran
    first = json.loads(registered.read_text())
    assert (first["version"], first["reused"]) == (1, False)
    # the DAG again, nothing changed: every task is up to date, so nothing is built and nothing registered
    out = airflow["call"]("airflow", "dags", "test", DAG_IDS[MODEL]).stdout
    assert versions() == [1]
    assert f"register-{MODEL}: up to date" in out, out[-4000:]
    # the register task's product lost (as on a fresh worker): it runs again on the same code, parameters and
    # partitions, and names the version that holds the model instead of registering another
    registered.unlink()
    out = airflow["call"]("airflow", "tasks", "test", DAG_IDS[MODEL], f"register-{MODEL}").stdout
    assert versions() == [1]
    assert json.loads(registered.read_text()) == {**first, "reused": True}
    # a changed partition makes extract outdated, and everything after it: a model of other data, a new version
    lake = Lake(airflow["env"]["NUTRINO_DATALAKE_ROOT"])
    dt = lake.partitions("meals")[-1]
    lake.write_partition("meals", dt, lake.read_partition("meals", dt).iloc[:-1])
    airflow["call"]("airflow", "dags", "test", DAG_IDS[MODEL])
    assert versions() == [1, 2]
    again = json.loads(registered.read_text())
    assert (again["version"], again["reused"]) == (2, False) and again["run_id"] != first["run_id"]


def test_the_cli_writes_one_dag_per_model(tmp_path):
    r = subprocess.run([str(BIN / "nutrino-ml"), "schedule", "airflow", "--out", str(tmp_path), "--env", "NUTRINO_PROFILE=aws"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = sorted(tmp_path.glob("*.py"))
    assert [f.name for f in files] == ["nutrino_train_glucose_forecast.py", "nutrino_train_glucose_response.py"]
    for f in files:
        compile(f.read_text(), str(f), "exec")
        assert "'NUTRINO_PROFILE': 'aws'" in f.read_text(), f.name
    bad = subprocess.run([str(BIN / "nutrino-ml"), "schedule", "airflow", "--out", str(tmp_path), "--env", "NOEQUALS"], capture_output=True, text=True)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_env_yaml_holds_only_pipeline_parameters_so_ploomber_does_not_warn():
    # the schedule lives in pipelines/schedule.yaml: every key of env.yaml is a parameter some task uses, so loading the
    # pipeline (what `ploomber build`, `status` and `plot` do first) warns about no unused placeholder
    from nutrino_ml.schedule import pipeline_graph, read_env, read_schedule
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline_graph(ROOT / "pipelines")
    assert [str(w.message) for w in caught if "declared in the environment but unused" in str(w.message)] == []
    assert "schedule" not in read_env(ROOT / "pipelines") and read_schedule(ROOT / "pipelines")["schedule"] == "@daily"
