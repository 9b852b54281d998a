"""Every entry point switches telemetry off, and the Makefile finds Python 3.12 on a fresh machine."""
import json, os, subprocess, sys

import pytest

from helpers import ROOT

OFF = {"PLOOMBER_STATS_ENABLED": "false", "PLOOMBER_VERSION_CHECK_DISABLED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


# chalice_app/app.py calls nutrino_ml.config.disable_telemetry() before anything else: the test below imports it and checks
@pytest.mark.parametrize("path", ["Makefile", ".ci/run", "chalice_app/.chalice/config.json"])
def test_entry_point_sets_every_opt_out(path):
    text = (ROOT / path).read_text().replace(" ", "").replace('"', "").replace(":=", "=").replace(":", "=")
    for k, v in OFF.items():
        assert f"{k}={v}" in text, f"{path} does not set {k}={v}"


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in OFF}


def test_cli_and_app_set_them_before_anything_else():
    code = ("import os, json, nutrino_ml.cli as c; c.main(['settings']); print(json.dumps({k: os.environ.get(k) for k in %r}))" % list(OFF))
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == OFF
    code = "import os, sys, json; sys.path.insert(0, 'chalice_app'); import app; print(json.dumps({k: os.environ.get(k) for k in %r}))" % list(OFF)
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == OFF


def test_find_python312_works_without_pyenv_version():
    env = {k: v for k, v in os.environ.items() if k not in ("PYENV_VERSION", "PYTHON312")}
    exe = subprocess.run([ROOT / ".ci" / "find-python312"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    v = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True).stdout
    assert v.strip() == "(3, 12)"
