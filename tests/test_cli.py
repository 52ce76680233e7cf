"""The CLI's contract: help texts, one-line errors and documented exit codes."""

from __future__ import annotations

import subprocess
import sys

from embtune_core.cli import build_parser, main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "embtune_core.cli", *args], capture_output=True, text=True, check=False)


def test_every_command_has_help_text():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no subcommands"
    for name, subparser in sub.choices.items():
        assert subparser.description, f"{name} has no description"
        for action in subparser._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"


def test_bad_dataset_gives_one_line_and_exit_3(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = _run("validate", str(bad))
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"embtune: error: {bad}: malformed JSON at line 1 column 2")


def test_validate_ok(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text('{"queries": {"q": "a?"}, "corpus": {"c": "b"}, "relevant_docs": {"q": ["c"]}}')
    assert main(["validate", str(good)]) == 0
    assert "1 queries, 1 corpus entries" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: embtune" in capsys.readouterr().out


def test_http_request_lines_are_quiet_unless_verbose(tmp_path):
    """httpx (and the openai client's httpx2 fork) log one INFO line per request ("HTTP Request: POST
    .../v1/embeddings"); the CLI shows them only with -v. Real requests to a local OpenAI-compatible server."""
    import os

    from openai_server import OpenAIServer

    data = tmp_path / "qa.json"
    data.write_text('{"queries": {"q": "what is alpha?"}, "corpus": {"c": "alpha is a letter", "d": "beta too"}, '
                    '"relevant_docs": {"q": ["c"]}}')
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "OPENAI_API_KEY": "test"}
    with OpenAIServer() as server:
        for verbose in (False, True):
            env["EMBTUNE_CACHE"] = str(tmp_path / f"cache-{verbose}")  # no cached vectors: real requests both times
            result = subprocess.run([sys.executable, "-m", "embtune_core.cli", *(["-v"] if verbose else []),
                                     "evaluate", str(data), "--system", f"openai:e@{server.base_url}",
                                     "--resamples", "10", "--permutations", "10"],
                                    capture_output=True, text=True, check=False, env=env)
            assert result.returncode == 0, result.stderr
            assert ("HTTP Request: POST" in result.stderr) == verbose, result.stderr
            assert server.count("/v1/embeddings") >= 2 * (1 + verbose)  # the requests were made
