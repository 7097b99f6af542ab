"""Bad input, as a hostile new user would give it: one stderr line, exit code 2, no traceback,
and nothing written or deleted anywhere under the test's folder. In-process (cli.main)."""

import pytest

from langheads.cli import main


def _tree(root):
    """Every path under root with its content's hash (folders: -1): nothing written, changed or deleted."""
    import hashlib

    return sorted(
        (str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else -1)
        for p in root.rglob("*")
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_dirs, sample_data):
    root = tmp_path_factory.mktemp("world")
    scan = root / "scan"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr",
                "--out",
                str(scan),
                "--bootstrap",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    (root / "not-a-run").mkdir()
    (root / "broken-run").mkdir()
    (root / "broken-run" / "run.json").write_text("{not json")
    (root / "file.txt").write_text("a file")
    import shutil

    broken = {}
    for name in ("unknown-type", "bad-config", "no-tokenizer", "cut-weights"):
        broken[name] = root / name
        shutil.copytree(tiny_dirs["llama"], broken[name])
    config = broken["unknown-type"] / "config.json"
    config.write_text(config.read_text().replace('"model_type": "llama"', '"model_type": "wizard"'))
    (broken["bad-config"] / "config.json").write_text("{broken")
    for f in broken["no-tokenizer"].glob("tokenizer*"):
        f.unlink()
    weights = next(broken["cut-weights"].glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    (root / "junk.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"junk" * 10)
    return {
        "root": root,
        "model": str(tiny_dirs["llama"]),
        "data": str(sample_data),
        "scan": str(scan),
        **{k: str(v) for k, v in broken.items()},
        **_hostile(root, tiny_dirs, sample_data, scan),
    }


def _hostile(root, tiny_dirs, sample_data, scan):
    """What the second hardening round tried: folders of other kinds, codes that are paths,
    custom code, a config that lies, damaged runs, hostile templates and caches."""
    import json
    import shutil

    assert (
        main(
            [
                "trim",
                "--model",
                str(tiny_dirs["llama"]),
                "--keep",
                "en",
                "--out",
                str(root / "model-folder"),
                "--data",
                str(sample_data),
            ]
        )
        == 0
    )
    remote = root / "remote-code"
    shutil.copytree(tiny_dirs["llama"], remote)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "evil.Evil"}}))
    (remote / "evil.py").write_text("open('RAN', 'w').write('custom code ran')\n")
    huge = root / "huge-config"
    shutil.copytree(tiny_dirs["llama"], huge)
    (huge / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 100_000}))
    for name, lang in (
        ("dotdot.jsonl", "../esc_trav"),
        ("absolute.jsonl", str(root / "abs")),
        ("tex.jsonl", "$\\frac$"),
    ):
        (root / name).write_text("".join(json.dumps({"lang": lang, "text": f"text {i}"}) + "\n" for i in range(6)))
    damaged = {}
    for name, edit in (
        ("relabelled", lambda t: t.replace(",fr,", ",de,")),
        ("layer99", _layer_99),
        ("string-layer", lambda t: t.replace("\n0,", "\nx,", 1)),
    ):
        damaged[name] = root / name
        shutil.copytree(scan, damaged[name])
        csv = damaged[name] / "scores.csv"
        csv.write_text(edit(csv.read_text()))
    heads99 = root / "heads99"
    shutil.copytree(scan, heads99)
    info = json.loads((heads99 / "run.json").read_text())
    info["heads"][0]["layer"] = 99
    (heads99 / "run.json").write_text(json.dumps(info))
    damaged["heads99"] = heads99
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr",
                "--component",
                "block",
                "--out",
                str(root / "blocks"),
                "--bootstrap",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    damaged["blocks"] = root / "blocks"
    (root / "broken.jinja").write_text("{% if %}")
    (root / "hostile.jinja").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    (root / "binary.jinja").write_bytes(b"\xff\xfe\x00\x81")
    (root / "binary-cache").write_bytes(bytes(range(256)))
    (root / "cache-folder").mkdir()
    (root / "d.gguf").mkdir()
    (root / "empty").mkdir()
    (root / "empty" / "en.txt").write_text("\n")
    (root / "latin").mkdir()
    (root / "latin" / "en.txt").write_bytes("café".encode("latin-1"))
    (root / "broken.jsonl").write_text('{"lang": "en", "text": "fine"}\nnot json\n')
    (root / "wrong.gguf").write_bytes(b"this is not a gguf file")
    (root / "squad.en.json").write_text(
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "c",
                                "qas": [{"id": "1", "question": "q", "answers": [{"text": {"nested": 1}}]}],
                            }
                        ]
                    }
                ]
            }
        )
    )
    from langheads import load_model
    from langheads.edit.pruning import save

    save(
        load_model(str(tiny_dirs["llama"])),
        root / "uneven",
        {},
        heads={0: [0, 1]},
        neurons={},
        blocks={2: {"attention"}},
    )
    damaged["uneven"] = root / "uneven"
    return {
        "model_folder": str(root / "model-folder"),
        "remote": str(remote),
        "huge": str(huge),
        **{k: str(v) for k, v in damaged.items()},
    }


