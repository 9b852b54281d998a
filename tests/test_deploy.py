"""`nutrino-ml deploy OUT` on what `nutrino-ml package` really writes: `--dry-run` prints the CloudFormation commands of the
push-to-main workflow and runs none; without it they run in order, each only after the one before succeeded. A real
deploy needs AWS, so here a stand-in `aws` executable on PATH records what it is called with (and fails when told)."""
import json, os, shlex, subprocess, sys

import pytest

from helpers import BIN, ROOT, copy_app, run

STACK, BUCKET = "nutrino-serving-prod", "nutrino-artifacts"
STAND_IN = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["AWS_CALLS"], "a") as f: f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(255 if sys.argv[2:3] == [os.environ.get("AWS_FAIL", "")] else 0)
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """`nutrino-ml package` of the app for prod, offline from the wheelhouse (no exported models: not needed to deploy)."""
    wheels = ROOT / ".wheelhouse"
    if not any(wheels.glob("onnxruntime-*.whl")):
        pytest.fail(f"{wheels} has no Lambda wheels: run `make venv` (it downloads them once, so packaging needs no index)")
    tmp = tmp_path_factory.mktemp("deploy")
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "NUTRINO_APP_DIR": str(copy_app(tmp / "app"))}
    run([BIN / "nutrino-ml", "package", tmp / "out", "--stage", "prod", "--no-bytecode"], env=env)
    return tmp / "out"


@pytest.fixture()
def aws(tmp_path):
    """A stand-in `aws` first on PATH; `calls()` is what it was called with, in order."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "aws").write_text(STAND_IN)
    (tmp_path / "bin" / "aws").chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "AWS_CALLS": str(calls), "NUTRINO_PROFILE": "test"}
    return {"env": env, "calls": lambda: [json.loads(l) for l in calls.read_text().splitlines()] if calls.exists() else []}


def deploy(out, aws, *args, fail=""):
    return subprocess.run([BIN / "nutrino-ml", "deploy", out, "--stack-name", STACK, "--bucket", BUCKET, *args],
                          capture_output=True, text=True, env={**aws["env"], "AWS_FAIL": fail}, timeout=120)


def expected(out) -> list:
    "The commands a deploy of `out` runs, as the README and the workflow say."
    return [["aws", "cloudformation", "package", "--template-file", f"{out}/sam.json", "--s3-bucket", BUCKET, "--s3-prefix", STACK,
             "--output-template-file", f"{out}/packaged.yaml", "--region", "eu-west-1"],
            ["aws", "cloudformation", "deploy", "--template-file", f"{out}/packaged.yaml", "--stack-name", STACK,
             "--capabilities", "CAPABILITY_IAM", "--no-fail-on-empty-changeset", "--region", "eu-west-1"],
            ["aws", "cloudformation", "describe-stacks", "--stack-name", STACK, "--query", "Stacks[0].Outputs[?OutputKey=='EndpointURL'].OutputValue",
             "--output", "text", "--region", "eu-west-1"]]


def test_dry_run_prints_the_deploy_commands_and_runs_none(package, aws):
    r = deploy(package, aws, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert [shlex.split(l.removeprefix("+ ")) for l in r.stdout.splitlines() if l.startswith("+ ")] == expected(package)
    assert aws["calls"]() == []


def test_the_template_deploys_with_what_it_needs(package):
    # what the deploy command's choices rest on: a SAM template, code beside it, IAM roles without names of their own
    from nutrino_ml.deploy import iam_capabilities, sam_template
    template = sam_template(package)
    assert iam_capabilities(template) == ["CAPABILITY_IAM"]
    fns = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(fns) == 2 and {f["Properties"]["CodeUri"] for f in fns} == {"./deployment.zip"}


def test_deploy_runs_the_same_commands_in_order(package, aws):
    r = deploy(package, aws)
    assert r.returncode == 0, r.stderr
    assert aws["calls"]() == [c[1:] for c in expected(package)]


def test_a_failed_step_stops_the_ones_after_it(package, aws):
    r = deploy(package, aws, fail="deploy")
    assert r.returncode == 2 and "aws cloudformation deploy" in r.stderr and "did not run" in r.stderr, r.stderr
    assert [c[1] for c in aws["calls"]()] == ["package", "deploy"]  # never describe-stacks


def test_deploy_of_a_folder_that_was_not_packaged_exits_2(tmp_path, aws):
    r = deploy(tmp_path, aws, "--dry-run")
    assert r.returncode == 2 and "run `nutrino-ml package" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
