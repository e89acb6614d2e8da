"""Learned resource and timing estimates: a synthesis dataset of our own (`dataset`), the features every
design kind is described by (`features`), surrogates trained on it (`models`, `train`) and the estimator
that `hardwire estimate`, `hardwire compile` and the benchmarks use (`predict`)."""
