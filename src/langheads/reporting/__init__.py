"""`langheads report` and `langheads compare`: one self-contained HTML page of a run, its
figures (plots, a leaf module) and the rank agreement of two runs."""
