"""GGUF export: read back by transformers' own GGUF reader and by llama.cpp, for the original,
trimmed and uniformly pruned models; refused with the reason where llama.cpp cannot run it."""

import pytest

from langheads import load_model, synthetic
from langheads.archs import adapter_for
from langheads.cli import main
from langheads.deploy import export
from langheads.edit import pruning, vocab
from langheads.errors import LangheadsError

TEXTS = synthetic.TRAINING_TEXT["en"] + synthetic.TRAINING_TEXT["hi"] + ["Numbers 1, 22 and 333!"]
# Shaped like Gemma 3 as transformers' GGUF reader assumes it: attention scaled by 1/sqrt(256),
# five sliding layers then a full one.
GEMMA3 = dict(
    num_hidden_layers=6,
    head_dim=256,
    query_pre_attn_scalar=256,
    layer_types=["sliding_attention"] * 5 + ["full_attention"],
)


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Folders: the original tiny Gemma 3, trimmed to en+hi, and pruned uniformly (one query
    head from each KV group of every layer), then trimmed."""
    root = tmp_path_factory.mktemp("export")
    orig = synthetic.save_tiny("gemma3", root / "orig", tokenizer="byte_fallback", **GEMMA3)
    loaded = load_model(str(orig))
    choice = vocab.choose_vocab(loaded.tokenizer, ["en", "hi"], synthetic.TRAINING_TEXT)
    assert (
        main(["trim", "--model", str(orig), "--keep", "en,hi", "--out", str(root / "trim"), "--data", str(_data(root))])
        == 0
    )
    removed = [(layer, head) for layer in range(6) for head in (1, 3)]
    pruning.save(loaded, root / "uniform", {}, heads=removed, uniform=True, vocab_choice=choice)
    return {name: root / name for name in ("orig", "trim", "uniform")}


def _data(root):
    import json

    path = root / "data.jsonl"
    path.write_text(
        "".join(
            json.dumps({"lang": lang, "id": str(i), "text": t}, ensure_ascii=False) + "\n"
            for lang, lines in synthetic.TRAINING_TEXT.items()
            for i, t in enumerate(lines * 8)
        ),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("name", ["orig", "trim", "uniform"])
def test_transformers_reads_back_the_same_model(variants, name, tmp_path):
    loaded = load_model(str(variants[name]))
    gaps = {}
    for kind in export.OWN_TYPES:
        path = export.export_gguf(loaded, tmp_path / f"m-{kind}.gguf", kind)
        gaps[kind] = export.transformers_gap(loaded, path, TEXTS)
        assert gaps[kind]["same_tokens"]
    assert gaps["f32"]["max_rel_logit_gap"] <= 1e-5
    assert gaps["f16"]["max_rel_logit_gap"] < 1e-2 and gaps["q8_0"]["max_rel_logit_gap"] < 5e-2
    assert (tmp_path / "m-q8_0.gguf").stat().st_size < (tmp_path / "m-f32.gguf").stat().st_size / 2


@pytest.mark.parametrize("name", ["orig", "trim", "uniform"])
def test_llama_cpp_runs_the_export(variants, name, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    loaded = load_model(str(variants[name]))
    path = export.export_gguf(loaded, tmp_path / "m.gguf", "f32")
    gap = export.llama_cpp_gap(loaded, path, TEXTS)
    assert gap["same_tokens"] == len(TEXTS)
    assert gap["max_logprob_gap"] < 2e-3


def test_llama_family_runs_in_llama_cpp(tmp_path):
    """Llama's q/k rows are permuted for llama.cpp's rotary layout; attention biases are kept."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    loaded = load_model(str(synthetic.save_tiny("llama", tmp_path / "l", tokenizer="byte_fallback")))
    gap = export.llama_cpp_gap(loaded, export.export_gguf(loaded, tmp_path / "l.gguf"), TEXTS)
    assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < 2e-3


