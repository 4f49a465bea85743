"""Run CPython's own rotating-handler tests with flocklog's classes substituted for the stdlib's.

Each interpreter found runs ``test.test_logging.RotatingFileHandlerTest`` and ``TimedRotatingFileHandlerTest``
twice in a fresh process: once as shipped (the baseline) and once with ``logging.handlers.RotatingFileHandler``
and ``TimedRotatingFileHandler`` replaced by flocklog's. Only ``src/`` is put on the path (the file handlers import
nothing beyond the stdlib), so the interpreters need nothing installed. Results per test and version go to
``benchmarks/results/cpython_rotating_tests.{txt,json}``; the README lists the deliberate differences.

    python benchmarks/cpython_rotating_tests.py                 # every interpreter under ~/.pyenv/versions
    python benchmarks/cpython_rotating_tests.py --python /usr/bin/python3.12
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLASSES = ("RotatingFileHandlerTest", "TimedRotatingFileHandlerTest")

# Run inside the interpreter under test: prints {"test id": "pass" | "fail" | "error" | "skip"} as JSON.
BOOTSTRAP = r"""
import json, logging.handlers, sys, unittest
if sys.argv[1] == "flocklog":
    import flocklog.files.handlers as fl
    logging.handlers.RotatingFileHandler = fl.RotatingFileHandler
    logging.handlers.TimedRotatingFileHandler = fl.TimedRotatingFileHandler
from test import test_logging
outcome = {}
class Result(unittest.TestResult):
    def addSuccess(self, test): outcome[test.id()] = "pass"
    def addFailure(self, test, err): outcome[test.id()] = "fail"; sys.stderr.write(self._exc_info_to_string(err, test))
    def addError(self, test, err): outcome[test.id()] = "error"; sys.stderr.write(self._exc_info_to_string(err, test))
    def addSkip(self, test, reason): outcome[test.id()] = "skip"
    def addExpectedFailure(self, test, err): outcome[test.id()] = "pass"
    def addUnexpectedSuccess(self, test): outcome[test.id()] = "fail"
loader = unittest.TestLoader()
suite = unittest.TestSuite(loader.loadTestsFromTestCase(getattr(test_logging, name)) for name in sys.argv[2:])
suite.run(Result())
print(json.dumps(outcome))
"""


def interpreters() -> list[str]:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin/python3")))
    return found or [sys.executable]


def run(python: str, variant: str, src: Path = ROOT / "src") -> tuple[str, dict[str, str], str]:
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run(
        [python, "-c", BOOTSTRAP, variant, *CLASSES], capture_output=True, text=True, env=env, timeout=600
    )
    try:
        outcome: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        outcome = {"(suite)": "error"}
    return version, outcome, proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="interpreter to use (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="print the tracebacks of failing tests")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the flocklog source tree to test")
    parser.add_argument("--results", default=str(RESULTS), help="directory for the .txt and .json results")
    args = parser.parse_args()
    report: dict[str, dict[str, dict[str, str]]] = {}
    lines = []
    for python in args.python or interpreters():
        version, baseline, _ = run(python, "stdlib")
        _, ours, errors = run(python, "flocklog", Path(args.src))
        report[version] = {"stdlib": baseline, "flocklog": ours}
        failed = sorted(t for t, r in ours.items() if r in ("fail", "error"))
        passed = sum(r == "pass" for r in ours.values())
        lines.append(
            f"Python {version}: flocklog passes {passed} of {len(ours)} "
            f"(stdlib passes {sum(r == 'pass' for r in baseline.values())} of {len(baseline)})"
        )
        lines += [f"    {ours[t]:5} {t.removeprefix('test.test_logging.')}" for t in failed]
        if args.verbose and errors:
            print(errors, file=sys.stderr)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "cpython_rotating_tests.txt").write_text(text)
    (results / "cpython_rotating_tests.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
