"""The everyday commands say what matters and nothing else: a `ploomber build` of the test lake, a build with nothing to
do, `ploomber status` and `ploomber plot` show no warning the project causes, with every warning shown (`-W default`,
not the Makefile's filters); a build ends with the versions it registered, a failed one with why; the status fits 100
columns and the pipeline's picture loads nothing from anywhere.

The build runs the real pipelines/ on a copy of the `built` fixture's lake, with its own products and MLflow."""
import html, json, os, re, resource, shutil, time

import pytest

from helpers import BIN, ROOT, TASKS, local_env, ran_tasks, run

# `path:line: Category: message`, as Python prints a warning
WARNING = re.compile(r"^(?P<path>\S+?\.py):(?P<line>\d+): (?P<category>\w+):", re.M)
# Third-party warnings these commands show under -W default. Each is harmless, and hidden by Python's default filters
# (DeprecationWarnings outside __main__); the one that is not (networkx's FutureWarning in `ploomber plot`) is ignored by
# pipeline.yaml's on_render hook (nutrino_ml.pipeline.KNOWN_HARMLESS). Anything else, ours or new, fails the tests.
KNOWN = {
    ("ploomber_cli/cli.py", "DeprecationWarning"),  # ploomber-cli reads click.__version__, deprecated in click 8.2
    ("ploomber/util/dotted_path.py", "PydanticDeprecatedSince20"),  # a ploomber pydantic model with a class-based config
    ("jupyter_client/session.py", "DeprecationWarning"),  # jupyter_client stamps kernel messages with datetime.utcnow()
    ("ploomber/dag/plot.py", "DeprecationWarning"),  # ploomber plot reads its d3 template with importlib.resources.read_text
    ("importlib/resources/_legacy.py", "DeprecationWarning"),  # ... which calls open_text
    ("mlflow/store/tracking/sqlalchemy_store.py", "SADeprecationWarning"),  # MLflow's SQL store uses sqlalchemy's noload
}


def warnings_in(output):
    """`(path, category)` of every warning in a command's output."""
    return [(m["path"], m["category"]) for m in WARNING.finditer(output)]


def unexplained(output):
    """Warnings in `output` that are not known third-party ones: the project's own, or new."""
    return [w for w in warnings_in(output) if not any(w[0].endswith(f"/{path}") and w[1] == cat for path, cat in KNOWN)]


def ploomber(env, products, *args, check=True):
    """A `ploomber` command on pipelines/ with every warning shown and output in the order written; `(result, CPU s, wall s)`."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = run([BIN / "ploomber", *args, "--env--products", products], cwd=ROOT / "pipelines", check=check,
              env={**env, "PYTHONWARNINGS": "default", "PYTHONUNBUFFERED": "1", "COLUMNS": "100"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, time.perf_counter() - t0


@pytest.fixture(scope="module")
def quiet(built, tmp_path_factory):
    """A full `ploomber build` (every task) of a copy of `built`'s lake, with every warning shown, into its own MLflow."""
    tmp = tmp_path_factory.mktemp("quiet")
    shutil.copytree(built["tmp"] / "lake", tmp / "lake")
    env = local_env(tmp)
    out, cpu, wall = ploomber(env, tmp / "products", "build")
    return {"tmp": tmp, "env": env, "products": tmp / "products", "output": out.stdout}


def test_a_build_of_the_test_lake_shows_no_warning_the_project_causes(quiet):
    assert ran_tasks(quiet["output"]) == TASKS, quiet["output"][-3000:]
    assert unexplained(quiet["output"]) == [], quiet["output"][-6000:]
    assert "DAG render with warnings" not in quiet["output"] and "DAG build with warnings" not in quiet["output"]


def report_text(f):
    """The text of an executed notebook's outputs, or of an HTML report without its tags."""
    if f.suffix == ".ipynb":
        return "\n".join("".join(o.get("text", "")) for c in json.loads(f.read_text())["cells"] for o in c.get("outputs", []))
    return html.unescape(re.sub(r"<[^>]+>", "", f.read_text()))


def test_the_reports_show_no_warning_from_the_project(quiet):
    """The executed notebooks (and the HTML reports logged to MLflow) hold no warning raised in nutrino_ml or a task's cells."""
    ours = ("/nutrino_ml/", str(ROOT / "pipelines"), "/ipykernel_")  # the library, the task scripts, a notebook cell
    reports = [*quiet["products"].glob("*.ipynb"), *(quiet["products"] / "reports").glob("*.html")]
    found = {f.name: warnings_in(report_text(f)) for f in reports}
    assert len(found) == len(TASKS) and any(found.values()), "no warning at all, not even -W default's third-party ones: is the scan broken?"
    assert {f: [w for w in ws if any(o in w[0] for o in ours)] for f, ws in found.items()} == {f: [] for f in found}


