"""Reading results: records files read into records (`records`), and run folders into runs (`runs`).

Nothing here imports torch or the code that builds and runs models: report and compare read records only.
"""
