"""OLMo 2: its q/k norms are RMSNorms over all heads together (one statistic across heads), so
removing a head changes the other heads' outputs: masking is exact, physical pruning is not,
and it is refused with that reason."""

from __future__ import annotations

from .base import Adapter, GGUFFamily, Tiny


class Olmo2(Adapter):
    family = "olmo2"
    tiny = {"olmo2": Tiny("Olmo2Config")}
    model_types = ("olmo2",)
    gguf = GGUFFamily("olmo2", norm_plus_one=False, permute_qk=False)
    pruning_exact = False
    pruning_note = "its q/k RMSNorms span all heads, so removing one rescales the others"
