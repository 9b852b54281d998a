"""Helpers shared by the test files: paths, the project's commands, servers started and stopped, app modules, and
context managers that put back the process state (environment, MLflow's tracking URI) that a block changes.

A plain module (not a conftest): test files import it as `from helpers import ...`; pytest fixtures live in conftest.py.
"""
import contextlib, importlib.util, os, shutil, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path

from nutrino_ml.local import free_port  # noqa: F401  re-exported for the tests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# set for the whole test session by conftest.py, and given to the processes that must not inherit the test environment
TELEMETRY_OFF = {"PLOOMBER_STATS_ENABLED": "false", "PLOOMBER_VERSION_CHECK_DISABLED": "1",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                 "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "SPARK_LOCAL_IP": "127.0.0.1"}
# moto's dummy credentials: never real ones
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}
MODELS = ("glucose-response", "glucose-forecast")
# every task of pipelines/pipeline.yaml
TASKS = {"extract", "features", *(f"{step}-{m}" for step in ("train", "evaluate", "register") for m in MODELS)}
JSON = {"Content-Type": "application/json"}


def wait_http(url, proc, timeout=60):
    """Wait until `url` answers (any HTTP status); fail early when `proc` exits."""
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


def build(env, products, *extra, check=True):
    """`ploomber build` of pipelines/ with its products in `products`."""
    return run([BIN / "ploomber", "build", "--env--products", products, *extra], env=env, cwd=ROOT / "pipelines", check=check)


def load_app_module(app_dir: Path):
    """Import `app_dir`/app.py as a fresh module (each app dir serves its own bundles); it is not put in sys.modules.

    Making the Chalice app appends to AWS_EXECUTION_ENV in os.environ (once per app): that is put back."""
    spec = importlib.util.spec_from_file_location(f"app_{abs(hash(str(app_dir)))}", app_dir / "app.py")
    mod = importlib.util.module_from_spec(spec)
    with process_state_restored():
        spec.loader.exec_module(mod)
    return mod


def load_app(app_dir: Path):
    """The Chalice app object of `app_dir`/app.py, freshly imported."""
    return load_app_module(app_dir).app


@contextlib.contextmanager
def process_state_restored():
    """os.environ and sys.path exactly as they were, again, when the block ends: for code that changes them itself.

    Chalice appends to AWS_EXECUTION_ENV, scikit-learn sets KMP_* variables when first imported, mlflow.set_tracking_uri
    sets MLFLOW_TRACKING_URI, mlflow.pyfunc.load_model puts the model's code folder first on sys.path, a SparkContext
    puts its files folder on sys.path and spark_session sets PYTHONWARNINGS and PYSPARK_PYTHON."""
    environ, path = dict(os.environ), list(sys.path)
    try:
        yield
    finally:
        for k in set(os.environ) - set(environ):
            del os.environ[k]
        for k, v in environ.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
        sys.path[:] = path  # MLflow rebinds sys.path to a new list: this sets the one in use


@contextlib.contextmanager
def mlflow_tracking(uri: str):
    """MLflow's global tracking URI is `uri` in the block, and what it was after it; os.environ and sys.path as well.

    mlflow.set_tracking_uri (called by the tests, and by nutrino_ml.registry / nutrino_ml.export) also writes
    MLFLOW_TRACKING_URI into os.environ for subprocesses, and loading a model changes sys.path: both are put back,
    so no later test or command inherits them."""
    import mlflow
    from mlflow.tracking._tracking_service import utils
    before = utils._tracking_uri  # None when nothing set it (get_tracking_uri() then gives MLflow's default)
    with process_state_restored():
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(before)
