"""The data and models this project ships (also reachable as the repository's top-level `data/`, a link here).

Read them with `so3krates_lab.data.shipped_path` / `load_shipped` and `so3krates_lab.pretrained.load`.
"""
