"""torch in one thread, for a block of work: what training a zoo network (one reduction order, so a seed gives the
same weights) and the estimators (graphs of a few nodes, where a thread pool costs more than it gives: an
estimate took 0.7 s with two threads on a busy 2-core machine, 27 ms with one) both want."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
