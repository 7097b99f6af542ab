"""The family x (export, tokenizer, llama.cpp check) matrix (not a test; the suite asserts the
bounds, this prints the measured gaps): for each family a tiny random model with the tokenizer
style its real models use, exported as f32 and f16, trimmed to en+hi and exported, and pruned
uniformly where it can be; each file run in llama.cpp against our float32 model.

    python benchmarks/export_matrix.py [--out benchmarks/results/export_matrix_cpu.txt]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from langheads import load_model, synthetic
from langheads.cli import main as cli  # noqa: E402
from langheads.deploy import export
from langheads.edit import pruning  # noqa: E402
from langheads.errors import LangheadsError  # noqa: E402
from test_export import FAMILY_MATRIX, TEXTS  # noqa: E402 - the suite's matrix, one source


def gap(loaded, path) -> str:
    g = export.llama_cpp_gap(loaded, path, TEXTS)
    return f"{g['same_tokens']}/{g['texts']} same, {g['mean_logprob_gap']:.1e} / {g['max_logprob_gap']:.1e}"


def row(arch: str, style: str, sizes: dict, root: Path) -> list[str]:
    root = root / f"{arch}-{style}"
    folder = synthetic.save_tiny(arch, root / arch, tokenizer=style, **sizes)
    loaded = load_model(str(folder))
    import gguf

    cells = [gap(loaded, export.export_gguf(loaded, root / f"{arch}-{k}.gguf", k)) for k in ("f32", "f16")]
    reader = gguf.GGUFReader(str(root / f"{arch}-f32.gguf"))
    graph = (
        f"{reader.fields['general.architecture'].contents()} ({reader.fields['tokenizer.ggml.model'].contents()}"
        + (
            f", {reader.fields['tokenizer.ggml.pre'].contents()})"
            if reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
            else ")"
        )
    )
    data = root / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"lang": lang, "id": str(i), "text": t}, ensure_ascii=False) + "\n"
            for lang, lines in synthetic.TRAINING_TEXT.items()
            for i, t in enumerate(lines * 8)
        )
    )
    cli(["trim", "--model", str(folder), "--keep", "en,hi", "--out", str(root / f"{arch}-trim"), "--data", str(data)])
    trimmed = load_model(str(root / f"{arch}-trim"))
    cells.append(
        f"{len(loaded.tokenizer)} -> {len(trimmed.tokenizer)} tokens: "
        + gap(trimmed, export.export_gguf(trimmed, root / f"{arch}-t.gguf"))
    )
    layers = loaded.model.config.get_text_config().num_hidden_layers
    try:
        pruning.save(
            loaded, root / f"{arch}-u", {}, heads=[(i, h) for i in range(layers) for h in (1, 3)], uniform=True
        )
        uniform = load_model(str(root / f"{arch}-u"))
        cells.append(gap(uniform, export.export_gguf(uniform, root / f"{arch}-u.gguf")))
    except LangheadsError as e:
        cells.append("refused: " + str(e).split(";")[0][:90])
    return [arch, style, graph, *cells]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    args = p.parse_args()
    head = [
        "family",
        "tokenizer",
        "llama.cpp graph (vocab, pre)",
        "f32: tokens, log-prob gap mean / max",
        "f16",
        "trimmed en+hi (f32)",
        "uniform pruning (f32)",
    ]
    lines = [
        "llama.cpp (llama-cpp-python) against our float32 model on 6 en/hi texts; gaps in nats",
        "",
        " | ".join(head),
        " | ".join("---" for _ in head),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for arch, style, sizes in FAMILY_MATRIX:
            lines.append(" | ".join(row(arch, style, dict(sizes), Path(tmp))))
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
