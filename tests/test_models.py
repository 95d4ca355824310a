import re
from pathlib import Path

import pytest
import torch

from mnistlab.errors import UserError
from mnistlab.models import count_params, create_model, list_models

# ../shared/MODELS.md, the specification every registry entry must match exactly.
EXPECTED = {
    "baseline_cnn": 26_698, "baseline_cnn_small": 15_106, "bn_dropout_cnn": 26_746,
    "iter1": 26_714, "iter2": 24_210, "iter3": 18_374, "iter4": 20_514, "iter5": 18_422, "iter6": 18_422,
    "iter7": 18_422, "mlp": 669_706, "cnn_large": 3_797_962, "vgg16": 134_301_514, "cnn3_bn": 241_994,
    "compact8k": 7_646, "speedrun": 23_194, "cnn5_bn": 87_346, "resnet_mnist": 77_754,
}
MNISTLAB_OWN = ("compact8k", "speedrun", "cnn5_bn", "resnet_mnist")  # ours, so not in MODELS.md
MODELS_MD = Path(__file__).resolve().parents[2] / "shared" / "MODELS.md"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_matches_models_md(name):
    assert count_params(name) == EXPECTED[name]


def test_expected_table_agrees_with_models_md():
    if not MODELS_MD.exists():
        pytest.skip("../shared/MODELS.md not beside the repo")
    rows = re.findall(r"^\| `(\w+)` \|.*\| ([\d,]+) \|$", MODELS_MD.read_text(), flags=re.M)
    table = {name: int(n.replace(",", "")) for name, n in rows}
    not_in_table = ("bn_dropout_cnn", *MNISTLAB_OWN)
    assert table == {k: v for k, v in EXPECTED.items() if k not in not_in_table}
    assert "`bn_dropout_cnn`" in MODELS_MD.read_text() and "26,746 params" in MODELS_MD.read_text()


def test_params_are_all_used_by_forward():
    # "nothing defined that forward() does not use": every parameter gets a gradient
    for name in EXPECTED:
        if name == "vgg16":
            continue
        model = create_model(name)
        model(torch.randn(2, 1, 28, 28)).sum().backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, (name, unused)


@pytest.mark.parametrize("name", ["iter5", "cnn3_bn", "mlp", "baseline_cnn"])
def test_class_count_sets_the_head(name):
    logits = create_model(name, num_classes=47)(torch.zeros(3, 1, 28, 28))
    assert logits.shape == (3, 47)


def test_vgg16_takes_mnist_input():
    model = create_model("vgg16", image_size=32)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("width,blocks", [(16, 1), (8, 2), (24, 1)])
def test_resnet_family_counts_and_shapes(width, blocks):
    # counted by hand: stem conv + BN; per stage, `blocks` BasicBlocks (two 3x3 convs and two BNs,
    # the first of stages 2 and 3 with a 1x1 conv + BN shortcut); the linear head
    w, total = width, 9 * width + 2 * width
    for stage, cout in enumerate((w, 2 * w, 4 * w)):
        cin = w if stage == 0 else cout // 2
        for i in range(blocks):
            first_in = cin if i == 0 else cout
            total += 9 * first_in * cout + 9 * cout * cout + 4 * cout
            if stage > 0 and i == 0:
                total += cin * cout + 2 * cout
    total += 4 * w * 10 + 10
    assert count_params("resnet_mnist", width=width, blocks=blocks) == total
    model = create_model("resnet_mnist", width=width, blocks=blocks)
    residual = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(residual) == 3 * blocks
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_resnet_blocks_add_their_input():
    # a residual block whose convolutions output zero passes its input through (after the ReLU)
    block = [m for m in create_model("resnet_mnist").modules() if type(m).__name__ == "BasicBlock"][0].eval()
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = torch.rand(1, 16, 28, 28)
    assert torch.equal(block(x), x.relu())


@pytest.mark.parametrize("options", [{"width": 0}, {"blocks": 9}, {"width": 1.5}])
def test_resnet_options_out_of_range_are_one_line(options):
    with pytest.raises(UserError, match="width|blocks"):
        create_model("resnet_mnist", **options)


def test_list_models_pattern():
    assert list_models("iter*") == [f"iter{i}" for i in range(1, 8)]
    assert set(EXPECTED) <= set(list_models())


def test_unknown_model_suggests_near_miss():
    with pytest.raises(UserError, match="did you mean 'iter5'"):
        create_model("itr5")


def test_unknown_model_option_is_named():
    with pytest.raises(UserError, match=r"model\.dropuot.*did you mean 'dropout_p'"):
        create_model("iter6", dropuot=0.1)


def test_models_command_json(cli):
    import json

    code, out, _ = cli("models", "--json")
    assert code == 0
    listed = {row["name"]: row["params"] for row in json.loads(out)}
    assert {k: listed[k] for k in EXPECTED} == EXPECTED
    assert all(row["description"] for row in json.loads(out))


def test_models_command_pattern_and_no_match(cli):
    code, out, _ = cli("models", "iter*")
    assert code == 0 and sum(line.startswith("iter") for line in out.splitlines()) == 7 and "18,422" in out
    code, _, err = cli("models", "nothing*")
    assert code == 2 and "no model matches" in err


def test_summary_command_prints_torchsummary_table(cli, tmp_path):
    code, out, _ = cli("summary", "iter5")
    assert code == 0 and "Total params: 18,422" in out and "Conv2d" in out
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: cnn3_bn}\ndata: {dataset: emnist-balanced}\n")
    code, out, _ = cli("summary", cfg)
    assert code == 0 and "47 classes" in out and "Total params: 246,767" in out
    code, _, err = cli("summary", "nosuchthing")
    assert code == 2 and "neither a config file nor a model name" in err


def test_the_catalog_that_mnistlab_models_prints_matches_the_registry():
    """`python -m mnistlab.models.catalog` regenerates mnistlab/models/catalog.json after a model changes."""
    import json

    from mnistlab.models.catalog import CATALOG, build_catalog

    assert json.loads(CATALOG.read_text()) == build_catalog()


def test_models_answers_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom mnistlab.cli import main\nmain(['models', 'iter*'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "iter5" in result.stdout and "18,422" in result.stdout


def test_loading_a_model_leaves_torchvision_unimported():
    """torchvision pulls in torch._dynamo, over a second of every command's start-up: only the models built on
    its layers (resnet_mnist, vgg16) import it, when built. `predict` loading the shipped model leaves it out."""
    import subprocess
    import sys

    code = ("import sys\nfrom mnistlab.models import create_model\nfrom mnistlab.reading.predict import SHIPPED, "
            "load_classifier\nload_classifier(SHIPPED)\ncreate_model('cnn5_bn')\n"
            "assert 'torchvision' not in sys.modules, 'imported'\n"
            "create_model('resnet_mnist')\nassert 'torchvision' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
