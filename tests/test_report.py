"""The report: typed readers and the page itself in a real browser (Debian's
chromium and chromium-driver, driven by Selenium)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from langheads.cli import main
from langheads.runs import read_eval, read_pruned, read_run

CHROMEDRIVER = Path("/usr/bin/chromedriver")
FIGURES = ["kinds", "heatmap", "similarity", "top_heads", "prune_curve", "prune_removed", "eval", "compare"]


@pytest.fixture(scope="module")
def report_inputs(tiny_dirs, sample_data, tmp_path_factory):
    """An exact and an attribution run, a pruned model and its evaluation, from a tiny model."""
    root = tmp_path_factory.mktemp("report")
    model = str(tiny_dirs["llama"])
    common = ["--model", model, "--data", str(sample_data), "--languages", "en,fr,hi", "--bootstrap", "200", "--quiet"]
    assert main(["scan", *common, "--out", str(root / "exact")]) == 0
    assert main(["scan", *common, "--out", str(root / "attribution"), "--method", "attribution"]) == 0
    assert (
        main(
            [
                "prune",
                "--scan",
                str(root / "exact"),
                "--keep",
                "en",
                "--heads",
                "3",
                "--out",
                str(root / "pruned"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(root / "pruned"),
                "--baseline",
                model,
                "--languages",
                "en,fr",
                "--data",
                str(sample_data),
                "--out",
                str(root / "eval"),
                "--prompts",
                "2",
                "--new-tokens",
                "6",
            ]
        )
        == 0
    )
    report = root / "report"
    assert (
        main(
            [
                "report",
                str(root / "exact"),
                "--prune",
                str(root / "pruned"),
                "--eval",
                str(root / "eval"),
                "--compare",
                str(root / "attribution"),
                "--out",
                str(report),
            ]
        )
        == 0
    )
    return root, report


def test_report_files_and_readers(report_inputs):
    root, report = report_inputs
    page = (report / "report.html").read_text()
    for name in FIGURES:
        assert f'id="fig-{name}"' in page
        assert (report / "figures" / f"{name}.png").stat().st_size > 1000
        assert (report / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page and "<script" not in page
    run = read_run(root / "exact")
    assert run.info["format_version"] == 4 and run.languages == ["en", "fr", "hi"]
    assert set(run.info["sample"]) == {"en", "fr", "hi"} and run.info["sample"]["en"]["texts"] == run.texts("en")
    pruned, ev = read_pruned(root / "pruned"), read_eval(root / "eval")
    assert len(pruned.removed) == 3 and pruned.kept == ["en"] and list(ev.table["language"]) == ["en", "fr"]
    for folder in ("exact", "pruned", "eval", "report"):
        assert (root / folder / ".langheads").is_file()
    assert json.loads((root / "eval" / "eval.json").read_text())["format_version"] == 1


def test_a_version_2_run_reads_its_delta_nll_as_score(report_inputs, tmp_path):
    root, _ = report_inputs
    old = tmp_path / "v2"
    shutil.copytree(root / "exact", old)
    info = json.loads((old / "run.json").read_text())
    (old / "run.json").unlink()  # a run from before format 4 holds its record as heads.json
    (old / "heads.json").write_text(json.dumps({**info, "format_version": 2}))
    csv = old / "scores.csv"
    csv.write_text(csv.read_text().replace(",score,", ",delta_nll,", 1))
    then, now = read_run(old).scores, read_run(root / "exact").scores
    assert "delta_nll" not in then.columns and then.score.tolist() == now.score.tolist()


def test_report_refuses_what_it_cannot_read(report_inputs, tmp_path, capsys):
    root, _ = report_inputs
    assert main(["report", str(root / "eval"), "--out", str(tmp_path / "r")]) == 2
    assert "not a finished langheads run (no run.json)" in capsys.readouterr().err
    assert main(["report", str(root / "exact"), "--prune", str(root / "exact"), "--out", str(tmp_path / "r")]) == 2
    assert "not a model folder written by `langheads prune`" in capsys.readouterr().err
    assert main(["report", str(root / "exact"), "--eval", str(root / "exact"), "--out", str(tmp_path / "r")]) == 2
    assert "not an evaluation folder (no eval.json)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(
    not CHROMEDRIVER.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_report_in_a_real_browser(report_inputs, tmp_path):
    """Opens the page in headless Chromium: no console error, no network request, every
    figure drawn and not blank, the tables hold the run's numbers."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    root, report = report_inputs
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get((report / "report.html").resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        assert all(u.startswith(("file:", "data:")) for u in urls), urls
        for name in FIGURES:
            img = driver.find_element(By.CSS_SELECTOR, f"#fig-{name} img")
            width, height, colours = driver.execute_script(
                """const img = arguments[0]; const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                const d = g.getImageData(0, 0, c.width, c.height).data; const seen = new Set();
                for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
                return [img.naturalWidth, img.naturalHeight, seen.size];""",
                img,
            )
            assert width > 0 and height > 0, name
            assert colours > 1, f"{name} is blank"
            assert driver.find_element(By.CSS_SELECTOR, f"#fig-{name} figcaption").text.strip()
        info = json.loads((root / "exact" / "run.json").read_text())
        counts = driver.find_element(By.ID, "table-counts").text
        for kind, n in info["counts"].items():
            assert f"{kind} {n}" in counts
        run = read_run(root / "exact")
        best = run.scores[run.scores.language == "fr"].nlargest(1, "rel_increase").iloc[0]
        top = driver.find_element(By.ID, "table-top_heads").text
        assert f"fr L{best['layer']}H{best['head']} {best['kind']} {100 * best['rel_increase']:+.2f}%" in top
        ev = read_eval(root / "eval").table
        assert f"{100 * ev.iloc[0]['per_byte_rel_change']:+.2f}%" in driver.find_element(By.ID, "table-eval").text
        driver.save_screenshot(str(tmp_path / "report.png"))
        shot = Path(os.environ.get("LANGHEADS_SCREENSHOT", tmp_path / "report.png"))
        if shot != tmp_path / "report.png":
            shutil.copy(tmp_path / "report.png", shot)
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        driver.quit()
