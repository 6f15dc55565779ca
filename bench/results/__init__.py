"""Reading results: records files read into records (`records`).

Nothing here imports torch or the code that builds and runs models: report and compare read records only.
"""
