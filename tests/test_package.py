"""What `chalice package` builds fits Lambda and runs on its own, with no training stack and no site-packages."""
import json, os, shutil, subprocess, sys, zipfile

import pytest

from helpers import BIN, ROOT, run

MB = 1024 * 1024
INVOKE = r'''
import json, sys
sys.path.insert(0, ".")
import app

def call(path, resource, params, body):
    ev = {"resource": resource, "path": path, "httpMethod": "POST", "headers": {"content-type": "application/json"},
          "multiValueHeaders": {}, "pathParameters": params, "queryStringParameters": None,
          "multiValueQueryStringParameters": None, "stageVariables": None, "body": body, "isBase64Encoded": False,
          "requestContext": {"resourcePath": resource, "httpMethod": "POST", "path": "/api" + path, "stage": "api",
                             "requestId": "r", "identity": {"sourceIp": "127.0.0.1"}}}
    r = app.app(ev, None)
    return {"status": r["statusCode"], "body": json.loads(r["body"])}

requests = json.loads(sys.argv[1])
out = [call(*r) for r in requests]
out.append(sorted(m for m in ("mlflow", "pandas", "sklearn", "scipy", "pyspark", "ploomber", "fastcore", "skl2onnx") if m in sys.modules))
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def package(built, tmp_path_factory):
    """`nutrino-ml package` for dev and prod: chalice package offline from the wheelhouse, checked, cold path precompiled."""
    wheels = ROOT / ".wheelhouse"
    if not any(wheels.glob("onnxruntime-*.whl")):
        pytest.fail(f"{wheels} has no Lambda wheels: run `make venv` (it downloads them once, so packaging needs no index)")
    tmp = tmp_path_factory.mktemp("package")
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "NUTRINO_APP_DIR": str(built["app"])}
    # the merge template (.chalice/stream-events.json) turns on Lambda's partial batch responses for the Kinesis source
    with pytest.MonkeyPatch.context() as mp:
        # as on most machines, Python writes bytecode: what chalice's import of app.py writes must not land in the zip
        mp.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        logs = {st: run([BIN / "nutrino-ml", "package", tmp / f"out-{st}", "--stage", st], env=env).stdout for st in ("dev", "prod")}
    return {"out": tmp / "out-dev", "prod": tmp / "out-prod", "log": "\n".join(logs.values()), "tmp": tmp}


def test_every_dependency_was_fetched(package):
    # chalice exits 0 even when it could not install a dependency; `nutrino-ml package` reads its output and fails then
    assert "(cold path)" in package["log"], package["log"]
    names = zipfile.ZipFile(package["out"] / "deployment.zip").namelist()
    runtime = sorted(f"nutrino_ml/runtime/{p.name}" for p in (ROOT / "nutrino_ml" / "runtime").glob("*.py"))
    assert len(runtime) > 10, runtime
    for top in ("app.py", "chalice/app.py", *runtime, "nutrino_ml/__init__.py", "nutrino_ml/config.py", "numpy/__init__.py", "onnxruntime/__init__.py"):
        assert top in names, top
    shipped = sorted(n for n in names if n.startswith("nutrino_ml/") and n.endswith(".py"))
    assert shipped == sorted(["nutrino_ml/__init__.py", "nutrino_ml/config.py", *runtime]), "the Lambda ships the runtime folder, config, nothing else of the library"
    assert any(n.startswith("chalicelib/models/glucose-response/1/model.onnx") for n in names)
    assert not [n for n in names if n.split("/")[0] in ("mlflow", "pandas", "sklearn", "scipy", "pyspark", "ploomber")]


def fake_wheel(folder, name, tag):
    """A wheel with only the platform tag `tag` (no code that matters), as pip writes them."""
    import base64, hashlib
    files = {f"{name}/__init__.py": b"X = 1\n", f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{name}-1.0.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n".encode()}
    record = [f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},{len(v)}" for k, v in files.items()]
    files[f"{name}-1.0.dist-info/RECORD"] = ("\n".join(record) + f"\n{name}-1.0.dist-info/RECORD,,\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{name}-1.0-{tag}.whl", "w") as z:
        for k, v in files.items():
            z.writestr(k, v)


@pytest.mark.parametrize("requirement,expect", [
    # a wheel only for a newer glibc than Lambda's 2.34: pip takes it here, chalice finds nothing for Lambda and exits 0
    ("nutrino_newer_glibc==1.0", "could not fetch every dependency for Lambda (python3.12, manylinux x86_64): nutrino-newer-glibc==1.0"),
    ("nutrino-no-such-dependency==1.0", "Could not satisfy the requirement: nutrino-no-such-dependency==1.0"),   # chalice exits 2
])
def test_a_dependency_chalice_cannot_fetch_fails_the_package(built, tmp_path, requirement, expect):
    """`chalice package` exits 0 with a zip that fails on import when it cannot fetch a dependency for Lambda;
    `nutrino-ml package` exits 2 and names the dependency."""
    app = tmp_path / "app"
    shutil.copytree(built["app"], app, ignore=shutil.ignore_patterns("__pycache__", "chalicelib", "deployments"))
    with open(app / "requirements.txt", "a") as f:
        f.write(requirement + "\n")
    fake_wheel(tmp_path / "wheels", "nutrino_newer_glibc", "cp312-cp312-manylinux_2_35_x86_64")
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"{ROOT / '.wheelhouse'} {tmp_path / 'wheels'}", "NUTRINO_APP_DIR": str(app)}
    p = run([BIN / "nutrino-ml", "package", tmp_path / "out", "--no-bytecode"], env=env, check=False)
    assert p.returncode == 2 and expect in p.stdout and "Traceback" not in p.stdout, p.stdout


def test_package_fits_chalice_deploy_limits(package):
    z = package["out"] / "deployment.zip"
    unzipped = sum(i.file_size for i in zipfile.ZipFile(z).infolist())
    print(f"deployment.zip {z.stat().st_size / MB:.1f} MB zipped, {unzipped / MB:.1f} MB unzipped")
    assert z.stat().st_size <= 50 * MB and unzipped <= 250 * MB


def resources(out, kind):
    sam = json.loads((out / "sam.json").read_text())
    return [r["Properties"] for r in sam["Resources"].values() if r["Type"] == kind]


def test_sam_template_sets_the_lambda_runtime_per_stage(package):
    for st, out, memory, sfx in (("dev", package["out"], 1024, "-dev"), ("prod", package["prod"], 1769, "")):
        fns = resources(out, "AWS::Serverless::Function")
        assert sorted(f["Handler"] for f in fns) == ["app.app", "app.features_from_stream"], st
        for fn in fns:
            assert (fn["Runtime"], fn["MemorySize"], fn["Timeout"]) == ("python3.12", memory, 30), (st, fn["Handler"])
            assert fn["Environment"]["Variables"]["NUTRINO_ONLINE_STORE"] == f"dynamodb://nutrino-features{sfx}", (st, fn["Handler"])
        stream = next(f for f in fns if f["Handler"] == "app.features_from_stream")["Events"]["FeaturesFromStreamKinesisEventSource"]["Properties"]
        assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and stream["StartingPosition"] == "TRIM_HORIZON", st
        assert stream["Stream"]["Fn::Sub"].endswith(f":stream/nutrino-events{sfx}"), st
        assert stream["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": {
            "Fn::Sub": f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:nutrino-events-dead-letter{sfx}"}}, st  # what the mapping gives up on


def test_prod_requires_an_api_key_on_model_routes_and_dev_does_not(package):
    def secured(out):
        paths = resources(out, "AWS::Serverless::Api")[0]["DefinitionBody"]["paths"]
        return {p for p, ops in paths.items() for op in ops.values() if isinstance(op, dict) and op.get("security")}, set(paths)
    prod, paths = secured(package["prod"])
    assert prod == {p for p in paths if p.startswith(("/models", "/v2/models"))} and len(prod) == 11
    assert "/ping" not in prod and "/v2/health/ready" not in prod
    assert secured(package["out"])[0] == set()


LOGS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
LEAST = {  # what each function may do, and nothing more
    "app.app": LOGS | {"dynamodb:GetItem"},  # serving reads each user's latest feature row
    "app.features_from_stream": LOGS | {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:BatchGetItem",
                                        "dynamodb:BatchWriteItem", "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
                                        "kinesis:GetShardIterator", "kinesis:ListShards", "sqs:GetQueueUrl", "sqs:SendMessage"},
}


def test_each_function_gets_least_privilege_on_the_deploying_account_and_region(package):
    for st, out, sfx in (("dev", package["out"], "-dev"), ("prod", package["prod"], "")):
        sam = json.loads((out / "sam.json").read_text())["Resources"]
        for fn in (r for r in sam.values() if r["Type"] == "AWS::Serverless::Function"):
            handler, role = fn["Properties"]["Handler"], fn["Properties"]["Role"]["Fn::GetAtt"][0]
            doc = sam[role]["Properties"]["Policies"][0]["PolicyDocument"]
            actions = {a for stmt in doc["Statement"] for a in stmt["Action"]}
            assert actions == LEAST[handler], (st, handler, sorted(actions ^ LEAST[handler]))
            for stmt in doc["Statement"]:
                res = stmt["Resource"]["Fn::Sub"]
                assert res.startswith("arn:${AWS::Partition}:") and ":${AWS::Region}:${AWS::AccountId}:" in res, (st, handler, res)
                assert "*" not in stmt["Action"] and not res.endswith(":*"), (st, handler, stmt)
            tables = [s["Resource"]["Fn::Sub"] for s in doc["Statement"] if s["Action"][0].startswith("dynamodb:")]
            assert tables == [f"arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/nutrino-features{sfx}"], (st, handler, tables)


def test_generated_sam_templates_pass_cfn_lint(package):
    for st, out in (("dev", package["out"]), ("prod", package["prod"])):
        p = run([BIN / "cfn-lint", out / "sam.json"], check=False)
        assert p.returncode == 0, f"{st}: {p.stdout}"


def test_unzipped_package_answers_on_a_bare_interpreter(package, built):
    d = package["tmp"] / "unzipped"
    zipfile.ZipFile(package["out"] / "deployment.zip").extractall(d)
    examples = {m: json.loads((built["app"] / "chalicelib" / "models" / m / "1" / "manifest.json").read_text())["input_example"]
                for m in ("glucose-response", "glucose-forecast")}
    named = {m: [f"/models/{m}/predict", "/models/{name}/predict", {"name": m}, json.dumps({"rows": rows})] for m, rows in examples.items()}
    named["a number for user_id"] = ["/models/glucose-forecast/predict", "/models/{name}/predict", {"name": "glucose-forecast"}, '{"rows": [{"user_id": 7}]}']
    named["an unknown model"] = ["/models/nope/predict", "/models/{name}/predict", {"name": "nope"}, '{"rows": [{}]}']
    reqs = list(named.values())
    # -I -S: no site-packages, no PYTHONPATH, no user site: only what the zip holds, as in Lambda
    p = subprocess.run([sys.executable, "-I", "-S", "-c", INVOKE, json.dumps(reqs)], cwd=d, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    *logs, last = p.stdout.strip().splitlines()
    *answers, imported = json.loads(last)
    # one structured log line per prediction (CloudWatch in Lambda), for the two that were answered
    assert [(json.loads(l)["event"], json.loads(l)["model"]) for l in logs] == [("prediction", m) for m in examples]
    assert len(answers) == len(named), answers
    answers = dict(zip(named, answers))
    assert {case: a["status"] for case, a in answers.items()} == {
        "glucose-response": 200, "glucose-forecast": 200, "a number for user_id": 400, "an unknown model": 404}
    assert len(answers["glucose-response"]["body"]["predictions"]) == len(examples["glucose-response"])
    assert "field 'user_id' must be a non-empty string" in answers["a number for user_id"]["body"]["Message"]
    assert imported == []


COLD = r'''
import importlib.machinery as M, json, sys
compiled, source_to_code = [], M.SourceFileLoader.source_to_code
M.SourceFileLoader.source_to_code = lambda self, data, path, **kw: compiled.append(path) or source_to_code(self, data, path, **kw)
sys.path.insert(0, ".")
import app
for versions in app.models.manifests.values():
    for m in versions.values(): app.models.predictor(m)
