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