def test_what_llama_cpp_cannot_run_is_refused(tmp_path, capsys):
    folder = synthetic.save_tiny("gemma3", tmp_path / "g", tokenizer="byte_fallback", **GEMMA3)
    loaded = load_model(str(folder))
    pruning.save(loaded, tmp_path / "uneven", {}, heads=[(0, 0), (0, 1)])  # layer 0 loses a KV group
    assert main(["export", str(tmp_path / "uneven"), "--gguf", str(tmp_path / "u.gguf")]) == 2
    assert "different numbers of heads" in capsys.readouterr().err
    loaded = load_model(str(folder))
    pruning.save(loaded, tmp_path / "empty", {}, heads=[(2, h) for h in range(4)])
    with pytest.raises(LangheadsError, match="no attention heads left"):
        export.export_gguf(load_model(str(tmp_path / "empty")), tmp_path / "e.gguf")
    import json

    folder_b = synthetic.save_tiny("gemma3", tmp_path / "b", tokenizer="byte_level", **GEMMA3)
    data = json.loads((folder_b / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, data["pre_tokenizer"]]}
    (folder_b / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(LangheadsError, match="give --pre NAME"):  # a split llama.cpp is not known to make
        export.export_gguf(load_model(str(folder_b)), tmp_path / "b.gguf")
    with pytest.raises(LangheadsError, match="GGUF export supports .*gemma3.*, not xglm"):
        export.export_gguf(load_model(str(synthetic.save_tiny("xglm", tmp_path / "x"))), tmp_path / "x.gguf")
    for argv, message in [
        (["export", str(folder), "--gguf", str(tmp_path / "x.bin")], "must name a .gguf"),
        (["export", str(tmp_path / "nowhere"), "--gguf", str(tmp_path / "x.gguf")], "unknown model"),
        (["export", str(folder), "--gguf", str(tmp_path / "x.gguf"), "--type", "q4"], "unknown GGUF type"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*.gguf*"))


def test_export_cli_writes_and_checks(variants, tmp_path, capsys):
    out = tmp_path / "t.gguf"
    assert main(["export", str(variants["trim"]), "--gguf", str(out), "--type", "q8_0"]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    assert main(["export", str(variants["trim"]), "--gguf", str(out)]) == 2  # exists, no --overwrite
    import gguf

    reader = gguf.GGUFReader(str(out))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == len(load_model(str(variants["trim"])).tokenizer)
    description = reader.fields["general.description"].contents()
    assert description.startswith("langheads: vocabulary 740 -> ") and "(en,hi)" in description


@pytest.mark.slow
def test_default_model_trimmed_runs_in_llama_cpp(default_model, tmp_path):
    """Gemma 3 270M kept to en+hi, exported as f32 GGUF: llama.cpp tokenizes the report texts as
    we do and its next-token log-probabilities agree with ours."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    import copy

    from langheads.corpus import load_corpus

    corpus = load_corpus()
    exact = vocab.choose_vocab(default_model.tokenizer, ["en", "hi"], vocab.decision_texts(corpus, ["en", "hi"]))
    small = copy.copy(default_model)
    small.model = copy.deepcopy(default_model.model)
    vocab.trim_model_(small.model, exact.kept_ids)
    small.tokenizer = vocab.trimmed_tokenizer(default_model.tokenizer, exact.kept_ids)
    path = export.export_gguf(small, tmp_path / "trimmed.gguf", "f32")
    texts = [t.text for lang in ("en", "hi") for t in corpus.texts(lang, "report")[:2]]
    gap = export.llama_cpp_gap(small, path, texts)
    assert gap["same_tokens"] == len(texts) and gap["max_logprob_gap"] < 0.05


def test_export_check_runs_both_readers(variants, tmp_path, capsys):
    import importlib.util

    extra = ["--llama-cpp"] if importlib.util.find_spec("llama_cpp") else []
    assert (
        main(
            [
                "export",
                str(variants["trim"]),
                "--gguf",
                str(tmp_path / "c.gguf"),
                "--check",
                "en,hi",
                "--data",
                str(variants["trim"].parent / "data.jsonl"),
                *extra,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "transformers' GGUF reader: largest logit gap" in out and "texts: True" in out
    if extra:
        assert "llama.cpp: next-token log-probability gap" in out


def test_an_export_gets_the_usual_mode_and_a_folder_is_never_its_target(variants, tmp_path, monkeypatch, capsys):
    """The temporary file is private (mkstemp); the .gguf the user gets is not. A folder named
    like the target is refused before any work, --overwrite or not."""
    import os

    mask = os.umask(0o022)
    try:
        assert main(["export", str(variants["orig"]), "--gguf", str(tmp_path / "m.gguf"), "--type", "f16"]) == 0
    finally:
        os.umask(mask)
    assert (tmp_path / "m.gguf").stat().st_mode & 0o777 == 0o644
    (tmp_path / "d.gguf").mkdir()
    assert main(["export", str(variants["orig"]), "--gguf", str(tmp_path / "d.gguf"), "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err and not any((tmp_path / "d.gguf").iterdir())


def test_trimming_a_gguf_langheads_exported_is_refused_in_one_line(variants, tmp_path, monkeypatch, capsys):
    """transformers' GGUF reader adds Gemma's <mask> to a file that has none: 741 tokens over
    740 embedding rows. Said before anything is trimmed, not an IndexError."""
    monkeypatch.setenv("LANGHEADS_CACHE", str(tmp_path / "cache"))
    path = export.export_gguf(load_model(str(variants["orig"])), tmp_path / "m.gguf")
    capsys.readouterr()
    assert main(["trim", "--model", str(path), "--keep", "en", "--out", str(tmp_path / "t")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "Converting" not in line]  # its bar
    assert len(err) == 1 and "741 tokens and the model 740 embedding rows (no weights for <mask>)" in err[0]
    assert not (tmp_path / "t").exists()


# Every family that exports, with the tokenizer style its real models use (and a byte-fallback
# one where they do too), and the sizes llama.cpp's graph for it assumes.
FAMILY_MATRIX = [
    ("llama", "byte_fallback", {}),
    ("llama", "llama3", {}),
    ("mistral", "byte_fallback", {}),
    ("qwen2", "qwen2", {}),
    ("qwen3", "qwen2", {}),
    ("gemma", "byte_fallback", {}),
    ("gemma2", "byte_fallback", dict(query_pre_attn_scalar=16)),
    ("gemma3", "byte_fallback", GEMMA3),
    ("cohere", "byte_level", {}),
    ("cohere2", "byte_level", {}),
    ("phi3", "byte_fallback", dict(specials=("<s>", "</s>", "<|endoftext|>"))),
    ("olmo2", "llama3", {}),
    ("granite", "byte_level", {}),
    ("smollm3", "llama3", dict(num_hidden_layers=4, no_rope_layers=[1, 1, 1, 0])),
    ("stablelm", "byte_level", {}),
    ("mixtral", "byte_fallback", {}),
    ("qwen3_moe", "qwen2", dict(norm_topk_prob=True)),
    ("bloom", "byte_level", {}),
    ("falcon", "byte_level", dict(bias=False)),
    ("falcon_mqa", "byte_level", dict(bias=False)),
    ("gpt2", "byte_level", {}),
]


@pytest.mark.parametrize("arch,style,sizes", FAMILY_MATRIX, ids=[f"{a}-{s}" for a, s, _ in FAMILY_MATRIX])
def test_every_exported_family_runs_in_llama_cpp(arch, style, sizes, tmp_path):
    """Same token ids as transformers on kept-language text, next-token log-probabilities within
    2e-3 of our float32 model (f32 export) and 2e-2 (f16); for byte-level BPE the trimmed
    tokenizer too, which llama.cpp's own converter cannot name."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    folder = synthetic.save_tiny(arch, tmp_path / arch, tokenizer=style, **sizes)
    loaded = load_model(str(folder))
    for kind, bound in (("f32", 2e-3), ("f16", 2e-2)):
        gap = export.llama_cpp_gap(loaded, export.export_gguf(loaded, tmp_path / f"{kind}.gguf", kind), TEXTS)
        assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < bound, (kind, gap)
    assert (
        main(
            [
                "trim",
                "--model",
                str(folder),
                "--keep",
                "en,hi",
                "--out",
                str(tmp_path / "trim"),
                "--data",
                str(_data(tmp_path)),
            ]
        )
        == 0
    )
    trimmed = load_model(str(tmp_path / "trim"))
    assert len(trimmed.tokenizer) < len(loaded.tokenizer)
    gap = export.llama_cpp_gap(trimmed, export.export_gguf(trimmed, tmp_path / "t.gguf"), TEXTS)
    assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < 2e-3, gap
    layers = loaded.model.config.get_text_config().num_hidden_layers
    try:  # one query head from each KV group of every layer (or heads 1 and 3 where heads are their own group)
        pruning.save(
            loaded, tmp_path / "u", {}, heads=[(layer, h) for layer in range(layers) for h in (1, 3)], uniform=True
        )
    except LangheadsError as e:  # the config cannot say the new head count (GPT-2: n_embd / n_head)
        assert "head" in str(e)
        return
    uniform = load_model(str(tmp_path / "u"))
    family = adapter_for(uniform.model).gguf
    if not family.narrow_q and not family.deci:  # its graph sizes q by the hidden size: one line
        with pytest.raises(LangheadsError, match="sizes the query projection by the hidden size"):
            export.export_gguf(uniform, tmp_path / "u.gguf")
        return
    gap = export.llama_cpp_gap(uniform, export.export_gguf(uniform, tmp_path / "u.gguf"), TEXTS)
    assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < 2e-3, gap


def test_quantized_exports_run_in_llama_cpp(variants, tmp_path):
    """q8_0 (ours) and the K-quants llama.cpp's own quantizer makes from our f32 file run in
    llama.cpp (on CPUs with AMX a native build crashed on every quantized Gemma 3 file), each
    smaller than the last and within a stated gap."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    import os

    loaded = load_model(str(variants["orig"]))
    sizes = {}
    for kind, bound in (("q8_0", 0.05), ("q6_k", 0.1), ("q4_k_m", 0.3), ("q4_0", 0.4)):
        path = export.export_gguf(loaded, tmp_path / f"{kind}.gguf", kind)
        gap = export.llama_cpp_gap(loaded, path, TEXTS)
        assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < bound, (kind, gap)
        sizes[kind] = os.path.getsize(path)
    assert sizes["q8_0"] > sizes["q6_k"] > sizes["q4_k_m"] > sizes["q4_0"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_pre_tokenizer_is_named_from_what_trimming_keeps(tmp_path):
    import json

    from langheads.deploy.gguf_vocab import pre_from_pattern, pre_tokenizer_name
    from langheads.edit.vocab import TokenizerFile

    names = {
        style: pre_from_pattern(json.loads(synthetic.trained_tokenizer(style).backend_tokenizer.to_str()))
        for style in ("byte_level", "llama3", "qwen2")
    }
    assert names == {"byte_level": "gpt-2", "llama3": "llama-bpe", "qwen2": "qwen2"}
    tf = TokenizerFile.of(synthetic.trained_tokenizer("byte_level"))
    assert pre_tokenizer_name(tf, {"gpt-2": "x"}, []) == "x" and pre_tokenizer_name(tf, {}, [], "qwen2") == "qwen2"
    tf.data["pre_tokenizer"] = {"type": "Whitespace"}
    with pytest.raises(LangheadsError, match="give --pre NAME"):
        pre_tokenizer_name(tf, {}, [])
    with pytest.raises(LangheadsError, match="not a pre-tokenizer name"):
        pre_tokenizer_name(tf, {}, [], "magic")
    # a model that came from a GGUF file keeps that file's name, whatever its pattern says
    qwen = load_model(str(synthetic.save_tiny("qwen2", tmp_path / "q", tokenizer="byte_level")))
    source = export.export_gguf(qwen, tmp_path / "q.gguf", pre="qwen2")
    assert pre_tokenizer_name(tf, {}, [str(tmp_path / "missing.gguf"), str(source)]) == "qwen2"


@pytest.mark.slow
def test_the_default_models_own_q4_k_m_runs_in_llama_cpp(default_model):
    """The package's own Q4_K_M file decodes in llama.cpp as the extra builds it (a native build
    on a CPU with AMX crashed here)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    from langheads.builtin import BUILTINS

    path = BUILTINS["default"].path()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=2, verbose=False)
    out = llm("All human beings are born free", max_tokens=8, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1
    assert b"AMX" not in llama_cpp.llama_print_system_info()


def test_uneven_llama_prunings_run_in_llama_cpp_through_deci(tmp_path, capsys):
    """Layers with different head counts, and one with no attention at all: llama.cpp's deci graph
    reads one count per layer (0 = no attention). A removed layer that would still add a bias is
    refused in one line."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    import gguf

    folder = synthetic.save_tiny("llama", tmp_path / "l", tokenizer="byte_fallback", attention_bias=False)
    pruning.save(
        load_model(str(folder)), tmp_path / "uneven", {}, heads=[(0, 0), (0, 1), (1, 2)] + [(2, h) for h in range(4)]
    )
    pruned = load_model(str(tmp_path / "uneven"))
    assert export.layer_heads(pruned.model) == [(2, 1), (4, 2), None]
    path = export.export_gguf(pruned, tmp_path / "u.gguf", "f32")
    assert gguf.GGUFReader(str(path)).fields["general.architecture"].contents() == "deci"
    gap = export.llama_cpp_gap(pruned, path, TEXTS)
    assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < 2e-3, gap
    biased = synthetic.save_tiny("llama", tmp_path / "b", tokenizer="byte_fallback", attention_bias=True)
    pruning.save(load_model(str(biased)), tmp_path / "empty", {}, heads=[(2, h) for h in range(4)])
    capsys.readouterr()  # save_pruned's progress bar
    assert main(["export", str(tmp_path / "empty"), "--gguf", str(tmp_path / "e.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "still adds the output projection's bias" in err[0] and not (tmp_path / "e.gguf").exists()


# Families whose layers are Llama's up to biases, which llama.cpp's deci graph runs with per-layer
# shapes (src/models/deci.cpp; q/k/v biases load through create_tensor_qkv): tokenizer style, sizes.
DECI_FAMILIES = [
    ("llama", "byte_fallback", dict(attention_bias=False)),
    ("mistral", "byte_fallback", {}),
    ("qwen2", "qwen2", {}),
]


@pytest.mark.parametrize("family,style,sizes", DECI_FAMILIES, ids=[f[0] for f in DECI_FAMILIES])
def test_every_deci_family_runs_uneven_shapes_in_llama_cpp(family, style, sizes, tmp_path):
    """Uneven heads, a layer with no attention, uneven MLP widths and a layer with no MLP, in one
    model: llama.cpp's deci graph gives transformers' next-token log-probabilities (biases, the
    rotary permutation and the tied output included)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    import gguf

    from langheads.edit.pruning import save

    folder = synthetic.save_tiny(family, tmp_path / "m", tokenizer=style, num_hidden_layers=4, **sizes)
    loaded = load_model(str(folder))
    heads = {0: [0, 1], 1: [2]}
    save(loaded, tmp_path / "cut", {}, heads=heads, neurons={2: list(range(40))}, blocks={1: {"mlp"}, 3: {"attention"}})
    pruned = load_model(str(tmp_path / "cut"))
    counts, widths = export.layer_heads(pruned.model), export.layer_widths(pruned.model)
    assert counts[3] is None and counts[0] != counts[2] and widths[1] == 0 and widths[2] == widths[0] - 40
    path = export.export_gguf(pruned, tmp_path / "c.gguf", "f32", pre="qwen2" if style == "qwen2" else None)
    assert gguf.GGUFReader(str(path)).fields["general.architecture"].contents() == "deci"
    gap = export.llama_cpp_gap(pruned, path, TEXTS)
    assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < 2e-3, gap


def test_pruned_mlps_and_layers_run_in_llama_cpp(tmp_path, capsys):
    """Uneven MLP widths and a layer that lost its MLP (but kept attention) run through deci
    (the latter with a zero stand-in MLP: deci skips a layer's residual add without one); a
    Gemma 3 with a layer removed and one MLP width runs on llama.cpp's own gemma3 graph; uneven
    widths on Gemma 3 are refused in one line."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    import gguf

    from langheads.edit.pruning import save

    folder = synthetic.save_tiny("llama", tmp_path / "l", tokenizer="byte_fallback", attention_bias=False)
    save(load_model(str(folder)), tmp_path / "cut", {}, heads={}, neurons={2: list(range(40))}, blocks={1: {"mlp"}})
    pruned = load_model(str(tmp_path / "cut"))
    assert export.layer_widths(pruned.model) == [96, 0, 56]
    path = export.export_gguf(pruned, tmp_path / "c.gguf", "f32")
    fields = gguf.GGUFReader(str(path)).fields
    assert fields["general.architecture"].contents() == "deci"
    assert fields["deci.feed_forward_length"].contents() == [96, export.STAND_IN, 56]
    gap = export.llama_cpp_gap(pruned, path, TEXTS)
    assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < 2e-3, gap

    gemma = synthetic.save_tiny("gemma3", tmp_path / "g", tokenizer="byte_fallback")
    even = {l: list(range(l, l + 32)) for l in range(4)}
    save(load_model(str(gemma)), tmp_path / "even", {}, heads={}, neurons=even, blocks={1: {"attention", "mlp"}})
    pruned = load_model(str(tmp_path / "even"))
    path = export.export_gguf(pruned, tmp_path / "e.gguf", "f32")
    fields = gguf.GGUFReader(str(path)).fields
    assert fields["general.architecture"].contents() == "gemma3" and fields["gemma3.block_count"].contents() == 3
    gap = export.llama_cpp_gap(pruned, path, TEXTS)
    assert gap["same_tokens"] == len(TEXTS) and gap["max_logprob_gap"] < 2e-3, gap

    save(load_model(str(gemma)), tmp_path / "uneven", {}, heads={}, neurons={2: list(range(32))}, blocks={})
    capsys.readouterr()
    assert main(["export", str(tmp_path / "uneven"), "--gguf", str(tmp_path / "u.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layers keep different MLP widths" in err[0] and not (tmp_path / "u.gguf").exists()


def test_ctrl_c_during_quantization_keeps_the_previous_file(tmp_path):
    """llama.cpp's quantizer runs in a child process, so Ctrl-C reaches langheads at once: the
    quantizer stops, its half-written file goes, the file already at the path stays (it used to
    finish, replace it and exit 0)."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "m.gguf"
    target.write_bytes(b"the user's previous file")
    program = (
        "import sys, time\n"
        "from langheads.deploy import export\n"
        'export._QUANTIZE = \'import time; open(__import__("sys").argv[2], "wb").write(b"half"); time.sleep(60)\'\n'
        "print('started', flush=True)\n"
        f"export.quantize_with_llama_cpp(__import__('pathlib').Path({str(target)!r}), 'q4_k_m')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    time.sleep(2)
    child.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = child.communicate(timeout=30)
    assert time.monotonic() - start < 10 and child.returncode != 0 and "KeyboardInterrupt" in err
    assert target.read_bytes() == b"the user's previous file" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("family,style", [("mistral", "byte_fallback"), ("qwen2", "qwen2")])
def test_check_runs_where_the_file_can_be_read_and_ends_in_a_verdict(family, style, tmp_path, capsys):
    """--check used to die in transformers' GGUF reader for Mistral and for every deci file: it
    now compares in llama.cpp there, and every engine ends in one verdict line."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    folder = synthetic.save_tiny(family, tmp_path / "m", tokenizer=style)
    pruning.save(load_model(str(folder)), tmp_path / "uneven", {}, heads=[(0, 0), (0, 1), (1, 2)])
    capsys.readouterr()
    args = [
        "export",
        str(tmp_path / "uneven"),
        "--gguf",
        str(tmp_path / "u.gguf"),
        "--check",
        "en",
        "--data",
        str(_data(tmp_path)),
    ] + (["--pre", "qwen2"] if style == "qwen2" else [])
    assert main(args) == 0
    out = capsys.readouterr().out
    verdict = [line for line in out.splitlines() if line.startswith("verdict")]
    assert verdict == [verdict[0]] and verdict[0].startswith("verdict (llama.cpp): within the stated gap for f32")
    assert "the same tokens on every text" in verdict[0]


def test_export_says_which_matrices_no_k_quant_holds(tmp_path, capsys):
    """A q4_k_m export counts its tensor types and the matrices whose rows are no multiple of
    256 wide (an MLP 320 wide: its down projection), which llama.cpp's quantizer writes in
    another type; the CLI says so with what keeps them K-quantised."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    import gguf

    from langheads.cli import main

    folder = synthetic.save_tiny(
        "llama", tmp_path / "m", tokenizer="byte_level", hidden_size=256, intermediate_size=320, head_dim=64
    )
    done = export.export(export.ExportSettings(model=str(folder), gguf=str(tmp_path / "q.gguf"), type="q4_k_m"))
    tensors = gguf.GGUFReader(str(tmp_path / "q.gguf")).tensors
    down = [t for t in tensors if t.name.endswith("ffn_down.weight")]
    assert done["not_256_wide"] == len(down) == 3 and all(not t.tensor_type.name.endswith("_K") for t in down)
    assert sum(done["tensor_types"].values()) == len(tensors) and done["tensor_types"]["Q4_K"] > 0
    capsys.readouterr()
    assert main(["export", str(folder), "--gguf", str(tmp_path / "c.gguf"), "--type", "q4_k_m"]) == 0
    said = capsys.readouterr().out
    assert "3 matrices have rows no multiple of 256 wide" in said and "--neuron-group 256" in said
