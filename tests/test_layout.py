"""train.channels_last: the layouts change where numbers sit in memory, never what is computed."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.models.layout import apply_layout
from mnistlab.models import create_model

CL = torch.channels_last


def nchw(t: torch.Tensor) -> bool:
    return t.is_contiguous()


def nhwc(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=CL) and not t.is_contiguous()


def layouts(model: nn.Module, x: torch.Tensor) -> tuple[list, list]:
    """(module, output) for every leaf layer of a forward pass, and (module, gradient at its output)."""
    outputs, grads = [], []

    def record(module, args, out):
        outputs.append((module, out))
        if out.requires_grad:
            out.register_hook(lambda g: grads.append((module, g)))

    handles = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    F.cross_entropy(model(x), torch.arange(len(x)) % 10).backward()
    for h in handles:
        h.remove()
    return outputs, grads


def test_after_first_pool_runs_the_stem_nchw_and_the_rest_nhwc():
    torch.manual_seed(0)
    model = apply_layout(create_model("iter5"), "after_first_pool")
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    outputs, grads = layouts(model, x)
    first_pool = next(i for i, (m, _) in enumerate(outputs) if isinstance(m, nn.MaxPool2d))
    four_d = [(i, m, out) for i, (m, out) in enumerate(outputs) if out.dim() == 4]
    assert all(nchw(out) for i, _, out in four_d if i < first_pool)  # conv, BN, ReLU with 8 channels
    assert all(nhwc(out) for i, _, out in four_d if i >= first_pool)
    assert nchw(model[0].weight) and nhwc(model[4].weight)
    # the gradient reaching the stem is NCHW again, as the stem's own backward kernels want it
    stem = {m for m, _ in outputs[:first_pool]}
    stem_grads = [g for m, g in grads if m in stem and g.dim() == 4]
    assert stem_grads and all(nchw(g) for g in stem_grads)


@pytest.mark.parametrize("setting", [True, "after_first_pool"])
@pytest.mark.parametrize("name", ["iter5", "compact8k", "cnn5_bn"])
def test_every_layout_computes_the_same_outputs_and_gradients(name, setting):
    torch.manual_seed(0)
    plain = create_model(name, **({"dropout_p": 0.0} if name == "cnn5_bn" else {}))  # no random masks to match
    other = apply_layout(copy.deepcopy(plain), setting)
    x = torch.randn(8, 1, 28, 28)
    y = torch.arange(8) % 10
    for model in (plain, other):
        F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(other(x), plain(x), rtol=1e-4, atol=1e-5)
    for (key, a), b in zip(plain.named_parameters(), other.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=key)
    # and a checkpoint of either loads into the other
    plain.load_state_dict(other.state_dict())


def test_a_model_without_pooling_is_left_as_it_is():
    model = create_model("mlp")
    assert apply_layout(model, "after_first_pool") is model
    assert apply_layout(model, False) is model
