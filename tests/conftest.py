"""Shared fixtures: a tiny synthetic lake, a whole pipeline build, an exported app, and local AWS-protocol servers.

Everything runs against real components started here (Ploomber, MLflow on SQLite or as a server, chalice,
a moto server on 127.0.0.1) and is stopped again; nothing leaves the machine. The helpers the fixtures and the
test files share are in helpers.py; every fixture puts back the environment it changes.
"""
import json, os, subprocess

import pytest

from helpers import AWS_TEST_CREDENTIALS, BIN, MODELS, TELEMETRY_OFF, build, copy_app, free_port, local_env, mlflow_tracking, run, \
    stop, wait_http

# telemetry off for the whole session, before any test module imports MLflow or Ploomber; undone when pytest ends
_TELEMETRY = pytest.MonkeyPatch()
for _k, _v in TELEMETRY_OFF.items():
    _TELEMETRY.setenv(_k, _v)


def pytest_unconfigure(config):
    _TELEMETRY.undo()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A tiny lake, one full `ploomber build`, both models promoted and exported into a copy of the app."""
    tmp = tmp_path_factory.mktemp("stack")
    env = local_env(tmp)
    copy_app(tmp / "app")
    run([BIN / "nutrino-ml", "datalake", "simulate", "--users", "5", "--days", "5", "--seed", "11"], env=env)
    out = build(env, tmp / "products").stdout
    for name in MODELS:
        run([BIN / "nutrino-ml", "models", "promote", name, "latest"], env=env)
    run([BIN / "nutrino-ml", "export"], env=env)
    return {"tmp": tmp, "env": env, "products": tmp / "products", "app": tmp / "app", "build_output": out,
            "registered": {m: json.loads((tmp / "products" / "registered" / f"{m}.json").read_text()) for m in MODELS}}


@pytest.fixture()
def built_tracking(built):
    """MLflow's tracking URI (and MLFLOW_TRACKING_URI) on `built`'s registry for one test; put back after it."""
    with mlflow_tracking(built["env"]["NUTRINO_MLFLOW_TRACKING_URI"]) as uri:
        yield uri


@pytest.fixture(scope="session")
def moto_process():
    """A moto server (S3, and the other AWS services) on 127.0.0.1 for the session; its URL."""
    port = free_port()
    proc = subprocess.Popen([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **AWS_TEST_CREDENTIALS},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, proc)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def moto_server(moto_process):
    """The moto server's URL, with its dummy credentials in the environment while the test module runs."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in AWS_TEST_CREDENTIALS.items():
            mp.setenv(k, v)
        yield moto_process


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A Spark standalone cluster on 127.0.0.1: a master and two workers (1 core, 1 GiB each) started with pyspark's own
    bin/spark-class, each in its own process group, killed with its executors at the end.

    The workers run without PYSPARK_PYTHON, with the system's `python3` first on their PATH (an executor started without
    the driver naming its Python runs another version), and with a decoy `nutrino_ml` on their PYTHONPATH that refuses
    to be imported: an executor that imports any nutrino_ml but the one the job shipped fails.
    Yields {"master": "spark://127.0.0.1:PORT", "ui": its web UI, "decoy": the decoy package, "logs": the daemons' logs}."""
    import signal, time, urllib.request
    from pathlib import Path
    import pyspark
    tmp = tmp_path_factory.mktemp("spark-cluster")
    decoy = tmp / "disk" / "nutrino_ml"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('a nutrino_ml on the worker\\'s disk was imported, not the shipped library')\n")
    home = Path(pyspark.__file__).parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH", "LOG4J_CONFIGURATION_FILE")}
    env.update(SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", PYTHONPATH=str(decoy.parent), PATH="/usr/bin:" + env.get("PATH", ""))
    port, ui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    daemons = [("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)])]
    daemons += [(f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                                 "--webui-port", str(free_port()), "--work-dir", str(tmp / f"work-{i}")]) for i in (1, 2)]
    procs = []
    try:
        for name, args in daemons:
            with open(tmp / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen([str(home / "bin" / "spark-class"), *args], cwd=tmp, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            if name == "master":
                wait_http(f"http://127.0.0.1:{ui}/json/", procs[0], timeout=120)
        deadline = time.time() + 120
        while json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5).read()).get("aliveworkers", 0) < 2:
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the Spark cluster did not get two workers within 120 s; logs in {tmp}")
            time.sleep(1)
        yield {"master": master, "ui": f"http://127.0.0.1:{ui}", "decoy": decoy, "logs": tmp}
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
