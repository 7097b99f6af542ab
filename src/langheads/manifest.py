"""The one record of what langheads changed in a model folder: `langheads.json`.

transformers once kept `config.pruned_heads` and replayed it at load; this generalises that
into a versioned list of edits, in the order they were made:
  {"op": "remove_heads", "removed": {layer: [heads]}, "layers": {layer: shape}, "uniform": bool}
  {"op": "trim_vocab", "kept_ids": [original ids, in order], "original_size": V}
  {"op": "remove_neurons", "removed": {layer: [MLP neurons]}, "widths": {layer: neurons kept}}
  {"op": "remove_layers", "kept_layers": [original layers, in order], "original_layers": N}
(a `remove_layers` edit comes first; the layer numbers of the edits after it are the saved
model's, `kept_layers` maps them back)
The loader replays the head edits (layers may keep different head counts, which no stock
config can say); vocabulary edits are in config.json already (vocab_size), so a folder with
only those loads with plain transformers. The exporter reads the same record. `records` keeps
why each edit was made (the pruning curve, the scripts measured), and `source` the model the
edits started from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LangheadsError
from .folders import new_folder, read_versioned_json

MANIFEST_FILE = "langheads.json"
FORMAT_VERSION = 1
OPS = ("remove_heads", "trim_vocab", "remove_neurons", "remove_layers")


@dataclass
class Manifest:
    source: dict = field(default_factory=dict)  # spec, id and sha256 of the unedited model
    edits: list[dict] = field(default_factory=list)
    records: dict = field(default_factory=dict)  # op -> what led to it

    def removed_heads(self) -> dict[int, list[int]]:
        """Every removed query head, by layer (the saved model's numbering)."""
        out: dict[int, list[int]] = {}
        for e in self.edits:
            if e["op"] == "remove_heads":
                for layer, heads in e["removed"].items():
                    out.setdefault(int(layer), []).extend(heads)
        return {l: sorted(h) for l, h in sorted(out.items())}

    def removed_neurons(self, replay: bool = False) -> dict[int, list[int]]:
        """Every removed MLP neuron, by layer (the saved model's numbering); `replay`: only those
        the config cannot say (uneven widths)."""
        e = next((e for e in self.edits if e["op"] == "remove_neurons"), None)
        if e is not None and replay and e.get("uniform"):
            return {}
        return (
            {} if e is None else {int(l): sorted(n) for l, n in sorted(e["removed"].items(), key=lambda x: int(x[0]))}
        )

    def pruning_record(self) -> dict:
        """Why the body was edited: the pruning's record (kept languages, budget, curve), or {}."""
        for op in ("remove_heads", "remove_neurons", "remove_layers", "prune"):
            if self.records.get(op, {}).get("kept"):
                return self.records[op]
        return {}

    def head_edit(self) -> dict | None:
        return next((e for e in self.edits if e["op"] == "remove_heads"), None)

    def kept_layers(self) -> list[int] | None:
        """The original layers the saved model keeps, in order (None: no layer removed)."""
        e = next((e for e in self.edits if e["op"] == "remove_layers"), None)
        return None if e is None else e["kept_layers"]

    def kept_ids(self) -> list[int] | None:
        """The original ids of the kept vocabulary, new id = position (None: not trimmed)."""
        kept = None
        for e in self.edits:
            if e["op"] == "trim_vocab":
                kept = e["kept_ids"] if kept is None else [kept[i] for i in e["kept_ids"]]
        return kept

    def needs_replay(self) -> bool:
        """True when the folder's config cannot describe its shapes (uneven head removal)."""
        e = self.head_edit()
        heads = e is not None and not e.get("uniform", False) and any(e["removed"].values())
        return heads or any(self.removed_neurons(replay=True).values())

    def describe(self) -> str:
        """One line: what was done to which model (written into exports)."""
        parts = []
        layers = self.kept_layers()
        if layers is not None:
            first = next(e for e in self.edits if e["op"] == "remove_layers")
            parts.append(f"{first['original_layers'] - len(layers)} of {first['original_layers']} layers removed")
        removed = self.removed_heads()
        if removed:
            parts.append(f"{sum(map(len, removed.values()))} attention heads removed")
        neurons = self.removed_neurons()
        if neurons:
            parts.append(f"{sum(map(len, neurons.values()))} MLP neurons removed")
        kept = self.kept_ids()
        if kept is not None:
            first = next(e for e in self.edits if e["op"] == "trim_vocab")
            langs = ",".join(self.records.get("trim_vocab", {}).get("scripts", {}))
            parts.append(
                f"vocabulary {first['original_size']:,} -> {len(kept):,} tokens" + (f" ({langs})" if langs else "")
            )
        source = self.source.get("id") or self.source.get("spec") or "a model"
        return f"langheads: {'; '.join(parts) or 'no edits'}; from {source}"

    def with_edit(self, edit: dict, record: dict | None = None) -> Manifest:
        if edit["op"] not in OPS:
            raise ValueError(f"unknown edit {edit['op']}")
        if edit["op"] == "remove_heads" and self.head_edit() is not None:
            raise LangheadsError("this model's heads were pruned already; prune the original model instead")
        if edit["op"] == "remove_layers" and (
            self.kept_layers() is not None or self.head_edit() or self.removed_neurons()
        ):
            raise LangheadsError("this model's body was edited already; prune the original model instead")
        if edit["op"] == "remove_neurons" and self.removed_neurons():
            raise LangheadsError("this model's neurons were pruned already; prune the original model instead")
        records = dict(self.records)
        if record is not None:
            records[edit["op"]] = record
        return Manifest(self.source, self.edits + [edit], records)

    def with_record(self, key: str, record: dict) -> Manifest:
        """The same edits with one more record (a pruning that removed nothing says why here)."""
        return Manifest(self.source, list(self.edits), {**self.records, key: record})

    def to_json(self) -> str:
        return (
            json.dumps(
                {"format_version": FORMAT_VERSION, "source": self.source, "edits": self.edits, "records": self.records},
                indent=1,
                ensure_ascii=False,
            )
            + "\n"
        )


def read_manifest(folder: str | Path) -> Manifest | None:
    """The folder's manifest, None if langheads never edited it; a damaged one is named in one line."""
    path = Path(folder) / MANIFEST_FILE
    if not path.exists():
        return None
    data = read_versioned_json(path, "an edited model folder", (FORMAT_VERSION,), ("edits",))
    edits = data["edits"]
    if not isinstance(edits, list) or any(not isinstance(e, dict) or e.get("op") not in OPS for e in edits):
        raise LangheadsError(f"{path}: damaged (an edit is not one of {', '.join(OPS)})")
    return Manifest(data.get("source", {}), edits, data.get("records", {}))


def write_model_folder(model, save_tokenizer, out: Path, manifest: Manifest, overwrite: bool = False) -> Path:
    """Write weights (safetensors), config, tokenizer and the manifest; the folder appears at
    `out` only when whole (folders.new_folder). `save_tokenizer(folder)` writes the tokenizer files."""
    with new_folder(out, overwrite, "model") as tmp:
        # shapes the config cannot say are replayed on the model's own tensors (models.py), so
        # such a folder keeps them as the model names them (transformers would otherwise write a
        # mixture of experts back as one tensor per expert)
        model.save_pretrained(tmp, safe_serialization=True, save_original_format=not manifest.needs_replay())
        save_tokenizer(tmp)
        (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return out
