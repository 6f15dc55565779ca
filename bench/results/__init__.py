"""Results: the record's schema (`schema`), run folders on disk (`store`), records files read into records
(`records`) and run folders into runs (`runs`), and what is made of them: rows (`aggregate`, their intervals
from bench.stats, which measure/ uses too), tables and REPORT.md (`report`) and plots (`plots`).

Nothing here imports torch or the code that builds and runs models: report and compare read records only.
"""