import nutrino_ml.runtime.stream, nutrino_ml.runtime.online
print(json.dumps({"compiled": compiled}))
'''


def test_cold_start_compiles_nothing_the_package_carries_bytecode_for(package):
    """Lambda's /var/task is read-only: without .pyc every cold start compiles each module it imports (~half of it).
    `nutrino-ml package` adds unchecked-hash .pyc for the cold path; with them, importing the app, loading every version
    and the stream runtime compiles no module (-B: nothing written, as on a read-only disk)."""
    d = package["tmp"] / "unzipped-cold"
    zipfile.ZipFile(package["out"] / "deployment.zip").extractall(d)
    for f in d.rglob("*.py"):  # a zip's timestamps mean nothing to an unchecked-hash pyc
        os.utime(f, (2_000_000_000, 2_000_000_000))
    p = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", COLD], cwd=d, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["compiled"] == []
    names = zipfile.ZipFile(package["out"] / "deployment.zip").namelist()
    tag = sys.implementation.cache_tag
    for mod in ("app", "nutrino_ml/runtime/__pycache__/serving", "numpy/__pycache__/__init__", "onnxruntime/__pycache__/__init__", "chalice/__pycache__/app"):
        want = f"__pycache__/{mod}.{tag}.pyc" if "/" not in mod else f"{mod}.{tag}.pyc"
        assert want in names, want
    assert not [n for n in names if "/tests/" in n and n.endswith(".pyc")]


STREAM = r'''
import json, sys
sys.path.insert(0, ".")
import app
from nutrino_ml.runtime.stream import kinesis_event
events = json.loads(sys.argv[1])
records = [(f"{i + 1:056d}", json.dumps(e).encode(), str(e.get("user_id"))) for i, e in enumerate(events)] + [("9" * 56, b"{not json", "u1")]
i = deliveries = redelivered = 0  # as Lambda's event source mapping: after a partial failure, again from the first failed record
while i < len(records):
    batch, deliveries = records[i:i + 50], deliveries + 1
    failed = {f["itemIdentifier"] for f in app.features_from_stream(kinesis_event(batch), None)["batchItemFailures"]}
    first = min((k for k, r in enumerate(batch) if r[0] in failed), default=len(batch))
    redelivered, i = redelivered + len(batch) - first if failed else redelivered, i + first
