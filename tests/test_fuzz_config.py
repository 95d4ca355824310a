"""Property-based: any mutation of a valid config or override exits 0 or 2 with one line, never a traceback."""

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

VALID = yaml.safe_load((REPO / "configs" / "iter5.yaml").read_text())
KEYS = ["name", "seed", "device", "data", "data.dataset", "data.val_split", "data.normalize", "data.augment",
        "data.augment.rotate", "data.augment.center_crop", "data.augment.center_crop.size", "data.augment.scale",
        "data.augment.translate", "data.pipeline", "data.num_workers", "model", "model.name", "model.dropout_p",
        "train", "train.epochs", "train.batch_size", "train.optimizer", "train.optimizer.name",
        "train.optimizer.lr", "train.optimizer.momentum", "train.scheduler", "train.scheduler.name",
        "train.scheduler.step_size", "train.early_stopping", "train.early_stopping.patience",
        "train.checkpoint_monitor", "train.label_smoothing", "train.amp", "train.limit_train_batches", "train.tta",
        "train.compile", "train.channels_last", "model.init", "train.freeze", "bogus",
        "train.bogus", "data.augment.bogus"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["auto", "adam", "sgd", "step", "cosine", "mnist", "iter5", "val_loss", "cpu",
                                     "none", "classic", "test_acc", "1e-3", "[1, 2]", "{a: 1}"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def set_dotted(raw: dict, key: str, value) -> dict:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return raw


def check(cli, tmp_path, *args):
    code, out, err = cli("train", *args, "--print-config")
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert out == "" and err.count("\n") == 1 and err.startswith("mnistlab train: error: ")
    return code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3))
def test_mutated_config_files(cli, tmp_path, mutations):
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    for key, value in mutations:
        set_dotted(raw, key, value)
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw))
    check(cli, tmp_path, path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=15)),
    st.text(max_size=25),
), min_size=1, max_size=3))
def test_random_override_strings(cli, tmp_path, overrides):
    args = [REPO / "configs" / "iter5.yaml"]
    for item in overrides:
        args += ["--set", item]
    check(cli, tmp_path, *args)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_random_yaml_text(cli, tmp_path, text):
    path = tmp_path / "random.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    check(cli, tmp_path, path)