def _layer_99(text):
    lines = text.splitlines()
    lines[1] = "99" + lines[1][lines[1].index(",") :]
    return "\n".join(lines) + "\n"


def judged(w, *extra):
    return [
        "evaluate",
        "--baseline",
        w["model"],
        "--languages",
        "en",
        "--qa",
        "cloze",
        "--mask",
        "0.1",
        "--judge",
        "http://127.0.0.1:9/v1",
        "--judge-model",
        "m",
        "--out",
        str(w["root"] / "e"),
        *extra,
    ]


def scan(w, *extra):
    return [
        "scan",
        "--model",
        w["model"],
        "--data",
        w["data"],
        "--languages",
        "en,fr",
        "--out",
        str(w["root"] / "new-run"),
        "--quiet",
        *extra,
    ]


def prune(w, *extra):
    return ["prune", "--scan", w["scan"], "--keep", "en", "--out", str(w["root"] / "new-model"), "--quiet", *extra]


def trim(w, *extra):
    return ["trim", "--model", w["model"], "--keep", "en", "--out", str(w["root"] / "new-model"), *extra]


CASES = [
    # (name, argv builder, a piece of the message)
    ("texts 0", lambda w: scan(w, "--texts", "0"), "--texts must be a whole number >= 2"),
    ("texts -1", lambda w: scan(w, "--texts", "-1"), "--texts must be"),
    ("texts 1: no interval", lambda w: scan(w, "--texts", "1"), "--texts must be a whole number >= 2"),
    ("texts not a number", lambda w: scan(w, "--texts", "abc"), "invalid int value"),
    ("max-tokens 0", lambda w: scan(w, "--max-tokens", "0"), "--max-tokens must be"),
    ("max-tokens -3", lambda w: scan(w, "--max-tokens", "-3"), "--max-tokens must be"),
    ("max-tokens 1", lambda w: scan(w, "--max-tokens", "1"), "--max-tokens must be a whole number >= 2"),
    ("threshold nan", lambda w: scan(w, "--threshold", "nan"), "--threshold must be a finite number"),
    ("threshold inf", lambda w: scan(w, "--threshold", "inf"), "--threshold must be a finite number"),
    ("threshold negative", lambda w: scan(w, "--threshold", "-0.1"), "--threshold must be"),
    ("agnostic-share 1.5", lambda w: scan(w, "--agnostic-share", "1.5"), "--agnostic-share must be"),
    ("agnostic-share 0", lambda w: scan(w, "--agnostic-share", "0"), "--agnostic-share must be"),
    ("bootstrap 0", lambda w: scan(w, "--bootstrap", "0"), "--bootstrap must be"),
    ("seed -1", lambda w: scan(w, "--seed", "-1"), "--seed must be"),
    ("chunk-tokens 0", lambda w: scan(w, "--chunk-tokens", "0"), "--chunk-tokens must be"),
    ("batch-tokens 0", lambda w: scan(w, "--batch-tokens", "0"), "--batch-tokens must be"),
    ("lahis-quantile 1", lambda w: scan(w, "--lahis-quantile", "1"), "--lahis-quantile must be"),
    ("lahis-quantile 0", lambda w: scan(w, "--lahis-quantile", "0"), "--lahis-quantile must be"),
    ("lahis-min-languages 0", lambda w: scan(w, "--lahis-min-languages", "0"), "--lahis-min-languages must be"),
    ("unknown method", lambda w: scan(w, "--method", "magic"), "unknown --method 'magic'"),
    ("unknown rule", lambda w: scan(w, "--rule", "vote"), "unknown --rule 'vote'"),
    ("unknown dtype", lambda w: scan(w, "--dtype", "float8"), "unknown --dtype 'float8'"),
    ("unknown device", lambda w: scan(w, "--device", "tpu"), "unknown device 'tpu'"),
    ("cuda without a GPU", lambda w: scan(w, "--device", "cuda"), "no CUDA device"),
    ("no languages", lambda w: scan(w, "--languages", ","), "--languages needs at least 1 language"),
    ("a language twice", lambda w: scan(w, "--languages", "en,fr,en"), "names a language twice"),
    ("unknown option", lambda w: scan(w, "--frobnicate"), "unrecognized arguments: --frobnicate"),
    (
        "missing model",
        lambda w: ["scan", "--model", str(w["root"] / "nope"), "--out", str(w["root"] / "x")],
        "unknown model",
    ),
    (
        "model path is a file",
        lambda w: ["scan", "--model", str(w["root"] / "file.txt"), "--out", str(w["root"] / "x")],
        "unknown model",
    ),
    (
        "missing data",
        lambda w: ["scan", "--model", w["model"], "--data", str(w["root"] / "nope"), "--out", str(w["root"] / "x")],
        "data not found",
    ),
    ("language without data", lambda w: scan(w, "--languages", "en,xx"), "no data for language 'xx'"),
    (
        "data of empty lines",
        lambda w: ["scan", "--model", w["model"], "--data", str(w["root"] / "empty"), "--out", str(w["root"] / "x")],
        "empty",
    ),
    (
        "data not UTF-8",
        lambda w: ["scan", "--model", w["model"], "--data", str(w["root"] / "latin"), "--out", str(w["root"] / "x")],
        "UTF-8",
    ),
    (
        "data line not JSON",
        lambda w: [
            "scan",
            "--model",
            w["model"],
            "--data",
            str(w["root"] / "broken.jsonl"),
            "--out",
            str(w["root"] / "x"),
        ],
        "broken.jsonl:2",
    ),
    ("info of a file that is not GGUF", lambda w: ["info", str(w["root"] / "wrong.gguf")], "wrong.gguf"),
    ("scan out exists", lambda w: scan(w)[:-3] + ["--out", w["scan"]], "already exists"),
    ("prune max-increase -0.5", lambda w: prune(w, "--max-increase", "-0.5"), "--max-increase must be"),
    ("prune max-increase nan", lambda w: prune(w, "--max-increase", "nan"), "--max-increase must be"),
    ("prune units -1", lambda w: prune(w, "--units", "-1"), "--units must be a whole number >= 1"),
    ("prune heads 0 (the alias)", lambda w: prune(w, "--heads", "0"), "--units must be"),
    ("prune keep nothing", lambda w: prune(w)[:4] + [","] + prune(w)[5:], "--keep needs at least 1"),
    ("prune max-vocab 0", lambda w: prune(w, "--trim-vocab", "--max-vocab", "0"), "--max-vocab must be"),
    ("prune dtype", lambda w: prune(w, "--dtype", "int4"), "unknown --dtype 'int4'"),
    (
        "prune missing scan",
        lambda w: ["prune", "--scan", str(w["root"] / "nope"), "--keep", "en", "--out", str(w["root"] / "m")],
        "not a finished langheads run",
    ),
    (
        "prune folder that is not a run",
        lambda w: ["prune", "--scan", str(w["root"] / "not-a-run"), "--keep", "en", "--out", str(w["root"] / "m")],
        "not a finished langheads run",
    ),
    (
        "prune damaged run",
        lambda w: ["prune", "--scan", str(w["root"] / "broken-run"), "--keep", "en", "--out", str(w["root"] / "m")],
        "damaged",
    ),
    ("prune language not scanned", lambda w: prune(w)[:4] + ["de"] + prune(w)[5:], "not in the scan: de"),
    (
        "prune out is a user's folder",
        lambda w: prune(w)[:6] + [str(w["root"] / "not-a-run"), "--overwrite"],
        "not a folder langheads wrote",
    ),
    ("trim max-vocab -5", lambda w: trim(w, "--max-vocab", "-5"), "--max-vocab must be"),
    ("trim rarity", lambda w: trim(w, "--rarity", "vibes"), "unknown --rarity 'vibes'"),
    ("trim rarity texts alone", lambda w: trim(w, "--rarity", "texts"), "needs --vocab-texts"),
    (
        "trim keep nothing",
        lambda w: ["trim", "--model", w["model"], "--keep", ",", "--out", str(w["root"] / "m")],
        "--keep needs at least 1",
    ),
    ("trim dtype", lambda w: trim(w, "--dtype", "x"), "unknown --dtype 'x'"),
    (
        "trim vocab-texts missing",
        lambda w: trim(w, "--max-vocab", "300", "--vocab-texts", str(w["root"] / "nope")),
        "data not found",
    ),
    (
        "trim out is a file's child",
        lambda w: ["trim", "--model", w["model"], "--keep", "en", "--out", str(w["root"] / "file.txt")],
        "already exists",
    ),
    (
        "export type",
        lambda w: ["export", w["model"], "--gguf", str(w["root"] / "m.gguf"), "--type", "q4"],
        "unknown GGUF type",
    ),
    ("export not .gguf", lambda w: ["export", w["model"], "--gguf", str(w["root"] / "m.bin")], "must name a .gguf"),
    (
        "export missing model",
        lambda w: ["export", str(w["root"] / "nope"), "--gguf", str(w["root"] / "m.gguf")],
        "unknown model",
    ),
    (
        "export over a file",
        lambda w: ["export", w["model"], "--gguf", str(w["root"] / "file.txt")],
        "must name a .gguf",
    ),
    (
        "export check unknown language",
        lambda w: ["export", w["model"], "--gguf", str(w["root"] / "m.gguf"), "--check", "xx"],
        "no data for language 'xx'",
    ),
    (
        "export llama-cpp without check",
        lambda w: ["export", w["model"], "--gguf", str(w["root"] / "m.gguf"), "--llama-cpp"],
        "give --check LANGS too",
    ),
    ("compare top 0", lambda w: ["compare", w["scan"], w["scan"], "--top", "0"], "--top must be"),
    ("compare missing run", lambda w: ["compare", w["scan"], str(w["root"] / "nope")], "not a finished langheads run"),
    ("info missing model", lambda w: ["info", str(w["root"] / "nope")], "unknown model"),
    ("languages missing data", lambda w: ["languages", "--data", str(w["root"] / "nope")], "data not found"),
    ("cache unknown action", lambda w: ["cache", "wipe"], "invalid choice: 'wipe'"),
    ("no command", lambda w: [], "the following arguments are required: command"),
    ("model of unknown type", lambda w: ["info", w["unknown-type"]], "cannot load model"),
    ("invalid config.json", lambda w: ["info", w["bad-config"]], "cannot load model"),
    ("model without tokenizer", lambda w: ["info", w["no-tokenizer"]], "cannot load model"),
    ("truncated safetensors", lambda w: ["info", w["cut-weights"]], "cannot load model"),
    ("GGUF magic then junk", lambda w: ["info", str(w["root"] / "junk.gguf")], "cannot load model"),
    ("out under a file", lambda w: scan(w)[:-3] + ["--out", str(w["root"] / "file.txt" / "run")], "is a file"),
    ("out is .", lambda w: scan(w)[:-3] + ["--out", "."], "already exists"),
    ("fdr 0", lambda w: scan(w, "--fdr", "0"), "--fdr must be"),
    ("fdr 1.5", lambda w: scan(w, "--fdr", "1.5"), "--fdr must be"),
    ("fdr with the lahis rule", lambda w: scan(w, "--fdr", "0.1", "--rule", "lahis"), "--fdr is a rule of its own"),
    ("unknown signal", lambda w: scan(w, "--signal", "vibes"), "unknown --signal 'vibes'; choose one of text, answer"),
    ("unknown load-in", lambda w: scan(w, "--load-in", "3bit"), "unknown --load-in '3bit'"),
    ("unknown device map", lambda w: scan(w, "--device-map", "everywhere"), "unknown --device-map"),
    ("answers from plain texts", lambda w: scan(w, "--signal", "answer"), "--signal answer needs question-answer"),
    (
        "chat template missing",
        lambda w: scan(w, "--signal", "answer", "--data", "cloze", "--chat-template", str(w["root"] / "nope.jinja")),
        "--chat-template: no such file",
    ),
    (
        "report of a non-run",
        lambda w: ["report", str(w["root"] / "not-a-run"), "--out", str(w["root"] / "r")],
        "not a finished langheads run",
    ),
    (
        "report prune of a run",
        lambda w: ["report", w["scan"], "--prune", w["scan"], "--out", str(w["root"] / "r")],
        "not a model folder written by `langheads prune`",
    ),
    (
        "evaluate mask without qa",
        lambda w: [
            "evaluate",
            "--model",
            w["model"],
            "--languages",
            "en",
            "--mask",
            "0.1",
            "--out",
            str(w["root"] / "e"),
        ],
        "--mask goes with --qa",
    ),
    (
        "evaluate bad mask",
        lambda w: [
            "evaluate",
            "--baseline",
            w["model"],
            "--languages",
            "en",
            "--qa",
            "cloze",
            "--mask",
            "a.b",
            "--out",
            str(w["root"] / "e"),
        ],
        "--mask takes layer.head",
    ),
    (
        "evaluate budget below 0",
        lambda w: [
            "evaluate",
            "--model",
            w["model"],
            "--languages",
            "en",
            "--budget",
            "-1",
            "--out",
            str(w["root"] / "e"),
        ],
        "--budget must be a share",
    ),
    (
        "evaluate keep not a code",
        lambda w: [
            "evaluate",
            "--model",
            w["model"],
            "--languages",
            "en",
            "--keep",
            "en,../x",
            "--out",
            str(w["root"] / "e"),
        ],
        "is not a language code",
    ),
    ("adaptive attribution", lambda w: scan(w, "--adaptive", "--method", "attribution"), "nothing to stop"),
    ("adaptive lahis", lambda w: scan(w, "--adaptive", "--rule", "lahis"), "--rule lahis needs every pair"),
    ("adaptive first look 1", lambda w: scan(w, "--adaptive", "--first-look", "1"), "--first-look"),
    ("adaptive early alpha 0", lambda w: scan(w, "--adaptive", "--early-alpha", "0"), "--early-alpha"),
    ("ranks 0", lambda w: scan(w, "--dry-run", "--ranks", "0"), "--ranks must be a whole number >= 1"),
    (
        "store under a file",
        lambda w: scan(w, "--store", str(w["root"] / "file.txt" / "units")),
        "is a file, so no folder can be made under it; choose another --store",
    ),
    (
        "lm-eval limit 0",
        lambda w: [
            "evaluate",
            "--baseline",
            w["model"],
            "--mask",
            "0.1",
            "--lm-eval",
            "x",
            "--limit",
            "0",
            "--out",
            str(w["root"] / "e"),
        ],
        "--limit must be a whole number",
    ),
    # --- second hardening round: data loss ---
    (
        "store over a model folder",
        lambda w: scan(w, "--store", w["model_folder"], "--overwrite"),
        "is a model folder langheads wrote, not a scan store",
    ),
    (
        "store over a finished run",
        lambda w: scan(w, "--store", w["scan"], "--overwrite"),
        "is a run folder langheads wrote, not a scan store",
    ),
    (
        "scan out over a model folder",
        lambda w: scan(w)[:-3] + ["--out", w["model_folder"], "--overwrite", "--quiet"],
        "is a model folder langheads wrote, not a run folder",
    ),
    (
        "trim out over a run",
        lambda w: trim(w)[:-2] + ["--out", w["scan"], "--overwrite"],
        "is a run folder langheads wrote, not a model folder",
    ),
    (
        "prune out over a run",
        lambda w: prune(w)[:6] + [w["scan"], "--overwrite", "--quiet"],
        "is a run folder langheads wrote, not a model folder",
    ),
    (
        "report out over a run",
        lambda w: ["report", w["scan"], "--out", w["scan"], "--overwrite"],
        "is a run folder langheads wrote, not a report folder",
    ),
    (
        "evaluate out over a model",
        lambda w: ["evaluate", "--model", w["model"], "--languages", "en", "--out", w["model_folder"], "--overwrite"],
        "is a model folder langheads wrote, not an evaluation folder",
    ),
    # --- security ---
    ("lang ../ in JSONL", lambda w: scan(w, "--data", str(w["root"] / "dotdot.jsonl")), "is not a language code"),
    (
        "absolute lang in JSONL",
        lambda w: scan(w, "--data", str(w["root"] / "absolute.jsonl")),
        "is not a language code",
    ),
    ("--languages with a path", lambda w: scan(w, "--languages", "en,../r_base.units/en"), "is not a language code"),
    ("--keep with a path", lambda w: trim(w)[:4] + ["../x"] + trim(w)[5:], "is not a language code"),
    ("language $\\frac$", lambda w: scan(w, "--data", str(w["root"] / "tex.jsonl")), "is not a language code"),
    ("model with custom code", lambda w: ["info", w["remote"]], "asks to run the model's own code (auto_map)"),
    (
        "scan of a model with custom code",
        lambda w: scan(w)[:1] + ["--model", w["remote"]] + scan(w)[3:],
        "langheads never runs code from a model folder",
    ),
    # --- wrong answers, crashes after expensive work ---
    ("compare a relabelled run", lambda w: ["compare", w["scan"], w["relabelled"]], "are not the run's en,fr"),
    (
        "report a layer 99 row",
        lambda w: ["report", w["layer99"], "--out", str(w["root"] / "r")],
        "outside the recorded",
    ),
    (
        "report a run.json layer 99",
        lambda w: ["report", w["heads99"], "--out", str(w["root"] / "r")],
        "its units are not the recorded",
    ),
    (
        "report --compare heads with blocks",
        lambda w: ["report", w["scan"], "--compare", w["blocks"], "--out", str(w["root"] / "r")],
        "--compare: the two runs scanned different units",
    ),
    (
        "scan an uneven pruning",
        lambda w: scan(w)[:1] + ["--model", w["uneven"]] + scan(w)[3:],
        "a scan reads one layout for every layer",
    ),
    (
        "heal --lora 10000000",
        lambda w: ["heal", w["uneven"], "--baseline", w["model"], "--lora", "10000000", "--out", str(w["root"] / "h")],
        "--lora must be at most 4,096, not 10,000,000",
    ),
    (
        "heal --new-tokens 10**9",
        lambda w: [
            "heal",
            w["uneven"],
            "--baseline",
            w["model"],
            "--new-tokens",
            "1000000000",
            "--out",
            str(w["root"] / "h"),
        ],
        "--new-tokens must be at most 32,768",
    ),
    (
        "report a string layer",
        lambda w: ["report", w["string-layer"], "--out", str(w["root"] / "r")],
        "column layer holds something other than whole numbers",
    ),
    (
        "report a relabelled run",
        lambda w: ["report", w["relabelled"], "--out", str(w["root"] / "r")],
        "are not the run's en,fr",
    ),
    (
        "export K-quant type unknown",
        lambda w: ["export", w["model"], "--gguf", str(w["root"] / "m.gguf"), "--type", "q3_k_xl"],
        "unknown GGUF type 'q3_k_xl'",
    ),
    (
        "export unknown pre-tokenizer",
        lambda w: ["export", w["model"], "--gguf", str(w["root"] / "m.gguf"), "--pre", "magic"],
        "not a pre-tokenizer name langheads writes",
    ),
    (
        "export over a folder",
        lambda w: ["export", w["model"], "--gguf", str(w["root"] / "d.gguf"), "--overwrite"],
        "is a folder; give a file name",
    ),
    ("config claiming 100,000 layers", lambda w: ["info", w["huge"]], "config.json says 100,000 layers"),
    (
        "chat template broken",
        lambda w: scan(w, "--signal", "answer", "--data", "cloze", "--chat-template", str(w["root"] / "broken.jinja")),
        "does not render: TemplateSyntaxError",
    ),
    (
        "chat template hostile",
        lambda w: scan(w, "--signal", "answer", "--data", "cloze", "--chat-template", str(w["root"] / "hostile.jinja")),
        "jinja2's sandbox forbids",
    ),
    (
        "chat template binary",
        lambda w: scan(w, "--signal", "answer", "--data", "cloze", "--chat-template", str(w["root"] / "binary.jinja")),
        "not UTF-8 text",
    ),
    (
        "SQuAD answer that is an object",
        lambda w: scan(w, "--signal", "answer", "--data", str(w["root"] / "squad.en.json"), "--languages", "en"),
        "not SQuAD-format JSON",
    ),
    (
        "judge cache of binary data",
        lambda w: judged(w, "--judge-cache", str(w["root"] / "binary-cache")),
        "is not a judge cache (not UTF-8 text)",
    ),
    (
        "judge cache is a folder",
        lambda w: judged(w, "--judge-cache", str(w["root"] / "cache-folder")),
        "is a folder; give a file",
    ),
    (
        "judge without model name",
        lambda w: [
            "evaluate",
            "--baseline",
            w["model"],
            "--languages",
            "en",
            "--qa",
            "cloze",
            "--mask",
            "0.1",
            "--judge",
            "http://127.0.0.1:9/v1",
            "--out",
            str(w["root"] / "e"),
        ],
        "--judge needs --judge-model",
    ),
]


@pytest.mark.parametrize("name,build,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(world, name, build, message, capsys):
    before = _tree(world["root"])
    code = main(build(world))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert _tree(world["root"]) == before, "a refused command wrote or deleted something"


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    from langheads import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_languages", interrupted)
    assert cli.main(["languages"]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0]