print(json.dumps({"records": len(records), "deliveries": deliveries, "redelivered": redelivered}))
r = app.app({"resource": "/models/{name}/predict", "path": "/models/glucose-forecast/predict", "httpMethod": "POST",
             "headers": {"content-type": "application/json"}, "multiValueHeaders": {}, "pathParameters": {"name": "glucose-forecast"},
             "queryStringParameters": None, "multiValueQueryStringParameters": None, "stageVariables": None,
             "body": json.dumps({"user_id": "u1"}), "isBase64Encoded": False,
             "requestContext": {"resourcePath": "/models/{name}/predict", "httpMethod": "POST", "requestId": "r"}}, None)
print(json.dumps({"status": r["statusCode"], "body": json.loads(r["body"])}))
print(json.dumps(sorted(m for m in ("mlflow", "pandas", "sklearn", "scipy", "pyspark", "pyarrow", "fastcore") if m in sys.modules)))
'''


def test_unzipped_package_runs_the_kinesis_handler_on_a_bare_interpreter(package, tmp_path):
    """The stream Lambda's code path (decode, store, recompute with the feature functions) needs no pandas either."""
    d = package["tmp"] / "unzipped"
    if not d.exists():
        zipfile.ZipFile(package["out"] / "deployment.zip").extractall(d)
    events = [{"type": "user", "user_id": "u1", "age": 40, "sex": "f", "weight_kg": 70.0, "height_cm": 170.0}]
    events += [{"type": "glucose", "event_id": f"g{i}", "user_id": "u1", "ts": 1767254400000 + i * 300_000, "glucose_mgdl": 100.0 + i}
               for i in range(30)]
    env = {"PATH": "/usr/bin:/bin", "NUTRINO_ONLINE_STORE": f"sqlite:///{tmp_path}/online.db", "NUTRINO_DEAD_LETTER": f"sqlite:///{tmp_path}/online.db",
           "NUTRINO_STREAM_MAX_ATTEMPTS": "2"}
    p = subprocess.run([sys.executable, "-I", "-S", "-c", STREAM, json.dumps(events)], cwd=d, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(l) for l in p.stdout.strip().splitlines()]
    replayed, answer, imported = [l for l in lines if "deliveries" in l][0], lines[-2], lines[-1]
    assert replayed["records"] == 32 and replayed["redelivered"] == 0, replayed  # the bad record went to the dead letters at once
    assert any(l.get("event") == "stream_dead_letter" for l in lines)
    assert answer["status"] == 200 and answer["body"]["online"]["as_of"] == "2026-01-01T10:25:00Z", answer
    assert imported == []
