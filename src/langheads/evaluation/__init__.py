"""`langheads evaluate`: before/after on the report texts (NLL per byte with intervals,
question answering, the judge, lm-evaluation-harness) and the kept/dropped certificate."""
