import pytest

from longtail.config import ConfigError, load_config


def test_defaults_are_bcl_on_digits_lt():
    config = load_config()
    assert config.method["name"] == "bcl"
    assert config.data.format == "digits"
    assert config.method["alpha"] == 2.0 and config.method["beta"] == 0.6


def test_files_merge_in_order_then_overrides(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("optim:\n  lr: 0.5\n  epochs: 7\nmethod:\n  name: bcl\n  beta: 0.3\n")
    second = tmp_path / "b.yaml"
    second.write_text("optim:\n  lr: 0.2\n")
    config = load_config([first, second], ["optim.epochs=9", "data.views=[auto+cutout,sim,rand]"])
    assert config.optim.lr == 0.2
    assert config.optim.epochs == 9
    assert config.method["beta"] == 0.3
    assert config.data.views == ["auto+cutout", "sim", "rand"]


def test_values_are_coerced_to_the_schema_types():
    config = load_config([], ["optim.lr=1e-3", "optim.epochs=3.0", "trainer.deterministic=true"])
    assert config.optim.lr == pytest.approx(0.001)
    assert config.optim.epochs == 3 and isinstance(config.optim.epochs, int)
    assert config.trainer.deterministic is True


def test_method_and_loss_options_come_from_their_signatures():
    config = load_config([], ["method.name=logit_adjustment", "loss.tau=1.5"])
    assert config.method == {"name": "logit_adjustment", "drw_epoch": None, "drw_beta": 0.9999, "cdb_tau": None}
    assert config.loss == {"name": "logit_adjusted", "tau": 1.5}
    config = load_config([], ["method.beta=0.3", "loss.name=balanced_softmax"])
    assert config.method == {"name": "bcl", "alpha": 2.0, "beta": 0.3, "temperature": 0.1, "decoupled": False}
    assert config.loss == {"name": "balanced_softmax"}


def test_each_method_brings_its_loss_and_classifier_unless_the_config_names_them():
    assert load_config([], ["method.name=ce"]).loss == {"name": "ce", "label_smoothing": 0.0}
    assert load_config([], ["method.name=ce"]).model.classifier == "linear"
    assert load_config().model.classifier == "cosine"  # BCL's
    assert load_config([], ["model.classifier=linear"]).model.classifier == "linear"


@pytest.mark.parametrize(
    "overrides, words",
    [
        # a key the chosen method or loss does not take is refused, never ignored
        (["method.name=ce", "method.tau=2"], ["method.tau", "'ce'", "loss.tau"]),
        (["method.name=ce", "loss.tau=2"], ["loss.tau", "'ce'", "its keys: label_smoothing"]),
        (["loss.name=focall"], ["loss.name", "focall"]),
        (["loss.taw=2"], ["loss.taw", "loss.tau"]),
        (["loss.alpha=2"], ["loss.alpha", "method.alpha"]),
        (["method.name=[bcl]"], ["method.name", "['bcl']"]),
        (["model.hidden_dim=0"], ["model.hidden_dim", "0"]),
        (["method.name=crt"], ["model.init_from", "crt"]),
        (["method.name=logit_adjustment", "loss.name=ce"], ["loss.name", "method.name=supervised"]),
        (["loss.tau=nan"], ["loss.tau", "finite"]),
        (["optim.lr=inf"], ["optim.lr", "finite"]),
    ],
)
def test_keys_of_the_wrong_method_or_loss_are_named(overrides, words):
    with pytest.raises(ConfigError) as error:
        load_config([], overrides)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "override, words",
    [
        ("optim.lrr=0.1", ["optim.lrr", "optim.lr"]),
        ("dataa.seed=1", ["dataa", "data"]),
        ("method.alpah=1", ["method.alpah", "method.alpha"]),
        ("method.name=bcll", ["bcll", "bcl"]),
        ("model.backbone=resnet33", ["resnet33", "resnet32"]),
        ("data.imbalance_factor=0.5", ["data.imbalance_factor", "0.5"]),
        ("optim.lr=fast", ["optim.lr", "fast"]),
        ("optim.epochs=2.5", ["optim.epochs", "2.5"]),
        ("data.views=[auto,blur]", ["data.views[1]", "blur"]),
        ("data.root=/no/such/place", ["data.root", "/no/such/place"]),
        ("data.profile=linear", ["data.profile", "linear"]),
        ("trainer.precision=8", ["trainer.precision", "8"]),
        ("data.image_size=0", ["data.image_size", "0"]),
        ("data.resize=-3", ["data.resize", "-3"]),
        ("data.resize=32", ["data.resize", "data.format=digits"]),
        ("noequals", ["noequals", "key=value"]),
    ],
)
def test_bad_values_name_the_key_and_value(override, words):
    with pytest.raises(ConfigError) as error:
        load_config([], [override])
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_method_that_needs_more_views_than_given():
    with pytest.raises(ConfigError, match="needs 3 views"):
        load_config([], ["data.views=[standard]"])


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("optim:\n  lr: 0.1\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+"):
        load_config([path])


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_config([tmp_path / "nothere.yaml"])


def test_every_shipped_config_loads(monkeypatch):
    from pathlib import Path

    configs = sorted(Path(__file__).parents[1].glob("configs/**/*.yaml"))
    assert configs
    for path in configs:
        # the CIFAR recipes point at ../shared/data, which may be absent: check the rest
        overrides = ["data.root=null", "data.format=digits"]
        # a pre-training method's file goes over the shared pre-training recipe, and names its method
        # (or, for SimCLR's decoupled forms, its objective)
        files = [path.parents[1] / "pretrain.yaml", path] if path.parent.name == "pretrain" else [path]
        try:
            config = load_config(files, overrides)
        except ConfigError as error:  # a second stage, refused without its first stage's run
            assert "model.init_from" in str(error), f"{path}: {error}"
            config = load_config(files, [*overrides, f"model.init_from={path.parent}"])
        assert config.optim.epochs >= 1
        if path.parent.name == "pretrain":
            assert path.stem in (config.method["name"], config.method.get("objective"))
            assert config.data.batch_size == 512


def test_a_method_named_in_short_drops_the_earlier_loss_too(tmp_path):
    recipe = tmp_path / "bcl.yaml"
    recipe.write_text("method: bcl\nloss:\n  name: logit_adjusted\n  tau: 2.0\n")
    short = tmp_path / "ce.yaml"
    short.write_text("method: ce\n")
    assert load_config([recipe, short]).loss == {"name": "ce", "label_smoothing": 0.0}
    assert load_config([recipe], ["method=ce"]).loss == {"name": "ce", "label_smoothing": 0.0}


def test_naming_another_method_drops_the_earlier_methods_keys(tmp_path):
    recipe = tmp_path / "bcl.yaml"
    recipe.write_text("method:\n  name: bcl\n  alpha: 1.5\n  temperature: 0.2\nloss:\n  name: logit_adjusted\n  tau: 2.0\n")
    config = load_config([recipe], ["method.name=balanced_softmax"])
    assert config.method == {"name": "balanced_softmax", "drw_epoch": None, "drw_beta": 0.9999, "cdb_tau": None}
    assert config.loss == {"name": "balanced_softmax"}  # the recipe's loss went with its method
    kept = load_config([recipe], ["method.beta=0.1"])
    assert kept.method["alpha"] == 1.5 and kept.method["beta"] == 0.1 and kept.loss["tau"] == 2.0
    # the order of the overrides does not matter
    assert load_config([recipe], ["loss.name=ce", "method.name=ce"]).loss == {"name": "ce", "label_smoothing": 0.0}
