"""Fitting scripts: each fits or calibrates parameters that ship with the package, on train data (or
data with nothing of the kind, for thresholds), puts them into the package — `train_span` writes
reasoning/span_model.json; `calibrate_labels` derives the thresholds that indexers/vision.py holds —
and writes a doc under docs/benchmarks/ that says how they were chosen. `span_folds` refits the span
scorer on folds split by video to show what the shipped weights are worth on unseen videos; it
writes only its doc.

Run one with `.venv/bin/python -m tests.fit.NAME`. They are neither tests (pytest does not collect
them) nor benchmarks (tests/bench/); they may use the benchmarks' tooling (tests/bench/common.py,
tests/bench/tutorialvqa.py), never the other way round.
"""
