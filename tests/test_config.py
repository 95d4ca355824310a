"""The config contract: every mistake exits 2 with one line naming the key, the value and what is allowed."""

import sys

import pytest
import yaml

from conftest import REPO, run_subprocess, write_config
from mnistlab.config import apply_overrides, load_config
from mnistlab.errors import UserError

BASE = """\
name: t
seed: 1
data: {dataset: mnist, val_split: 0.1}
model: {name: iter5}
train:
  epochs: 2
  optimizer: {name: adam, lr: 0.002}
  scheduler: {name: step, step_size: 15, gamma: 0.1}
"""

# (override, text that must appear in the message)
BAD_OVERRIDES = [
    ("trian.epochs=3", "trian: unknown key at the top level"),
    ("train.epoch=3", "did you mean 'epochs'"),
    ("train.epochs=ten", "train.epochs: got 'ten'"),
    ("train.epochs=0", "greater than or equal to 1"),
    ("train.optimizer.name=adamm", "did you mean 'adam'"),
    ("train.optimizer.lrr=0.1", "train.optimizer.lrr: unknown key"),
    ("train.optimizer.lr=-1", "train.optimizer.lr: got -1"),
    ("train.scheduler.name=stepp", "train.scheduler.name: unknown scheduler 'stepp'"),
    ("train.scheduler=cosin", "did you mean 'cosine'"),
    ("data.dataset=mnsit", "data.dataset: got 'mnsit'; allowed: mnist, fashion-mnist"),
    ("data.val_split=1.5", "data.val_split: got 1.5"),
    ("data.normalize=dataset2", "did you mean 'dataset'"),
    ("data.augment.rotat=10", "did you mean 'rotate'"),
    ("data.augment.scale=[1.2,0.8]", "data.augment.scale"),
    ("data.pipeline=gpu", "allowed: device, classic"),
    ("model.name=itr5", "did you mean 'iter5'"),
    ("model.dropout=0.5", "model.dropout: unknown option for model 'iter5'"),
    ("train.batch_size=-4", "train.batch_size: got -4"),
    ("train.checkpoint_monitor=test_acc", "allow_test_selection"),
    ("train.checkpoint_monitor=val_los", "did you mean 'val_loss'"),
    ("device=gpu", "device: got 'gpu'"),
    ("train.compile=reduce-overhaed", "train.compile: got 'reduce-overhaed'; allowed: true, false, reduce-overhead"),
    ("train.compile=1", "train.compile: got 1; allowed"),
    ("train.tta=maybe", "train.tta: got 'maybe'"),
    ("train.channels_last=after_first_poll", "train.channels_last: got 'after_first_poll'; allowed: true, false, "
                                             "after_first_pool; did you mean 'after_first_pool'"),
    ("train.channels_last=1", "train.channels_last: got 1; allowed"),
    ("name=has space", "name: got 'has space'"),
    ("train.epochs", "expected KEY=VALUE"),
]


@pytest.mark.parametrize("override,expected", BAD_OVERRIDES)
def test_bad_override_exits_2_with_one_line(cli, tmp_path, override, expected):
    cfg = write_config(tmp_path / "t.yaml", BASE)
    code, out, err = cli("train", cfg, "--set", override, "--print-config")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err


