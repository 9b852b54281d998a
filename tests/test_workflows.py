"""The GitHub Actions workflows (.github/workflows/) are checked here, so a broken one fails `make test` before it fails
on a push: each file against GitHub's workflow schema (check-jsonschema's vendored copy: offline), every `run:` step
calls a command that exists (a Makefile target, a `nutrino-ml` command whose arguments its parser accepts, an executable
of .venv, or a standard tool named below), every action is pinned, and the deploy holds to its promises (CI first,
OIDC only, each variable it reads named in the README)."""
import argparse, contextlib, io, re, shlex, subprocess
from pathlib import Path

import pytest
import yaml

from helpers import BIN, ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# what a step may call that is neither ours nor in .venv: shell keywords and builtins, and what GitHub's runners have
SHELL_KEYWORDS = {"for", "do", "done", "if", "then", "else", "elif", "fi", "while", "{", "}", "!"}
STANDARD_TOOLS = {"echo", "test", "exit", "true", "false", "printf", "cd", "aws"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def steps(wf: dict):
    "`(job id, step)` of every step of every job of workflow `wf`."
    for job_id, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def simple_commands(script: str) -> list:
    "The simple commands (word lists) of a `run:` script: lines joined, split at ; && || | and shell groups, keywords dropped."
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split, lex.commenters = True, "#"
        words = []
        for tok in [*lex, ";"]:
            if tok and set(tok) <= set(";&|()"):
                out.append(words); words = []
            else:
                words.append(tok)
    cmds = []
    for words in out:
        while words and (words[0] in {"do", "then", "else", "{", "!"} or re.fullmatch(r"[A-Za-z_]\w*=.*", words[0])):
            words = words[1:]  # a keyword before a command, or a variable set for it
        if words and words[0] not in {"for", "done", "fi", "}", "while", "if"}:
            cmds.append(words)
    return cmds


def make_targets() -> set:
    return {m[1] for m in re.finditer(r"^([\w.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M)}


def check_nutrino_ml(args: list):
    "Raise unless `nutrino-ml`'s parser accepts `args` (shell variables standing in for values)."
    from nutrino_ml.cli import make_parser
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            make_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"nutrino-ml {shlex.join(args)}: {err.getvalue().strip().splitlines()[-1]}") from None


def check_command(words: list):
    "Raise unless `words` calls a command that exists, with arguments it takes where we can tell."
    cmd = words[0]
    if cmd == "make":
        missing = [t for t in words[1:] if not t.startswith("-") and t not in make_targets()]
        assert not missing, f"make {' '.join(words[1:])}: no Makefile target {missing}"
    elif cmd in (".venv/bin/nutrino-ml", "nutrino-ml"):
        check_nutrino_ml(words[1:])
    elif cmd.startswith(".venv/bin/"):
        assert (BIN / cmd.removeprefix(".venv/bin/")).exists(), f"{cmd} is not installed in .venv (is it in pyproject's dev extra?)"
    else:
        assert cmd in STANDARD_TOOLS, f"{cmd!r} is neither ours, in .venv, nor a standard tool listed in tests/test_workflows.py"


def run_lines():
    "`(workflow file, job, step name, simple command)` of every `run:` step."
    for f in WORKFLOWS:
        for job_id, step in steps(load(f)):
            for words in simple_commands(step.get("run", "")):
                yield pytest.param(words, id=f"{f.name}:{job_id}:{' '.join(words[:3])}")


def test_there_are_a_ci_and_a_deploy_workflow():
    assert [f.name for f in WORKFLOWS] == ["ci.yml", "deploy.yml"]


@pytest.mark.parametrize("path", [f.name for f in WORKFLOWS])
def test_workflow_matches_githubs_schema(path):
    r = subprocess.run([BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", ROOT / ".github" / "workflows" / path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("words", list(run_lines()))
def test_every_run_step_calls_a_command_that_exists(words):
    check_command(words)


def test_the_checker_tells_a_broken_step():
    # the same check, on steps that would fail on a push
    for words, says in [(["make", "tests"], "no Makefile target ['tests']"),
                        ([".venv/bin/nutrino-ml", "schedule", "airflw"], "invalid choice: 'airflw'"),
                        ([".venv/bin/nutrino-ml", "package"], "required: out"),
                        ([".venv/bin/nbdev-testt"], "is not installed in .venv"),
                        (["curl", "-sSf", "https://x"], "'curl' is neither ours")]:
        with pytest.raises(AssertionError, match=re.escape(says)):
            check_command(words)
    assert simple_commands('A=1 make venv && echo "a; b" | .venv/bin/x --y\nfor v in a b; do test -n "$v" || { echo no; exit 1; }; done') == [
        ["make", "venv"], ["echo", "a; b"], [".venv/bin/x", "--y"], ["test", "-n", "$v"], ["echo", "no"], ["exit", "1"]]


def test_ci_runs_what_make_test_runs():
    wf = load(ROOT / ".github" / "workflows" / "ci.yml")
    made = {w for _, s in steps(wf) for c in simple_commands(s.get("run", "")) if c[0] == "make" for w in c[1:]}
    test_deps = re.search(r"^test:([^\n]*)", (ROOT / "Makefile").read_text(), re.M)[1].split()
    assert set(test_deps) <= made | {"test"}, f"ci.yml runs make {sorted(made)}; make test runs {test_deps}"
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert {"pull_request", "push", "workflow_call"} <= set(triggers)
    uses = [s.get("uses", "") for _, s in steps(wf)]
    assert any(u.startswith("actions/setup-python@") for u in uses) and any("nutrino-ml" in str(s.get("with", {}).get("path")) for _, s in steps(wf)), \
        "pip's cache and the Airflow env's cache"


def test_every_action_is_pinned_to_a_version_and_local_workflows_exist():
    for f in WORKFLOWS:
        wf = load(f)
        used = [s["uses"] for _, s in steps(wf) if "uses" in s] + [j["uses"] for j in wf["jobs"].values() if "uses" in j]
        for u in used:
            if u.startswith("./"):
                assert (ROOT / u).is_file(), f"{f.name}: {u} does not exist"
            else:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", u), f"{f.name}: {u} is not pinned to a version tag or a commit"


def test_deploy_runs_after_ci_on_main_with_oidc_and_each_step_after_the_last():
    wf = load(ROOT / ".github" / "workflows" / "deploy.yml")
    assert wf.get("on", wf.get(True)) == {"push": {"branches": ["main"]}}
    assert wf["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml" and wf["jobs"]["deploy"]["needs"] == "test"
    job = wf["jobs"]["deploy"]
    assert job["permissions"]["id-token"] == "write"
    text = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text, "no long-lived keys: OIDC only"
    assert not any("continue-on-error" in s or "if" in s for s in job["steps"]), "a step runs only when the ones before it succeeded"
    order = [" ".join(c[1:3]) for s in job["steps"] for c in simple_commands(s.get("run", "")) if c[0].endswith("nutrino-ml")]
    assert order == ["schedule airflow", "export", "package out", "deploy out", "deploy out"], order
    role = next(s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    assert role["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"


def test_every_variable_a_workflow_reads_is_named_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From a push to production", 1)[1].split("\n## ", 1)[0] if "## From a push to production" in readme else ""
    assert section, "README.md has no section 'From a push to production'"
    names = {m[1] for f in WORKFLOWS for m in re.finditer(r"\b(?:vars|secrets)\.(\w+)", f.read_text())}
    assert names and not [n for n in sorted(names) if f"`{n}`" not in section], "variables the workflows read that the README does not name"
