"""`python -m so3krates_lab`: the main job (`so3krates_lab.workflows.demo`)."""

from .workflows.demo import main

raise SystemExit(main())
