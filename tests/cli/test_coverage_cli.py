"""`stackprobe coverage`, `run --fail-under` and the HTML/Markdown formats, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from stackprobe.report.html import COLORS
from tests.cli.test_cli import no_traceback
from tests.conftest import CliRunner, RunningSandbox
from tests.unit.test_reports import sample


def save(cli: CliRunner, run_id: str, stack: str = "shop-staging") -> Path:
    result = sample()
    result.run_id, result.stack = run_id, stack
    path = cli.state_dir / "runs" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.to_json())
    return path


def test_coverage_reads_the_latest_saved_run_and_shows_gaps(cli: CliRunner) -> None:
    save(cli, "20261125T115700Z-aaaaaa")
    save(cli, "20261126T080000Z-bbbbbb", stack="sandbox")
    res = cli("coverage")
    assert res.code == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert (
        first == "coverage 14.3% (1/7 capabilities) · stack sandbox · run 20261126T080000Z-bbbbbb"
    )
    row = next(line for line in res.stdout.splitlines() if line.startswith("│ cache"))
    assert row.split("│")[2:9] == [
        " passed       ", " not run    ", " failed   ", " error        ",
        " not run            ", " failed      ", "    16.7% ",
    ]  # fmt: skip
    assert "stackprobe run --sandbox --service cache --capability sessions" in res.stdout
    assert "session gone at 1.01 s: reading did not extend it" in res.stdout


def test_coverage_of_a_named_file_in_json_and_markdown(cli: CliRunner, tmp_path: Path) -> None:
    path = save(cli, "20261125T115700Z-aaaaaa")
    res = cli("coverage", str(path), "--format", "json", "-c", "shop.yaml")
    assert res.code == 0
    doc = json.loads(res.stdout)
    assert (doc["percent"], doc["covered"], doc["total"]) == (14.3, 1, 7)
    assert doc["services"]["worker"]["capabilities"] == {"workers": "skipped"}
    commands = [g["command"] for g in doc["gaps"]]
    assert "stackprobe run -c shop.yaml --service cache --capability operations" in commands
    out = tmp_path / "cov.md"
    res = cli("coverage", str(path), "--format", "markdown", "-o", str(out))
    assert res.code == 0 and res.stdout == ""
    assert "| **cache** | ✅ passed | ➖ not run | ❌ failed |" in out.read_text()


def test_coverage_fail_under(cli: CliRunner) -> None:
    path = save(cli, "20261125T115700Z-aaaaaa")
    res = cli("coverage", str(path), "--fail-under", "50")
    assert res.code == 1
    assert res.stderr.strip() == "stackprobe: coverage 14.3% is below --fail-under 50%"
    assert cli("coverage", str(path), "--fail-under", "14").code == 0


def test_coverage_without_a_run_or_with_a_foreign_file_exits_2_with_one_line(
    cli: CliRunner, tmp_path: Path
) -> None:
    res = cli("coverage")
    assert res.code == 2
    assert res.stderr.strip() == (
        f"no saved run in {cli.state_dir}/runs: run `stackprobe run` first, or pass a RESULT.json"
    )
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}')
    res = cli("coverage", str(other))
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith(f"{other}: not a stackprobe run result: ")
    res = cli("coverage", str(tmp_path / "missing.json"))
    assert res.code == 2 and "cannot read" in res.stderr
    no_traceback(res.stdout, res.stderr)


def test_help_documents_exit_codes(cli: CliRunner) -> None:
    res = cli("coverage", "--help")
    assert res.code == 0
    text = " ".join(res.stdout.split())
    assert "Exit 0 printed, 1 coverage below --fail-under, 2 no saved run" in text
    run_help = " ".join(cli("run", "--help").stdout.split())
    assert "--fail-under" in run_help and "html" in run_help and "markdown" in run_help


def test_run_fail_under_html_and_markdown_on_the_sandbox(
    cli: CliRunner, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    cli.use_sandbox(sandbox)
    report = tmp_path / "report.html"
    args = ("run", "--sandbox", "--kind", "redis", "--capability", "connectivity")
    res = cli(*args, "--format", "html", "-o", str(report), "--fail-under", "20")
    assert res.code == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "stackprobe: coverage 16.7% is below --fail-under 20%"
    )
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    assert 'title="cache connectivity: passed"' in html
    assert 'title="cache sessions: not run"' in html
    assert f"background: {COLORS['passed'][0]}" in html
    res = cli(*args, "--format", "markdown", "--fail-under", "16")
    assert res.code == 0, res.stderr
    assert res.stdout.startswith("## ✅ stackprobe OK: sandbox")
    assert "| **cache** | ✅ passed | ➖ not run |" in res.stdout
    latest = cli("coverage")
    assert latest.code == 0 and "coverage 16.7% (1/6 capabilities) · stack sandbox" in latest.stdout
