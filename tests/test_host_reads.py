"""The host-read harness counts exactly the reads a snippet makes, and nothing else."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch

from tests.host_reads import HostReads


def test_each_kind_of_read_counts_once():
    t = torch.tensor([1.5, 0.0, 2.0])
    s = torch.tensor(3)
    with HostReads() as reads:
        t[0].item()
        t.tolist()
        bool(t[0])
        float(t[2])
        int(t[0])
        operator.index(s)
        list(range(s))  # __index__ again
        f"{t[0]:.2f}"  # __format__ reads through item(): one read
        t.cpu()
        t.numpy()
        np.asarray(t)  # __array__ reads through numpy(): one read
        torch.nonzero(t)
        t.nonzero()
        torch.masked_select(t, t > 1)
        torch.unique(t)
        t[t > 1]
        torch.where(t > 1)
        torch.equal(t, t)
        if t[1]:
            pass
    assert reads.kinds() == {
        "item": 1, "tolist": 1, "__bool__": 2, "__float__": 1, "__int__": 1, "__index__": 2,
        "__format__": 1, "cpu": 1, "numpy": 1, "__array__": 1, "torch.nonzero": 1,
        "nonzero": 1, "torch.masked_select": 1, "torch.unique": 1, "index[mask]": 1,
        "torch.where": 1, "torch.equal": 1,
    }
    assert reads.count == 19


def test_what_is_not_a_read():
    t = torch.randn(4, 3)
    with HostReads() as reads:
        float(3.0)
        bool(1)
        int("7")
        (t * 2 + 1).sum(dim=0)  # stays on the device
        t[0], t[1:], t[:, 2], t[torch.tensor([0, 2])]  # slicing and integer indexing
        torch.where(t > 0, t, -t)  # the three-argument form
        t.to(torch.float64)
        t.to("cpu")  # a CPU tensor placed on the CPU: what compiled graphs do, not a read
        t.to(device=torch.device("cpu"), dtype=torch.float16)
        t.to(dtype=torch.float16)
        t.shape[0] + t.size(1) + t.numel()
        t.repeat_interleave(2)
        t.repeat_interleave(torch.tensor([1, 2, 1, 0]), dim=0, output_size=4)
    assert reads.count == 0, reads.kinds()


def test_originals_are_restored():
    before = {name: vars(torch.Tensor).get(name) for name in ("item", "__float__", "to")}
    where = torch.where
    with HostReads():
        assert vars(torch.Tensor)["item"] is not before["item"]
    assert {name: vars(torch.Tensor).get(name) for name in before} == before
    assert torch.where is where
    with HostReads() as reads:
        pass
    float(torch.tensor(1.0))
    assert reads.count == 0


def test_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with HostReads():
            1 / 0
    assert "item" not in vars(torch.Tensor)


def test_scopes_give_per_step_counts_and_sites():
    t = torch.arange(4.0)
    with HostReads() as reads:
        for step in range(3):
            with reads.scope(step=step):
                for branch in ("cond", "uncond"):
                    with reads.scope(branch=branch):
                        for _ in range(step):
                            t.sum().item()  # the line the site names
        t.max().item()  # outside every scope
    assert reads.count == 0 + 2 + 4 + 1
    assert reads.per("step", range(3)) == {0: 0, 1: 2, 2: 4}
    assert reads.per("branch") == {"cond": 3, "uncond": 3}
    assert len(reads.where(step=2, branch="uncond")) == 2
    (site, n), *_ = reads.sites(reads.where(step=2)).most_common()
    assert n == 4 and site.startswith("item at ") and "test_host_reads.py" in site
    assert "test_scopes_give_per_step_counts_and_sites" in site


def test_fake_tensors_are_not_reads():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.ones(3))
    with HostReads() as reads:
        fake.to("cpu")
        fake.cpu()
        torch.ones(2, device="meta").to(torch.float16)
    assert reads.count == 0


def test_reads_inside_a_compiled_call_are_counted():
    """A read in a compiled function (a graph break) runs in Python at every call."""

    def f(x):
        y = x * 2
        if y.sum() > 0:  # data-dependent branch: a graph break and a __bool__ read
            y = y + 1
        return y * float(y.max())  # and a __float__ read

    compiled = torch.compile(f, backend="eager")
    x = torch.ones(3)
    compiled(x)  # compiles outside the counting
    with HostReads() as reads:
        for step in range(3):
            with reads.scope(step=step):
                compiled(x)
    assert reads.per("step") == {0: 2, 1: 2, 2: 2}
    assert reads.kinds() == {"__bool__": 3, "__float__": 3}


def test_counting_does_not_recompile():
    """Entering the harness around a warm compiled model keeps its compiled code."""
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    compiled = torch.compile(lambda x: (x * 3).relu(), backend=backend)
    x = torch.randn(5)
    compiled(x)
    with HostReads() as reads:
        compiled(x)
        compiled(x)
    assert len(compiles) == 1
    assert reads.count == 0
