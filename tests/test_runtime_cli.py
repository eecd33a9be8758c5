"""`lacy-mlx generate` (in process) and `lacy-mlx chat` (a subprocess through a pipe and a pty)."""
import json
import os
import select
import subprocess
import sys
import time

import pytest

from lacy_mlx.cli import build_parser, main
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.store import Store

GATE = ["--gate", "entropy", "--entropy-threshold", "0", "--min-gap", "2"]


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    path = tmp_path_factory.mktemp("kb") / "kb.db"
    with Store.open(path, embedder=HashedEmbedder(dim=64)) as s:
        s.add_documents([{"external_id": "turing", "title": "Alan Turing",
                          "text": "Alan Turing was born in London in 1912."}])
    return path


def test_commands_are_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("generate", "chat"):
        assert name in sub.choices and sub.choices[name].description


def test_generate_streams_calls_and_sources(tiny_dir, kb, capsys):
    rc = main(["generate", "--model", str(tiny_dir), "--db", str(kb), "--prompt", "Where was Alan Turing born?",
               "--max-tokens", "8", *GATE])
    out = capsys.readouterr()
    assert rc == 0
    assert "[call: entropy" in out.out and "Sources: Alan Turing" in out.out
    assert "\x1b[" not in out.out  # no colour off a terminal
    assert "8 tokens" in out.err and "calls" in out.err


def test_generate_json_lines(tiny_dir, kb, capsys):
    rc = main(["generate", "--model", str(tiny_dir), "--db", str(kb), "--prompt", "Alan Turing was born in",
               "--raw-prompt", "--max-tokens", "5", "--json", *GATE])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0 and lines[-1]["event"] == "done" and lines[-1]["tokens"] == 5
    call = next(x for x in lines if x["event"] == "call")
    assert call["hits"][0]["title"] == "Alan Turing" and call["query"]


def test_generate_reports_a_missing_model(tmp_path, capsys):
    rc = main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "hi"])
    assert rc == 1 and "cannot load the model" in capsys.readouterr().err


def test_helper_model_with_db_is_refused_not_ignored(tiny_dir, kb, capsys):
    rc = main(["generate", "--model", str(tiny_dir), "--helper-model", str(tiny_dir), "--db", str(kb),
               "--prompt", "hi"])
    assert rc == 1 and "--db would go unused" in capsys.readouterr().err


def _chat_cmd(tiny_dir, kb):
    return [sys.executable, "-m", "lacy_mlx", "chat", "--model", str(tiny_dir), "--db", str(kb), "--max-tokens", "8"]


def test_chat_through_a_pipe(tiny_dir, kb):
    script = "\n".join([
        "Where was Alan Turing born?",
        "/gate entropy",
        "/threshold 0",
        "/budget 0.5",
        "Where was Alan Turing born?",
        "/stats",
        "/gate sometimes",
        "/help",
        "/quit",
        "never read",
    ]) + "\n"
    proc = subprocess.run(_chat_cmd(tiny_dir, kb), input=script, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "gate mode: entropy" in out and "entropy threshold: 0" in out and "budget: 0.5" in out
    assert "[call: entropy" in out and "Sources: Alan Turing" in out
    assert "last answer: 8 tokens" in out and "session: 2 answers, 16 tokens" in out
    assert "error: gate mode must be one of" in out and "/threshold [call|entropy]" in out
    assert "\x1b[" not in out


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX only")
def test_chat_on_a_terminal_uses_colour(tiny_dir, kb):
    import pty

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.Popen(_chat_cmd(tiny_dir, kb) + GATE, stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    buf = b""

    def read_until(marker: bytes, timeout: float = 60.0) -> None:
        nonlocal buf
        end = time.monotonic() + timeout
        while marker not in buf and time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    buf += os.read(master, 4096)
                except OSError:
                    return

    try:
        read_until(b">>> ")
        os.write(master, b"Where was Alan Turing born?\n")
        read_until(b"Sources:")
        read_until(b">>> ")
        os.write(master, b"/quit\n")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0
    assert b"\x1b[33m [call: entropy" in buf and b"\x1b[36mSources: Alan Turing" in buf
