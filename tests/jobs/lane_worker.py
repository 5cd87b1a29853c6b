"""``python -m tests.jobs.lane_worker worker --lanes ...``: the real ``gestaltlens`` command with the lane tests' job
kinds registered too (a Celery worker only knows the kinds its process imported)."""

import tests.jobs.lane_kinds  # noqa: F401
from app.cli import main

if __name__ == "__main__":
    main()
