"""The library entries are the commands: the same settings refuse alike, and an entry writes
what its command writes."""

import pandas as pd
import pytest

import langheads
from langheads import LangheadsError
from langheads.cli import main


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: langheads.EvaluateSettings(model="m", languages=["en"], budget=-1), "--budget must be a share"),
        (lambda: langheads.EvaluateSettings(model="m"), "give --languages"),
        (lambda: langheads.EvaluateSettings(languages=["en"], qa="cloze", judge="http://x"), "give --model"),
        (lambda: langheads.EvaluateSettings(model="m", languages=["en"], mask="0.1"), "--mask goes with --qa"),
        (
            lambda: langheads.EvaluateSettings(model="m", languages=["en"], qa="cloze", judge="http://x"),
            "--judge needs --judge-model",
        ),
        (lambda: langheads.EvaluateSettings(model="m", languages=["en"], mask="x"), "--mask takes layer.head"),
        (lambda: langheads.ScanSettings(method="lape"), "--method lape scores neurons only, not --component head"),
        (lambda: langheads.ScanSettings(component="layer"), "unknown --component 'layer'"),
        (lambda: langheads.ExportSettings(model="m", gguf="out.bin"), "--gguf must name a .gguf file"),
        (lambda: langheads.ExportSettings(model="m", gguf="o.gguf", type="q1"), "unknown GGUF type 'q1'"),
        (
            lambda: langheads.ExportSettings(model="m", gguf="o.gguf", llama_cpp=True),
            "--llama-cpp is a kind of --check",
        ),
    ],
)
def test_settings_refuse_like_the_cli(make, message):
    with pytest.raises(LangheadsError, match=message.replace("(", r"\(")):
        make()


def test_the_cli_says_what_the_settings_say(tmp_path, capsys):
    assert main(["export", "m", "--gguf", str(tmp_path / "out.bin")]) == 2
    assert "--gguf must name a .gguf file" in capsys.readouterr().err
    assert main(["evaluate", "--model", "m", "--languages", "en", "--mask", "0.1", "--out", str(tmp_path / "e")]) == 2
    assert "--mask goes with --qa" in capsys.readouterr().err


def test_the_scan_entry_writes_what_the_scan_command_writes(tiny_dirs, sample_data, tmp_path):
    common = dict(model=str(tiny_dirs["llama"]), data=str(sample_data), languages=["en", "fr"], bootstrap=30)
    result = langheads.scan(langheads.ScanSettings(**common), tmp_path / "lib", progress=False)
    assert (
        main(
            [
                "scan",
                "--model",
                common["model"],
                "--data",
                common["data"],
                "--languages",
                "en,fr",
                "--bootstrap",
                "30",
                "--quiet",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    lib, cli = (pd.read_csv(tmp_path / name / "scores.csv") for name in ("lib", "cli"))
    pd.testing.assert_frame_equal(lib, cli)
    assert (tmp_path / "lib" / "scores.csv").read_bytes() == (tmp_path / "cli" / "scores.csv").read_bytes()
    assert len(result.scores) == len(lib)
    with pytest.raises(LangheadsError, match="already exists"):  # claimed like the command's --out
        langheads.scan(langheads.ScanSettings(**common), tmp_path / "lib", progress=False)


def test_report_and_export_entries(tiny_dirs, sample_data, tmp_path):
    run = tmp_path / "run"
    langheads.scan_model(
        run, model=str(tiny_dirs["llama"]), data=str(sample_data), languages=["en", "fr"], bootstrap=20, progress=False
    )
    page = langheads.report(langheads.ReportSettings(run_dir=str(run)), tmp_path / "report")
    html = (page / "report.html").read_text()
    assert f"langheads report: {langheads.read_run(run).info['model']['id']}" in html and 'id="fig-kinds"' in html
    done = langheads.export(langheads.ExportSettings(model=str(tiny_dirs["llama"]), gguf=str(tmp_path / "m.gguf")))
    assert done["bytes"] == (tmp_path / "m.gguf").stat().st_size and done["type"] == "f32"
    assert (tmp_path / "m.gguf").read_bytes()[:4] == b"GGUF" and "transformers" not in done  # no --check: no gap
    with pytest.raises(LangheadsError, match="already exists"):
        langheads.export(langheads.ExportSettings(model=str(tiny_dirs["llama"]), gguf=str(tmp_path / "m.gguf")))