def test_a_build_ends_with_the_versions_it_registered(quiet):
    lines = quiet["output"].splitlines()
    table = lines.index(next(l for l in lines if l.startswith("name ") and "Ran?" in l))
    ours = lines[table - 5:table]  # printed by the on_finish hook, just before Ploomber's table of the tasks
    assert ours[0] == f"MLflow: {quiet['env']['NUTRINO_MLFLOW_TRACKING_URI']}", ours
    for model, line in zip(("glucose-response", "glucose-forecast"), ours[1:3]):
        assert re.fullmatch(rf"{model}: registered version 1; held-out MAE \d+\.\d\d; no version in production yet", line), line
    assert ours[3:] == [f"to serve it: nutrino-ml models promote {m} 1" for m in ("glucose-response", "glucose-forecast")], ours


def test_a_build_with_nothing_to_do_status_and_plot_are_quiet(quiet):
    for args in (["build"], ["status"], ["plot", "--output", quiet["tmp"] / "pipeline.html"]):
        out, cpu, wall = ploomber(quiet["env"], quiet["products"], *args)
        print(f"ploomber {args[0]}: {cpu:.1f} s CPU, {wall:.1f} s wall, load {os.getloadavg()[0]:.1f}")
        assert unexplained(out.stdout) == [], f"ploomber {args[0]}:\n{out.stdout[-4000:]}"
        assert cpu < 10, f"ploomber {args[0]} took {cpu:.1f} s of CPU (about 4 s expected)"
        if args == ["build"]:
            assert ran_tasks(out.stdout) == set() and \
                "nothing ran: every task is up to date (glucose-response version 1, glucose-forecast version 1)" in out.stdout, out.stdout


def test_a_failed_build_ends_with_why(quiet, tmp_path):
    env = {**local_env(tmp_path), "NUTRINO_DATALAKE_ROOT": str(tmp_path / "empty")}
    out, _, _ = ploomber(env, tmp_path / "products", "build", check=False)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 1 and lines[-1] == (f"extract failed: DatalakeError: {tmp_path / 'empty'}/users: no partitions; "
                                                 "did the lake get written (nutrino-ml datalake simulate)?"), out.stdout[-3000:]
    assert lines[-2] == f"extract: executed up to the failing cell in {tmp_path / 'products' / 'extract.ipynb'}", lines[-3:]
    assert any(l.startswith("build failed: extract; not run: features, ") for l in lines[-6:-2]), lines[-6:]
    bar = [l for l in out.stdout.splitlines() if "Failed: extract" in l]
    assert bar and "1/8" in bar[-1] and "100%" not in bar[-1], bar  # the progress bar stops at the task that failed
    assert unexplained(out.stdout) == [], out.stdout[-4000:]


def test_status_fits_100_columns_and_says_why(quiet, monkeypatch):
    from nutrino_ml.pipeline import format_status, pipeline_dag, pipeline_status
    for k, v in quiet["env"].items():
        monkeypatch.setenv(k, v)
    rows = pipeline_status(pipeline_dag(ROOT / "pipelines", quiet["products"]))
    assert {r["task"] for r in rows} == TASKS and all(r["reasons"] == [] for r in rows), rows
    part = next((quiet["tmp"] / "lake" / "meals").glob("dt=*/*.parquet"))
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the lake's listing changes: extract and all after it
    try:
        rows = {r["task"]: r["reasons"] for r in pipeline_status(pipeline_dag(ROOT / "pipelines", quiet["products"]))}
    finally:
        os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert rows["extract"] == ["the lake's files changed"] and rows["features"] == ["extract runs first"], rows
    assert rows["register-glucose-forecast"] == ["extract, features, train-glucose-forecast, evaluate-glucose-forecast run first"], rows
    table = format_status([{"task": t, "last_run": None, "reasons": r} for t, r in rows.items()], 100)
    assert max(map(len, table.splitlines())) <= 100 and table.splitlines()[-1].startswith("8 of 8 tasks outdated"), table


def test_the_pipeline_picture_loads_nothing(quiet, monkeypatch):
    from nutrino_ml.pipeline import pipeline_dag, plot_pipeline
    for k, v in quiet["env"].items():
        monkeypatch.setenv(k, v)
    page = plot_pipeline(pipeline_dag(ROOT / "pipelines", quiet["products"]), quiet["tmp"] / "offline.html").read_text()
    assert all(f">{t}</text>" in page and f"<title>{t}: up to date</title>" in page for t in TASKS), page[:2000]
    assert "<script" not in page and "://" not in page and "<link" not in page
