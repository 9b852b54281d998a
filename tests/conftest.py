"""Shared fixtures: a tiny synthetic lake, a whole pipeline build, an exported app, and local AWS-protocol servers.

Everything runs against real components started here (Ploomber, MLflow on SQLite or as a server, chalice,
a moto server on 127.0.0.1) and is stopped again; nothing leaves the machine.
"""
import importlib.util, json, os, shutil, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TELEMETRY_OFF = {"PLOOMBER_STATS_ENABLED": "false", "PLOOMBER_VERSION_CHECK_DISABLED": "1",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                 "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "SPARK_LOCAL_IP": "127.0.0.1"}
os.environ.update(TELEMETRY_OFF)

from nutrino_ml.local import free_port  # noqa: E402,F401  re-exported for the tests
MODELS = ("glucose-response", "glucose-forecast")


def wait_http(url, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing answered on {url} within {timeout}s")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def run(args, env=None, cwd=ROOT, check=True, timeout=600):
    """Run a command of the project's environment; returns the CompletedProcess (stdout+stderr merged)."""
    p = subprocess.run([str(a) for a in args], cwd=cwd, env={**os.environ, **(env or {})}, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"{args} exited {p.returncode}:\n{p.stdout[-6000:]}")
    return p


def ran_tasks(build_output):
    """Names of the tasks the summary table of `ploomber build` marks as run."""
    return {l.split()[0] for l in build_output.splitlines() if len(l.split()) >= 2 and l.split()[1] == "True"}


def local_env(tmp: Path) -> dict:
    """NUTRINO_* overrides that put the lake, MLflow, bundles and the app in `tmp`."""
    return {"NUTRINO_PROFILE": "test", "NUTRINO_DATALAKE_ROOT": str(tmp / "lake"),
            "NUTRINO_MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow/mlflow.db",
            "NUTRINO_MLFLOW_ARTIFACT_LOCATION": str(tmp / "mlflow" / "artifacts"),
            "NUTRINO_APP_DIR": str(tmp / "app"), "NUTRINO_BUNDLE_DIR": str(tmp / "app" / "chalicelib" / "models"),
            "NUTRINO_ONLINE_STORE": f"sqlite:///{tmp}/online_store.db", "NUTRINO_DEAD_LETTER": f"sqlite:///{tmp}/online_store.db"}


def copy_app(dst: Path) -> Path:
    """A copy of chalice_app/ without exported bundles or vendored runtime."""
    shutil.copytree(ROOT / "chalice_app", dst, ignore=shutil.ignore_patterns(
        "models", "vendor", "deployments", "__pycache__", "packaged"))
    return dst


def load_app_module(app_dir: Path):
    """Import `app_dir`/app.py as a fresh module (each app dir serves its own bundles)."""
    spec = importlib.util.spec_from_file_location(f"app_{abs(hash(str(app_dir)))}", app_dir / "app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(env, products, *extra, check=True):
    return run([BIN / "ploomber", "build", "--env--products", products, *extra], env=env, cwd=ROOT / "pipelines", check=check)


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


@pytest.fixture(scope="session")
def moto_server():
    """A moto server (S3, and the other AWS services) on 127.0.0.1, with dummy credentials in the environment."""
    port = free_port()
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1",
             "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(creds)
    proc = subprocess.Popen([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, proc)
        yield url
    finally:
        stop(proc)
