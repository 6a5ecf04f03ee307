"""The REST API fuzzed by Schemathesis against webui/openapi.json, over HTTP, on the real engine.

The stand-in server (``python -m tests.standin DUMP INDEX``: the real ``SearchEngine``, LMDB
store and RAM index, with model stand-ins) runs as a subprocess on a free loopback port, with a
token so that product add and delete are reachable. Schemathesis' command line then runs every
phase (examples, coverage, fuzzing, and the stateful phase, which follows the document's links
from ``POST /api/products`` to getting, fetching the image of and deleting what it added) with
every check on, for a bounded time. Photos are real small images (``tests/schemathesis_hooks.py``).

The test fails on any failure Schemathesis reports (a server error, a response the document does
not describe, a request the document allows refused or one it forbids accepted, ...) and prints
its figures either way. ``FASHION_SEARCH_FUZZ_SECONDS`` and ``FASHION_SEARCH_FUZZ_SEED`` change the
time budget (default 60 s of fuzzing) and the seed (default 1).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e '.[test]'")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "fuzz-token"
PRODUCTS = 40
START_TIMEOUT = 120  # seconds the server may take to index its products and answer /api/health
FUZZ_SECONDS = int(os.environ.get("FASHION_SEARCH_FUZZ_SECONDS", "60"))
SEED = int(os.environ.get("FASHION_SEARCH_FUZZ_SEED", "1"))


def _schemathesis() -> list[str]:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert found, "schemathesis is importable but its command is not installed"
    return [found]


def _lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)
    out.put(None)


@pytest.fixture(scope="module")
def standin_server(synth_dump, tmp_path_factory):
    """The base URL of the stand-in server, started for this module and stopped after it."""
    folder = tmp_path_factory.mktemp("fuzz")
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin",
            str(synth_dump),
            str(folder / "index"),
            "--n",
            str(PRODUCTS),
            "--port",
            "0",
            "--token",
            TOKEN,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        url = _wait_until_serving(process, lines, folder / "server.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def _wait_until_serving(process, lines: queue.Queue, log: Path) -> str:
    """The server's address, once it has printed it and /api/health answers 200."""
    deadline = time.monotonic() + START_TIMEOUT
    url = None
    while url is None:
        left = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(0.1, left))
        except queue.Empty:
            line = ""
        if line is None or process.poll() is not None:
            pytest.fail(f"the stand-in server stopped (exit {process.poll()}):\n{log.read_text()[-3000:]}")
        found = re.search(r"at (http://[^/\s]+)/", line or "")
        url = found.group(1) if found else None
        if url is None and time.monotonic() > deadline:
            pytest.fail(f"the stand-in server printed no address in {START_TIMEOUT}s:\n{log.read_text()[-3000:]}")
    for _attempt in range(200):  # bounded in count and, below, in time
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=5) as response:
                if response.status == 200:
                    return url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # between polls of /api/health, never in place of one
    pytest.fail(f"/api/health never answered 200 at {url}:\n{log.read_text()[-3000:]}")


def _figures(report: dict) -> str:
    cases = report.get("test_cases", {})
    failures = [
        f"{f['code']} {f['title']} x{f['count']}: {', '.join(f['operations'])}" for f in report.get("failures", [])
    ]
    errors = [str(e)[:300] for e in report.get("errors", [])]
    return "\n".join(
        [
            f"schemathesis {report.get('schemathesis_version')}, seed {report.get('seed')}: "
            f"{cases.get('generated')} test cases generated in {report.get('running_time', 0):.0f}s, "
            f"{cases.get('with_failures')} with failures ({cases.get('unique_failures')} unique), "
            f"{cases.get('errored')} errored; stopped by {report.get('stop_reason')}",
            *(f"  failure: {f}" for f in failures),
            *(f"  error: {e}" for e in errors),
        ]
    )


def test_the_api_obeys_its_openapi_document_under_schemathesis(standin_server, synth_dump, tmp_path):
    reports = tmp_path / "reports"
    config = tmp_path / "schemathesis.toml"
    # The stateful phase follows the document's own links, with requests that obey the document; the
    # coverage and fuzzing phases send the ones that break it. Inferred links feed values from earlier
    # responses (an image_url's escaped id, a search's category) into later requests, over the very
    # field a negative case had removed; and a negative stateful case that types a text field as a
    # number sends the same bytes as a valid one (multipart has only text). Either way Schemathesis
    # then reports the server for accepting a request that is in fact valid. The fuzzing phase met the
    # same false positive at random (a clean CI machine, seed 1: ST201 on /api/search and
    # /api/products), so it sends valid requests only; the coverage phase keeps the invalid ones,
    # derived from the document deterministically.
    config.write_text(
        '[phases.stateful.inference]\nalgorithms = []\n\n[phases.stateful.generation]\nmode = "positive"\n\n'
        '[phases.fuzzing.generation]\nmode = "positive"\n'
    )
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "FASHION_SEARCH_FUZZ_PHOTOS": str(synth_dump.parent / "images"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "NO_COLOR": "1",
    }
    command = [
        *_schemathesis(),
        "--config-file",
        str(config),
        "run",
        f"{standin_server}/api/openapi.json",  # the document as served: this server's categories in it
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        "40",
        "--max-time",
        str(FUZZ_SECONDS),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-dir",
        str(reports),
        "--no-color",
        "--output-truncate",
        "true",
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=FUZZ_SECONDS + 180, check=False
    )
    took = time.monotonic() - started
    found = sorted(reports.glob("*.json"))
    report = json.loads(found[-1].read_text()) if found else {}
    figures = _figures(report) if report else f"no JSON report; exit {run.returncode}"
    print(f"\n{figures}\n(the run took {took:.0f}s)")
    assert report, f"schemathesis wrote no report (exit {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    assert report["test_cases"]["generated"] > 100, figures
    assert run.returncode == 0 and not report["failures"] and not report["errors"], (
        f"{figures}\n\n{run.stdout[-12000:]}\n{run.stderr[-2000:]}"
    )
    phases = report.get("phases", {})
    assert phases.get("stateful", {}).get("status") == "success", f"stateful phase: {phases.get('stateful')}"
