"""`langheads prune` and `langheads trim`: choose what the kept languages do not need, remove it
from the weights (heads, vocabulary), count what that saves, and record it in the manifest."""
