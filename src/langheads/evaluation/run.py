"""`langheads evaluate` as one library entry: its settings (every option defined once, the
cross-option rules in `__post_init__`), the choice of evaluation (report texts, question
answering, lm-evaluation-harness), the judge, the certificate and the evaluation folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LangheadsError
from ..options import comma_list, option


@dataclass
class EvaluateSettings:
    """Everything `langheads evaluate` is told; every option defined once, here."""

    model: str | None = option(
        None, help="the edited (pruned, trimmed) model; with --qa --mask it defaults to --baseline"
    )
    baseline: str = option("default", help="the original model")
    languages: list[str] | None = option(None, help="languages to evaluate (not with --lm-eval)")
    data: str | None = option(None, help="texts (default: bundled UDHR)")
    max_tokens: int | None = option(None, help="cut each text at the baseline's first N tokens")
    prompts: int = option(3, help="greedy continuations per language")
    new_tokens: int = option(24, help="tokens per greedy continuation or answer")
    qa: str | None = option(
        None,
        metavar="DATA",
        help="question-answer data (JSONL, SQuAD .json, or cloze): greedy "
        "answers scored by exact match, token F1, chrF and language switch rate",
    )
    mask: str | None = option(
        None, metavar="L.H,...", help="with --qa: heads to mask (not prune) in --model, e.g. 3.1,5.2"
    )
    chat_template: str = option("auto", help="with --qa: auto | none | a Jinja file")
    data_lang: str | None = option(None, help="with --qa: the language of a SQuAD-format file")
    judge: str | None = option(
        None,
        metavar="URL",
        help="with --qa: an OpenAI-compatible endpoint (e.g. "
        "http://127.0.0.1:8000/v1) that rates each answer 1-5, like the paper's GPT-3.5 judge",
    )
    judge_model: str | None = option(None, help="the model name the --judge endpoint serves")
    judge_cache: str | None = option(None, help="file of cached verdicts (default: in the langheads cache)")
    lm_eval: list[str] | None = option(
        None,
        metavar="TASKS",
        help="lm-evaluation-harness tasks (comma-separated), "
        "run on the model in memory: belebele_*, xnli_*, xquad_*, mgsm_*, or your own",
    )
    lm_eval_include: str | None = option(None, metavar="DIR", help="with --lm-eval: a folder of task YAML files")
    limit: int | None = option(None, help="with --lm-eval: at most this many documents per task")
    seed: int = option(0, help="seed of the bootstrap")
    keep: list[str] | None = option(
        None, help="languages the deployment serves, for the certificate (default: the model's record)"
    )
    budget: float | None = option(
        None, help="largest relative loss a kept language may show (default: the model's pruning budget, else 0.02)"
    )

    def __post_init__(self):
        """Refuse bad values and combinations here, before any model loads."""
        from .. import checks
        from .evaluate import parse_mask

        for name in ("languages", "lm_eval", "keep"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, comma_list(getattr(self, name)))
        for name in ("keep", "languages"):
            if getattr(self, name):
                checks.languages(self, name)
        if self.budget is not None and not 0 <= self.budget < 10:
            raise LangheadsError(f"--budget must be a share between 0 and 10 (0.02 = 2%), not {self.budget}")
        checks.count(self, "limit", optional=True)
        checks.count(self, "prompts", minimum=0)
        checks.count(self, "new_tokens")
        self.heads = parse_mask(self.mask)
        self._check_kind()

    def _check_kind(self) -> None:
        if (self.lm_eval or self.qa is not None) and self.model is None and not self.heads:
            raise LangheadsError("give --model (an edited model), --mask (heads to mask in the baseline), or both")
        if self.lm_eval:
            return
        if not self.languages:
            raise LangheadsError("give --languages (or --lm-eval TASKS)")
        if self.qa is None and (self.heads or self.model is None):
            raise LangheadsError("--mask goes with --qa; without --qa give --model (the edited model)")
        if self.judge and not self.judge_model:
            raise LangheadsError("--judge needs --judge-model (the model name the endpoint serves)")

    @property
    def kind(self) -> str:
        return "lm-eval" if self.lm_eval else "qa" if self.qa is not None else "nll"


def evaluate(settings: EvaluateSettings, out, overwrite: bool = False) -> dict:
    """Library entry point for `langheads evaluate`: evaluate, certify (not lm-eval), write
    eval.csv, eval.json and generations.jsonl into `out`; the result as written."""
    from ..folders import claim
    from ..runs import write_eval

    with claim(Path(out), overwrite, "evaluation"):
        result = _evaluated(settings)
        if settings.kind != "lm-eval":
            _certify(result, settings)
        write_eval(result, Path(out), overwrite)
    return result


def _evaluated(s: EvaluateSettings) -> dict:
    from .evaluate import evaluate_lm_eval, evaluate_qa, evaluate_texts

    if s.kind == "lm-eval":
        return evaluate_lm_eval(s.model, s.baseline, s.lm_eval, s.lm_eval_include, s.limit, s.heads, s.seed)
    if s.kind == "nll":
        return evaluate_texts(
            s.model, s.baseline, s.languages, s.data, s.max_tokens, s.prompts, new_tokens=s.new_tokens, seed=s.seed
        )
    return evaluate_qa(
        s.model,
        s.baseline,
        s.languages,
        s.qa,
        s.heads,
        s.chat_template,
        s.new_tokens,
        s.seed,
        data_lang=s.data_lang,
        judge=_judge(s),
    )


def _judge(s: EvaluateSettings):
    """The judge the settings name (its verdicts cached per endpoint and model), or None."""
    if not s.judge:
        return None
    import hashlib

    from ..models import cache_dir
    from .judge import Judge

    name = hashlib.sha256(f"{s.judge} {s.judge_model}".encode()).hexdigest()[:16]
    return Judge(s.judge, s.judge_model, Path(s.judge_cache or cache_dir() / "judge" / f"{name}.jsonl"))


def _certify(result: dict, s: EvaluateSettings) -> None:
    """The kept/dropped certificate (certificate.py), kept in the result when there are kept languages."""
    from .certificate import certificate, edited_from, heal_cautions, settle

    kept, budget = settle(s.model, s.keep, s.budget)
    if kept:
        result["certificate"] = certificate(result, kept, budget, edited_from(s.model))
        if s.kind == "nll":
            result["certificate"]["cautions"] = heal_cautions(s.model, s.data)