def test_same_mistakes_in_the_file_name_the_file(cli, tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", BASE.replace("epochs: 2", "epochs: two"))
    code, _, err = cli("train", cfg)
    assert code == 2 and "bad.yaml" in err and "train.epochs: got 'two'" in err


def test_yaml_syntax_error_names_file_and_line(cli, tmp_path):
    cfg = write_config(tmp_path / "broken.yaml", "model:\n  name: iter5\n train: [\n")
    code, _, err = cli("train", cfg)
    assert code == 2 and "broken.yaml:3:" in err and "YAML syntax error" in err


@pytest.mark.parametrize("text,expected", [
    ("", "the config is empty"),
    ("- a\n- b\n", "must be a mapping"),
    ("train: {epochs: 1}\n", "model: required key is missing"),
])
def test_structurally_wrong_files(cli, tmp_path, text, expected):
    code, _, err = cli("train", write_config(tmp_path / "x.yaml", text))
    assert code == 2 and expected in err


def test_missing_config_file(cli, tmp_path):
    code, _, err = cli("train", tmp_path / "nope.yaml")
    assert code == 2 and "config file not found" in err and "nope.yaml" in err


def test_val_split_zero_needs_an_explicit_monitor(cli, tmp_path):
    cfg = write_config(tmp_path / "t.yaml", BASE)
    code, _, err = cli("train", cfg, "--set", "data.val_split=0", "--print-config")
    assert code == 2 and "no validation set" in err
    code, out, _ = cli("train", cfg, "--set", "data.val_split=0", "--set", "train.checkpoint_monitor=last",
                       "--print-config")
    assert code == 0 and "checkpoint_monitor: last" in out


def test_print_config_is_resolved_and_valid_yaml(cli, tmp_path):
    cfg = write_config(tmp_path / "t.yaml", BASE.replace("name: t\n", ""))
    code, out, _ = cli("train", cfg, "--set", "train.optimizer.lr=0.01", "--set", "train.optimizer=sgd",
                       "--print-config")
    assert code == 0
    resolved = yaml.safe_load(out)
    assert resolved["name"] == "t"  # the file's stem
    assert resolved["train"]["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.0, "nesterov": False,
                                              "weight_decay": 0.0}
    assert resolved["train"]["early_stopping"] is None and resolved["data"]["augment"]["rotate"] is None
    assert load_config(raw=resolved).model_dump() == load_config(cfg, ["train.optimizer=sgd",
                                                                       "train.optimizer.lr=0.01"]).model_dump()


def test_override_values_are_yaml():
    raw = apply_overrides({"model": {"name": "iter5"}}, ["data.augment.scale=[0.9, 1.1]", "train.amp=off",
                                                         "model.dropout_p=0.3", "train.early_stopping=null"])
    assert raw["data"]["augment"]["scale"] == [0.9, 1.1]
    assert raw["model"]["dropout_p"] == 0.3 and raw["train"]["early_stopping"] is None
    assert load_config(raw=raw).train.amp == "off"  # YAML's `off` is false; amp takes it as "off"


def test_amp_off_in_a_yaml_file(tmp_path, cli):
    path = tmp_path / "amp_off.yaml"
    path.write_text("model: iter5\ntrain:\n  amp: off\n")
    assert load_config(path).train.amp == "off"
    path.write_text("model: iter5\ntrain:\n  amp: true\n")
    code, _, err = cli("train", path)
    assert code == 2 and "train.amp: got True; allowed: auto, off, bf16, fp16" in err and "Traceback" not in err


def test_rotate_scalar_means_symmetric_range():
    cfg = load_config(raw={"model": "iter5", "data": {"augment": {"rotate": 15}}})
    assert cfg.data.augment.rotate == (-15.0, 15.0)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_validates(cli, path):
    code, out, err = cli("train", path, "--print-config")
    assert code == 0, err
    assert yaml.safe_load(out)["name"] == path.stem


def test_errors_have_no_traceback_in_a_real_process(tmp_path):
    cfg = write_config(tmp_path / "t.yaml", BASE)
    result = run_subprocess("train", cfg, "--set", "train.optimizer.name=adamm")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_help_and_version_do_not_import_torch():
    import subprocess

    code = ("import sys\nfrom mnistlab.cli import main\n"
            "for args in (['--help'], ['--version'], ['train', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "mnistlab 0.1" in result.stdout and "usage: mnistlab" in result.stdout


def test_a_key_with_a_newline_is_still_one_line(cli, tmp_path):
    config = write_config(tmp_path / "nl.yaml", 'data:\n  "\\n": null\n')
    code, out, err = cli("train", config)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "data.'\\n': unknown key in data" in err


def test_a_base_config_is_merged_key_by_key_and_lists_replace(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "common.yaml").write_text(
        "base: iter5\ndata: {augment: {rotate: [-5, 5]}}\ntrain: {epochs: 7}\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: shared/common.yaml\ntrain: {optimizer: {lr: 0.01}}\ndata: {augment: {rotate: 3}}\n")
    cfg, iter5 = load_config(mine), load_config("iter5")
    assert cfg.train.optimizer.lr == 0.01 and cfg.train.epochs == 7 and cfg.name == "mine"
    # the keys beside the one overridden are the bases'
    assert cfg.train.optimizer.weight_decay == iter5.train.optimizer.weight_decay
    assert cfg.train.optimizer.name == iter5.train.optimizer.name and cfg.model == iter5.model
    assert cfg.data.augment.rotate == (-3.0, 3.0) and cfg.data.augment.translate == iter5.data.augment.translate


def test_base_cycles_missing_bases_and_a_bad_key_in_a_base_are_one_line_naming_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "missing.yaml").write_text("base: no_such_config\n")
    (tmp_path / "bad.yaml").write_text("base: iter5\ntrain: {optimizer: {lr: -1}}\n")
    (tmp_path / "top.yaml").write_text("base: bad\ntrain: {epochs: 2}\n")
    for name, words in [("a", "makes a cycle"), ("missing", "not found: no_such_config"),
                        ("top", f"{tmp_path / 'bad.yaml'}: train.optimizer.lr")]:
        with pytest.raises(UserError) as caught:
            load_config(tmp_path / f"{name}.yaml")
        assert words in str(caught.value) and "\n" not in str(caught.value), caught.value


def test_print_config_shows_the_merged_config_and_init_from_a_packaged_config_still_copies_it(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: iter5\ntrain: {epochs: 3}\n")
    shown = run_subprocess("train", mine, "--print-config")
    assert shown.returncode == 0, shown.stderr
    merged = yaml.safe_load(shown.stdout)
    assert merged["train"]["epochs"] == 3 and merged["model"]["name"] == "iter5" and "base" not in merged
    made = run_subprocess("init", tmp_path / "copy", "--from", "iter5")
    assert made.returncode == 0, made.stderr
    assert load_config(tmp_path / "copy.yaml").train == load_config("iter5").train


def test_init_from_a_config_with_a_base_copies_it_merged(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: iter5\ntrain: {epochs: 3}\n")
    made = run_subprocess("init", tmp_path / "copy", "--from", tmp_path / "mine.yaml")
    assert made.returncode == 0, made.stderr
    copy = load_config(tmp_path / "copy.yaml")
    assert copy.name == "copy" and copy.train == load_config(tmp_path / "mine.yaml").train
    assert "base" not in yaml.safe_load((tmp_path / "copy.yaml").read_text())
