"""Runs over commits: a history that keeps every run's records whole (`store`), the series they form on one machine
in the order of a branch's first-parent history (`commits`, `series`), the steps found in those series (`steps`),
and verdicts on them through the paired A/B gate: a step confirmed or dismissed, the first bad commit bisected
(`verdicts`). Reading a history imports neither torch nor the code that runs models."""
