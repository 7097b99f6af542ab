"""When to stop scoring a (head, language) pair: the adaptive scan's stopping rule.

The full exact scan scores every pair on every text and then calls a pair "matters" when the
lower end of its 95% bootstrap interval of the relative NLL increase is above the threshold
(kinds.IntervalRule). `scan --adaptive` scores texts in rounds and, after each round, looks
at every pair still being scored:

  matters   stop: a one-sided t-test on x_i = d_i - threshold * b_i (d_i the head's NLL
            increase on text i, b_i the text's unmodified NLL; mean x > 0 is exactly "relative
            increase above the threshold") rejects "mean x <= 0" at level alpha_k. The early
            looks share `early_alpha` equally (alpha_k = early_alpha / number of early looks),
            so by the union bound the early "matters" calls are wrong with probability at most
            `early_alpha` in all, however many looks there are (Bonferroni alpha spending).
  below     stop, "does not matter": the same test the other way rejects "mean x >= 0"
            (the pair's interval lies below the threshold).
  futile    stop, "does not matter": the predictive probability that the pair would be called
            "matters" after the last text is below `futility`. Stopping for futility can only
            turn "matters" into "does not matter", so it never adds a false "matters" (a
            non-binding futility bound); what it can cost is a pair the full scan would have
            called "matters", which the scan reports against a full scan in benchmarks/.
  final     pairs still open after the last text get the full scan's own interval rule, on
            the same texts.

So an adaptive scan calls a pair "matters" falsely with probability at most the full scan's
own error plus `early_alpha` (tests/test_sequential.py checks it by simulation, under a null
at the threshold, normal and heavy-tailed). The t-test is the assumption: per-text values
independent and close enough to normal for a t-test; with 2 texts (1 degree of freedom) its
critical value is large, so only very consistent pairs stop there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MATTERS, BELOW, FUTILE, OPEN = 1, -1, -2, 0
CALLS = {MATTERS: "matters", BELOW: "below", FUTILE: "futile", OPEN: "last"}  # how a pair was called
Z_FINAL = 1.959964  # the percentile bootstrap's 95% interval, as a normal one, for the predictive probability


@dataclass(frozen=True)
class StoppingRule:
    threshold: float = 0.01
    max_texts: int = 8
    first: int = 2  # the first look, after this many texts
    step: int = 1  # texts per round after the first look
    early_alpha: float = 0.005
    futility: float = 0.05
    statistic: str = "difference"  # difference: x = d - threshold b | ratio: x = d / b - threshold

    def looks(self) -> list[int]:
        """Numbers of texts at which pairs are looked at before the last text."""
        return list(range(self.first, self.max_texts, self.step))

    def rounds(self) -> list[range]:
        """The texts of each round, in order: the first look's texts, then `step` at a time."""
        bounds = [0] + self.looks() + [self.max_texts]
        return [range(a, b) for a, b in zip(bounds, bounds[1:])]

    def alpha_per_look(self) -> float:
        return self.early_alpha / max(1, len(self.looks()))

    def critical(self, n: int) -> float:
        """The t-test's one-sided critical value after n texts (n - 1 degrees of freedom)."""
        return float(stats.t.ppf(1 - self.alpha_per_look(), n - 1))

    def decide(self, d: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per pair, after an early look: MATTERS, FUTILE or OPEN. d, b: [pairs, n] the
        pairs' NLL increases and unmodified NLLs on the same n texts."""
        n = d.shape[1]
        x = d - self.threshold * b if self.statistic == "difference" else d / b - self.threshold  # [pairs, n]
        mean, sd = x.mean(axis=1), x.std(axis=1, ddof=1)
        se = np.maximum(sd, 1e-12) / np.sqrt(n)
        out = np.full(len(x), OPEN)
        out[mean / se > self.critical(n)] = MATTERS
        out[mean / se < -self.critical(n)] = BELOW
        out[(out == OPEN) & (self.predictive(mean, sd, n) < self.futility)] = FUTILE
        return out

    def predictive(self, mean: np.ndarray, sd: np.ndarray, n: int) -> np.ndarray:
        """Probability, given the n texts seen (flat prior, t with n - 1 degrees of freedom),
        that the mean of x over all max_texts texts ends above its normal 95% margin."""
        N = self.max_texts
        sd = np.maximum(sd, 1e-12)
        # the final mean: the n seen texts plus N - n unseen ones from the predictive distribution
        spread = sd * np.sqrt((N - n) / (N * n))
        return stats.t.cdf((mean - Z_FINAL * sd / np.sqrt(N)) / spread, n - 1)

    def describe(self) -> dict:
        looks = self.looks()
        return {
            "looks": looks,
            "last": self.max_texts,
            "early_alpha": self.early_alpha,
            "alpha_per_look": self.alpha_per_look(),
            "futility": self.futility,
            "text": (
                f"texts scored in rounds; after {', '.join(map(str, looks)) or 'no early look'} texts a pair stops "
                f"as 'matters' (or 'below') when a one-sided t-test on d - {self.threshold:g} x base "
                f"rejects 'relative increase <= {self.threshold:.2%}' (or '>=') at {self.alpha_per_look():.2g} "
                f"per look ({self.early_alpha:g} over all early looks, Bonferroni), or as 'futile' when the "
                f"predictive probability of 'matters' after {self.max_texts} texts is below {self.futility:g}; "
                f"pairs open after {self.max_texts} texts get the interval rule"
            ),
            "guarantee": (
                f"the early 'matters' calls add at most {self.early_alpha:g} to the interval rule's own "
                "chance of calling a pair 'matters' falsely (union bound over the looks; t-test assumptions); "
                "'below' and 'futile' stops add none"
            ),
        }
