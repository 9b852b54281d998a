"""How long each registry command takes, and how much of it is imports: `python bench/cli/run.py [--label L]`.

Runs every command in a fresh process (as a user's shell does) against a copy of the demo's registry
(`make demo` first), three rounds, and records the median wall time, the CPU time of the process (user+sys, from
`os.wait4`) and the import time of `python -X importtime` (the sum of the top-level imports). With `--before CHECKOUT`
(a `git worktree` of the commit before a change) both checkouts run side by side, each command on one then the other,
so the machine's speed changes hit both alike. Results go to bench/cli/results.json and the table into
bench/README.md between `<!-- cli:start -->` and `<!-- cli:end -->`.
"""
from __future__ import annotations
import argparse, datetime, json, os, platform, re, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).with_name("results.json")
BIN = ROOT / ".venv" / "bin"
QUIET = {"PLOOMBER_STATS_ENABLED": "false", "PLOOMBER_VERSION_CHECK_DISABLED": "1",
         "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
TARGET_S = 3.0


def commands(tmp:Path) -> dict:
    "The commands timed, by label: each a list of `nutrino-ml` arguments (run against the copied registry)."
    return {
        "models list": ["models", "list"],
        "models promote": ["models", "promote", "glucose-forecast", "latest", "--alias", "canary"],
        "models route": ["models", "route", "glucose-forecast", "--weights", "production=90,canary=10", "--sticky-key", "user_id"],
        "models rollback": ["models", "rollback", "glucose-response"],
        "lineage": ["lineage", "glucose-response", "production"],
        "export": ["export"],
        "schedule airflow": ["schedule", "airflow", "--out", str(tmp / "dags")],
        "settings": ["settings"],
    }


def registry_copy(tmp:Path, checkout:Path) -> dict:
    "Copy the demo's MLflow store into `tmp`; the environment that points `checkout`'s nutrino-ml at the copy."
    src = ROOT / "data" / "mlflow"
    if not (src / "mlflow.db").exists(): sys.exit(f"bench/cli: no registry at {src}; run `make demo` first")
    shutil.copytree(src, tmp / "mlflow")
    return {**os.environ, **QUIET, "NUTRINO_PROFILE": "local",
            "NUTRINO_MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
            "NUTRINO_MLFLOW_ARTIFACT_LOCATION": str(tmp / "mlflow" / "artifacts"),
            "NUTRINO_BUNDLE_DIR": str(tmp / "bundles"), "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(checkout)}


def run_once(args:list, env:dict, checkout:Path) -> tuple:
    "Wall seconds and CPU seconds (user+sys) of one `nutrino-ml ARGS` process; exits if the command fails."
    t0 = time.perf_counter()
    p = subprocess.Popen([str(BIN / "nutrino-ml"), *args], cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0: sys.exit(f"bench/cli: nutrino-ml {' '.join(args)} failed: {p.stderr.read().decode()[-500:]}")
    return wall, ru.ru_utime + ru.ru_stime


def import_seconds(args:list, env:dict, checkout:Path) -> float:
    "Seconds spent importing modules in one run of `nutrino-ml ARGS` (`-X importtime`, top-level imports summed)."
    code = "import sys; from nutrino_ml.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([str(BIN / "python"), "-X", "importtime", "-c", code, *args], cwd=checkout, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    top = [int(m.group(1)) for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| \S", r.stderr, re.M)]
    return sum(top) / 1e6


def measure(checkouts:dict, repeats:int=3) -> dict:
    """`{label: {command: median wall, CPU and import seconds}}` of each checkout, side by side: every round runs each command
    on each checkout in turn (alternating which goes first), in fresh processes, each on a fresh copy of the registry."""
    runs, imports = {k: {} for k in checkouts}, {k: {} for k in checkouts}
    for i in range(repeats):
        order = list(checkouts.items())[::(-1 if i % 2 else 1)]
        with tempfile.TemporaryDirectory(prefix="bench-cli-") as d:
            envs = {k: registry_copy(Path(d) / k, c) for k, c in checkouts.items()}
            for label, args in commands(Path(d)).items():
                for k, c in order:
                    runs[k].setdefault(label, []).append(run_once(args, envs[k], c))
                    if i == repeats - 1: imports[k][label] = import_seconds(args, envs[k], c)
    out = {k: {} for k in checkouts}
    for k in checkouts:
        for label, rs in runs[k].items():
            out[k][label] = {"wall_s": statistics.median(w for w, _ in rs), "cpu_s": statistics.median(c for _, c in rs), "import_s": imports[k][label]}
            print(f"{k:8} {label:18} wall {out[k][label]['wall_s']:.2f} s  cpu {out[k][label]['cpu_s']:.2f} s  imports {out[k][label]['import_s']:.2f} s", flush=True)
    return out


def git_rev(checkout:Path) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout, capture_output=True, text=True).stdout.strip()
    return rev + ("+dirty" if dirty else "")


