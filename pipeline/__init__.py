"""pipeline: a small, production-grade PyTorch training pipeline for tabular CSV data.

Phases, one module family each: `data` (CSV -> processed splits + schema.json), `train` (the loop, with
exact checkpoint/resume and tracking), `monitor` and `system` (live monitoring), `report` (a standalone
HTML training report). Importing the package does nothing but define names:

    from pipeline import data, train
"""
__version__ = "0.2.0"
