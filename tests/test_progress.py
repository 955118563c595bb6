"""Progress bars: per leaf when asked, never when output is not a terminal."""

from __future__ import annotations

import io
import sys

import pytest

import jgradcheck as jgc
from helpers import data, mlp_loss, mlp_params
from jgradcheck._engine import progress as _progress

PARAMS = mlp_params([3, 4, 2])
ARGS = data((2, 3), (2, 2))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_to_a_stream_names_every_leaf():
    out = io.StringIO()
    r = jgc.check_grad(mlp_loss, PARAMS, *ARGS, progress=out)
    text = out.getvalue()
    assert r.ok
    for leaf in r.leaves:
        assert leaf.info.path in text
    assert f"{PARAMS[0]['w'].size}/{PARAMS[0]['w'].size}" in text  # filled to total
    assert "coord" in text


def test_progress_true_writes_to_stderr(capsys):
    jgc.check_grad(mlp_loss, PARAMS, *ARGS, progress=True)
    captured = capsys.readouterr()
    assert "[0]['w']" in captured.err and "[1]['b']" in captured.err
    assert captured.out == ""


def test_progress_false_writes_nothing(capfd, monkeypatch):
    monkeypatch.setattr(_progress, "AUTO_SECONDS", 0.0)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    jgc.check_grad(mlp_loss, PARAMS, *ARGS, progress=False)
    assert sys.stderr.getvalue() == ""
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_automatic_progress_is_silent_when_stderr_is_not_a_terminal(capfd, monkeypatch):
    monkeypatch.setattr(_progress, "AUTO_SECONDS", 0.0)  # every sweep counts as long
    jgc.check_grad(mlp_loss, PARAMS, *ARGS)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("seconds, shown", [(0.0, True), (600.0, False)])
def test_automatic_progress_on_a_terminal_only_for_long_sweeps(
    monkeypatch, seconds, shown
):
    monkeypatch.setattr(_progress, "AUTO_SECONDS", seconds)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    jgc.check_grad(mlp_loss, PARAMS, *ARGS)
    assert ("[0]['w']" in terminal.getvalue()) == shown


def test_numerical_grad_progress():
    out = io.StringIO()
    jgc.numerical_grad(mlp_loss, PARAMS, *ARGS, progress=out)
    assert "[1]['w']" in out.getvalue()


def test_bad_progress():
    with pytest.raises(TypeError, match="`progress`"):
        jgc.check_grad(mlp_loss, PARAMS, *ARGS, progress="yes")
