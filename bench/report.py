"""What every benchmark in bench/ shares: progress lines, the machine it ran on, the git revision, and writing its
results table between its markers in bench/README.md."""
import os, platform, socket, subprocess, time, urllib.error, urllib.request
from pathlib import Path

from nutrino_ml.config import TELEMETRY_OFF as _NO_TELEMETRY  # the project's own list of opt-outs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
RESULTS = ROOT / "bench" / "results"
# what every process a benchmark starts gets: no telemetry, no progress bars, Spark on loopback, quiet warnings
BENCH_ENV = {**_NO_TELEMETRY, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "SPARK_LOCAL_IP": "127.0.0.1",
             "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning"}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor() or "unknown CPU")
    mem = next((int(l.split()[1]) // 1024 for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), None)
    return {"cpu": cpu, "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "mem_total_mib": mem,
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def write_readme(md: str, start: str, end: str):
    """Put `md` (which begins with `start` and ends with `end`) in place of that section of bench/README.md."""
    text = README.read_text()
    if start in text and end in text:
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + md + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + md + "\n"
    README.write_text(text)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout: float = 60):
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