def table(results:dict, before:str, after:str) -> str:
    "The markdown table of `before` beside `after` (labels of results.json), with the ≤ 3 s target."
    b, a = results[before], results[after]
    rows = [f"| command | {before}: wall / CPU / imports (s) | {after}: wall / CPU / imports (s) | ≤ {TARGET_S:g} s? |", "|---|---|---|---|"]
    for k, r in a["commands"].items():
        o = b["commands"].get(k)
        old = f"{o['wall_s']:.2f} / {o['cpu_s']:.2f} / {o['import_s']:.2f}" if o else "–"
        rows.append(f"| `nutrino-ml {k}` | {old} | {r['wall_s']:.2f} / {r['cpu_s']:.2f} / {r['import_s']:.2f} | "
                    f"{'yes' if r['wall_s'] <= TARGET_S else 'no'} |")
    how = lambda r: f"git {r['git']}, {r['when']}, load average {r['load'][0]:.2f} → {r['load_end'][0]:.2f}"
    return (f"### `bench/cli`: registry command times\n\nEach command in a fresh process on a copy of the demo registry "
            f"(`make demo`; `.venv/bin/python bench/cli/run.py --before /tmp/before`, a worktree of the commit before), "
            f"side by side, median of 3; CPU = user + sys of the process; imports = "
            f"`-X importtime`, top-level imports summed. {platform.processor() or platform.machine()}, nproc {os.cpu_count()}, "
            f"Python {platform.python_version()}.\n{before}: {how(b)}. {after}: {how(a)}.\n\n" + "\n".join(rows) + "\n\n"
            "`schedule airflow` is not a registry command: it loads the pipeline with Ploomber (which imports papermill, nbformat "
            "and jsonschema), about 2.8 s of its time. CPU can exceed wall: it counts every thread and child process.\n")


def write_readme(text:str):
    readme = ROOT / "bench" / "README.md"
    s = readme.read_text()
    block = f"<!-- cli:start -->\n\n{text}\n<!-- cli:end -->"
    s = re.sub(r"<!-- cli:start -->.*<!-- cli:end -->", lambda _: block, s, flags=re.S) if "<!-- cli:start -->" in s else s.rstrip() + "\n\n" + block + "\n"
    readme.write_text(s)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default=None, metavar="CHECKOUT",
                   help="another checkout timed side by side with this one, e.g. `git worktree add /tmp/before HEAD~1` (default: this one only)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the median is kept (default %(default)s)")
    a = p.parse_args()
    checkouts = {**({"before": Path(a.before).resolve()} if a.before else {}), "after": ROOT}
    load = os.getloadavg()
    measured = measure(checkouts, a.repeats)
    when, load_end = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), os.getloadavg()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for k, c in checkouts.items():
        results[k] = {"git": git_rev(c), "when": when, "load": load, "load_end": load_end, "commands": measured[k]}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if "before" in results:
        write_readme(table(results, "before", "after"))
        print("wrote the table (before beside after) into bench/README.md")


if __name__ == "__main__":
    main()
