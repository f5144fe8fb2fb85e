"""Progress bar: draws on a TTY, silent in CI / pipes / NO_PROGRESS, never breaks the loop it wraps."""

from __future__ import annotations

import io

import pytest

from fedcheck.progress import Progress, progress_enabled, track


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _interactive_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CI", "NO_PROGRESS", "TERM"):
        monkeypatch.delenv(var, raising=False)


def test_enabled_only_on_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert progress_enabled(FakeTTY())
    assert not progress_enabled(io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(FakeTTY())
    monkeypatch.setenv("CI", "0")
    assert progress_enabled(FakeTTY())
    monkeypatch.setenv("NO_PROGRESS", "1")
    assert not progress_enabled(FakeTTY())


def test_silent_when_not_a_tty() -> None:
    out = io.StringIO()
    assert list(track(range(50), desc="x", stream=out)) == list(range(50))
    assert out.getvalue() == ""


def test_silent_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    out = FakeTTY()
    with Progress(10, stream=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_draws_bar_with_rate_and_eta_on_tty() -> None:
    out = FakeTTY()
    with Progress(desc="import", stream=out, min_interval=0.0) as bar:
        for _ in bar.iter([1, 2, 3, 4]):
            pass
    text = out.getvalue()
    assert text.endswith("\n") and "\r" in text
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("import: 100%|") and "4/4" in last and "it/s" in last and "<00:00" in last


def test_update_and_unknown_total() -> None:
    bar = Progress(stream=FakeTTY(), unit="rec")
    bar.update(3)
    bar.update(2)
    assert bar.count == 5
    assert bar.render(width=80).startswith("5 rec [")
    half = Progress(10, stream=FakeTTY())
    half.update(5)
    assert " 50%|" in half.render(width=60) and "5/10" in half.render(width=60)


def test_closed_on_break_and_exception() -> None:
    out = FakeTTY()
    for i in track(range(100), stream=out):
        if i == 3:
            break
    # the generator is closed when dropped; its line is ended
    assert out.getvalue().endswith("\n")
    out2 = FakeTTY()
    with pytest.raises(RuntimeError), Progress(5, stream=out2) as bar:
        bar.update(1)
        raise RuntimeError("boom")
    assert out2.getvalue().endswith("\n")
