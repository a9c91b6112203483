"""The key of a set of weights follows the parameter object, not its storage."""

import gc

import torch

from pc_compile.runtime import weights
from pc_compile.runtime.weights import weights_identity


def test_the_key_stays_while_the_weights_move_and_differs_between_modules():
    linear = torch.nn.Linear(2, 2)
    key = weights_identity(linear.weight)
    storage = linear.weight.data_ptr()
    linear.weight.data = linear.weight.data.clone()  # what module.to(device) does
    linear.to(torch.float64)
    assert linear.weight.data_ptr() != storage
    assert weights_identity(linear.weight) == key
    assert weights_identity(torch.nn.Linear(2, 2).weight) != key


def test_a_freed_parameter_leaves_no_key_behind_for_the_next_object_at_its_address():
    parameter = torch.nn.Parameter(torch.ones(2))
    key, address = weights_identity(parameter), id(parameter)
    assert weights._keys[address][1] == key
    del parameter
    gc.collect()
    assert address not in weights._keys
