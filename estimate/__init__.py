"""Learned resource and timing estimates: a synthesis dataset of our own (`dataset`), the features every
design kind is described by (`features`), surrogates trained on it (`models`, `train`) and the estimator
that `hardwire estimate`, `hardwire compile` and the benchmarks use (`predict`)."""

import sys
import types


class _CallablePackage(types.ModuleType):
    """`hardwire.estimate(...)` is the Python API's estimate (hardwire.api.estimate) even once this package has
    been imported and, as Python does, has taken the name `estimate` on the `hardwire` package."""

    def __call__(self, *args, **kwargs):
        from hardwire.api import estimate

        return estimate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
