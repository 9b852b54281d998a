"""JupyterLab works on the project with the pipeline tooling installed: list, open and save notebooks and task files."""
import json, os, re, secrets, shutil, subprocess, urllib.error, urllib.request

import pytest

from helpers import BIN, ROOT, free_port, stop, wait_http


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`jupyter lab` as `make lab` starts it (loopback, token), serving a copy of nbs/ and pipelines/."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "nbs", root / "nbs")
    shutil.copytree(ROOT / "pipelines" / "tasks", root / "pipelines" / "tasks")
    port, token = free_port(), secrets.token_hex(16)
    args = [BIN / "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port), f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", *(["--allow-root"] if os.geteuid() == 0 else [])]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/api/status?token={token}", proc, timeout=90)
        yield {"url": url, "token": token, "root": root}
    finally:
        stop(proc)


def api(lab, method, path, body=None):
    req = urllib.request.Request(f"{lab['url']}/api/contents/{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {lab['token']}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_ploomber_server_extension_is_configured_away():
    p = subprocess.run([BIN / "jupyter", "server", "extension", "list"], capture_output=True, text=True)
    out = re.sub(r"\x1b\[\d+m", "", p.stdout + p.stderr)
    assert re.search(r"^\s*ploomber disabled\s*$", out, re.M), out


def test_list_open_and_save_a_notebook(lab):
    status, listing = api(lab, "GET", "nbs")
    assert status == 200 and "00_config.ipynb" in {c["name"] for c in listing["content"]}
    status, nb = api(lab, "GET", "nbs/00_config.ipynb")
    assert status == 200 and nb["type"] == "notebook" and nb["content"]["cells"]
    nb["content"]["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "saved through the contents API"})
    status, saved = api(lab, "PUT", "nbs/00_config.ipynb", {"type": "notebook", "format": "json", "content": nb["content"]})
    assert status == 200, saved
    on_disk = json.loads((lab["root"] / "nbs" / "00_config.ipynb").read_text())
    assert "".join(on_disk["cells"][-1]["source"]) == "saved through the contents API"


def test_open_and_save_a_pipeline_task_file(lab):
    status, f = api(lab, "GET", "pipelines/tasks/train.py?type=file&format=text")
    assert status == 200 and "model_name" in f["content"]
    status, saved = api(lab, "PUT", "pipelines/tasks/train.py", {"type": "file", "format": "text", "content": f["content"] + "\n# edited in Lab\n"})
    assert status == 200, saved
    assert (lab["root"] / "pipelines" / "tasks" / "train.py").read_text().endswith("# edited in Lab\n")
