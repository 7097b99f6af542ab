"""`langheads scan`: plan the work units, run them (one process or torchrun), keep them in the
unit store, test each head-language pair (intervals, FDR, LAHIS, sequential looks), sort heads
into kinds and write the run folder."""
