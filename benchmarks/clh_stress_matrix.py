"""concurrent-log-handler's own stress matrix, run unmodified against flocklog's classes.

clh tests itself with ``tests/test_stresstest.py`` (38 cases: size and timed rotation, gzip, tiny ``maxBytes``,
``backupCount=0``, a custom lock directory, ``keep_file_open`` on and off, and two cases that must *detect* a
handler that drops or duplicates records). This script copies those two files from a clh checkout into a scratch
directory, puts a ``concurrent_log_handler`` package in front of them that only re-exports flocklog's
``ConcurrentRotatingFileHandler`` / ``ConcurrentTimedRotatingFileHandler``, runs pytest there, and writes one row
per case to ``benchmarks/results/clh_stress_matrix.{json,txt}``. The real clh is never imported.

    git clone https://github.com/Preston-Landers/concurrent-log-handler /tmp/clh
    .venv/bin/python benchmarks/clh_stress_matrix.py /tmp/clh            # the whole matrix (~5 minutes)
    .venv/bin/python benchmarks/clh_stress_matrix.py /tmp/clh -k backupCount_0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

SHIM = '''"""Stand-in for concurrent_log_handler: flocklog's classes under clh's names."""
from flocklog import ConcurrentRotatingFileHandler, ConcurrentTimedRotatingFileHandler

__all__ = ["ConcurrentRotatingFileHandler", "ConcurrentTimedRotatingFileHandler"]
'''


def _sources(clh: Path) -> list[Path]:
    tests = clh / "tests" if (clh / "tests").is_dir() else clh
    files = [tests / "stresstest.py", tests / "test_stresstest.py"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"not a concurrent-log-handler checkout (or its tests/ folder): missing {', '.join(missing)}")
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clh", type=Path, help="a concurrent-log-handler checkout, or its tests/ folder")
    parser.add_argument("-k", default=None, help="pytest -k expression (a subset of the matrix)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "clh_stress_matrix.json"))
    args = parser.parse_args()
    sources = _sources(args.clh.resolve())
    with tempfile.TemporaryDirectory(prefix="flocklog-clh-matrix-") as scratch:
        work = Path(scratch)
        for source in sources:
            shutil.copy(source, work / source.name)
        package = work / "shim" / "concurrent_log_handler"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(SHIM)
        (package / "__version__.py").write_text('__version__ = "flocklog"\n')
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(work / "shim"), str(work)]))
        junit = work / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_stresstest.py"]
        command += ["--junitxml", str(junit), "-o", "junit_family=xunit2", "-o", "junit_logging=system-out"]
        if args.k:
            command += ["-k", args.k]
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
        if not junit.is_file():
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            return 2
        rows = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            detail = ""
            if failure is not None:
                out = case.find("system-out")
                text = (out.text if out is not None and out.text else "") + (failure.get("message") or "")
                errors = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("Error:")]
                detail = errors[-1] if errors else (failure.get("message") or "")[:200]
            name = re.sub(r"^test_run_stress_test\[(.*)\]$", r"\1", case.get("name", ""))
            rows.append({"case": name, "passed": failure is None, "seconds": float(case.get("time", 0)), "why": detail})
    passed = sum(r["passed"] for r in rows)
    lines = [f"clh stress matrix against flocklog: {passed} of {len(rows)} cases pass"]
    lines += [
        f"  {'pass' if r['passed'] else 'FAIL'}  {r['case']}" + (f"  ({r['why']})" if r["why"] else "") for r in rows
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"passed": passed, "cases": len(rows), "rows": rows}, indent=2))
    out.with_suffix(".txt").write_text(text + "\n")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
