"""train.ema: the moving average of the weights is what is validated, checkpointed, scored and resumed."""

import copy
import json

import pytest
import torch
from torch import nn

from conftest import REPO, TINY
from mnistlab.config import load_config
from mnistlab.training.ema import build_ema
from test_train import read_metrics, run_dirs

KEEP = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


@pytest.mark.parametrize("warmup", [False, True])
def test_the_average_follows_the_formula_for_weights_and_batchnorm_statistics(warmup):
    torch.manual_seed(0)
    trained = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    setting = load_config(raw={"model": "iter5", "train": {"ema": {"decay": 0.75, "warmup": warmup}}}).train.ema
    ema = build_ema(setting, trained)
    expected = {k: v.clone().float() for k, v in trained.state_dict().items()}
    ema.update_parameters(trained)  # the first update copies
    # timm's ModelEmaV3 warm-up (warmup_power 2/3): 1 - (1 + k)**(-2/3) at the k-th update, capped by decay
    decays = [min(0.75, 1 - (1 + k) ** (-2 / 3)) for k in range(1, 10)] if warmup else [0.75] * 6
    assert (decays[0] < 0.4 if warmup else decays[0] == 0.75) and decays[-1] == 0.75  # both regimes are seen
    for decay in decays:
        trained.train()(torch.randn(8, 3))  # moves the running statistics
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(torch.randn_like(p))
        ema.update_parameters(trained)
        for k, v in trained.state_dict().items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, expected[k], atol=1e-6), k
    assert type(ema.module) is type(trained) and not torch.equal(ema.module[0].weight, trained[0].weight)


def test_with_the_warm_up_an_early_average_is_not_its_random_start(cli, tmp_path, mnist_root):
    """compact8k after a short first epoch: without the warm-up its average (decay 0.999) still holds mostly
    the initial weights and reads near chance; with it, it reads about as well as the trained weights."""
    late = ema_run(cli, tmp_path / "late", mnist_root, "--set", "train.ema.warmup=false", "--set", "train.epochs=1",
                   "--set", "train.limit_train_batches=60")
    warm = ema_run(cli, tmp_path / "warm", mnist_root, "--set", "train.epochs=1", "--set", "train.limit_train_batches=60")
    late_acc, warm_acc = (float(read_metrics(d)[0]["val_acc"]) for d in (late, warm))
    train_acc = float(read_metrics(warm)[0]["train_acc"])
    assert late_acc < 0.2 and warm_acc > max(0.3, late_acc + 0.2, train_acc - 0.15), (late_acc, warm_acc, train_acc)


def test_ema_shorthands_and_bounds():
    assert load_config(raw={"model": "iter5", "train": {"ema": True}}).train.ema.decay == 0.999
    assert load_config(raw={"model": "iter5", "train": {"ema": False}}).train.ema is None
    for bad in (1.0, -0.1, "high"):
        with pytest.raises(Exception, match="train.ema.decay"):
            load_config(raw={"model": "iter5", "train": {"ema": {"decay": bad}}})


def ema_run(cli, out, mnist_root, *extra):
    code, _, err = cli("train", REPO / "configs" / "compact8k.yaml", *TINY, "--set", "train.limit_train_batches=15",
                       "--set", "train.limit_eval_batches=2", "--set", "train.epochs=2", "--set", "train.tta=false",
                       "--set", "train.scheduler=none", "--set", "train.checkpoint_monitor=last", *extra,
                       "--out-dir", out, "--data-dir", mnist_root)
    assert code == 0, err
    return run_dirs(out, "compact8k")[-1]


def test_the_checkpoint_is_the_average_and_scores_as_validation_said(cli, tmp_path, mnist_root):
    run = ema_run(cli, tmp_path, mnist_root, "--set", "train.ema.decay=0.9", "--set", "train.limit_eval_batches=null")
    last = torch.load(run / "last.pt", weights_only=True)
    trained = last["training_state"]["trained_weights"]
    averaged = last["state_dict"]
    assert set(trained) == set(averaged)
    assert any(not torch.equal(trained[k], averaged[k]) for k in averaged if averaged[k].is_floating_point())
    # best.pt (the last epoch here) holds the average, and the validation figure was the average's
    code, out, _ = cli("eval", run / "best.pt", "--json", "--split", "val", "--data-dir", mnist_root)
    rows = read_metrics(run)
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx(float(rows[-1]["val_acc"]), abs=1e-6)  # csv: 6 digits
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params"] == 7_646  # the model's, not twice


def test_decay_zero_is_training_without_an_average(cli, tmp_path, mnist_root):
    plain = ema_run(cli, tmp_path / "plain", mnist_root, "--set", "train.ema=null")
    zero = ema_run(cli, tmp_path / "zero", mnist_root, "--set", "train.ema.decay=0.0")
    smooth = ema_run(cli, tmp_path / "smooth", mnist_root, "--set", "train.ema.decay=0.99")
    rows = lambda d: [{k: r[k] for k in KEEP} for r in read_metrics(d)]  # noqa: E731
    assert rows(plain) == rows(zero)
    assert [r["val_loss"] for r in rows(plain)] != [r["val_loss"] for r in rows(smooth)]
    assert [r["train_loss"] for r in rows(plain)] == [r["train_loss"] for r in rows(smooth)]  # training is untouched


def test_a_resumed_run_continues_both_the_weights_and_their_average(cli, tmp_path, mnist_root):
    full = ema_run(cli, tmp_path / "full", mnist_root, "--set", "train.ema.decay=0.95")
    first = ema_run(cli, tmp_path / "part", mnist_root, "--set", "train.ema.decay=0.95", "--set", "train.epochs=1")
    (first / "summary.json").unlink()  # as if killed after its first epoch
    # in this process: the first run gave its lock back when it returned
    code, _, err = cli("train", "--resume", first, "--set", "train.epochs=2", "--data-dir", mnist_root, "--quiet")
    assert code == 0, err
    a, b = read_metrics(full), read_metrics(first)
    assert [{k: r[k] for k in KEEP} for r in a] == [{k: r[k] for k in KEEP} for r in b]
    for name in ("best.pt", "last.pt"):
        x, y = (torch.load(d / name, weights_only=True)["state_dict"] for d in (full, first))
        assert all(torch.equal(x[k], y[k]) for k in x), name


def test_ema_does_not_touch_a_deep_copy_of_the_trained_model():
    # the average is a separate copy: stepping the trained model leaves it until update_parameters
    trained = nn.Linear(2, 2)
    ema = build_ema(load_config(raw={"model": "iter5", "train": {"ema": {}}}).train.ema, trained)
    before = copy.deepcopy(ema.module.state_dict())
    with torch.no_grad():
        trained.weight.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in ema.module.state_dict().items())
