"""python -m pipeline.tune: what solutions/tune.py runs (and each of --jobs' worker processes)."""
import sys

from pipeline.tune.run import main

sys.exit(main())
