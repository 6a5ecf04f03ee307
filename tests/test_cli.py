import subprocess
import sys

from cli.main import main


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in ("synth", "train", "evaluate", "demo"):
        assert name in out


def test_synth_command(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "cat"), "--n", "5", "--seed", "1"]) == 0
    assert (tmp_path / "cat" / "products.jsonl").read_text().count("\n") == 5
    assert "images/s" in capsys.readouterr().out


def test_bad_value_is_an_error_not_a_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cli.main", "synth", str(tmp_path), "--n", "0"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "--n must be at least 1, got 0" in r.stderr and "Traceback" not in r.stderr
