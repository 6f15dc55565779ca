"""The gates: `compare` judges a run against the committed baseline (`baseline` keeps it), `ab` measures two git
revisions on this machine, alternating, and judges the paired ratios. Like reading results, they import no torch."""
