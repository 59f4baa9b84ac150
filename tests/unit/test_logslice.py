from __future__ import annotations

from pathlib import Path

from irqlab.testing.logslice import LogSlicer


def test_saves_only_what_was_written_since_the_mark(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("boot\n")
    missing = tmp_path / "later.log"
    s = LogSlicer({"console.log": console, "later.log": missing})
    with console.open("a") as f:
        f.write("test line\n")
    missing.write_text("new file\n")
    files = s.save(tmp_path / "out")
    assert (tmp_path / "out" / "console.log").read_text() == "test line\n"
    assert (tmp_path / "out" / "later.log").read_text() == "new file\n"
    assert len(files) == 2
