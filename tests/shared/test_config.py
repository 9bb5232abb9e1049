from pathlib import Path

import pytest

from fedser_shared.config import RunConfig, load_run_config, to_toml
from fedser_shared.errors import ConfigError


def test_defaults_follow_the_design() -> None:
    config = load_run_config()
    assert config.model.hidden == [256, 128] and config.model.dropout == 0.2
    assert config.train.batch_size == 16 and config.train.optimizer == "sgd"
    assert config.semi.views == 10 and config.semi.temperature == 2.0 and config.semi.uncertainty_max == 0.005
    assert config.num_classes == 4 and config.labels.class_of("Happiness") == 1 and config.labels.class_of("bored") is None
    assert config.feature_dim == 988


def test_toml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[federation]\nrounds = 12\nfraction = 0.5\n[train]\noptimizer = 'adam'\n")
    config = load_run_config(path, {"federation.rounds": 3, "federation.seed": None})
    assert config.federation.rounds == 3 and config.federation.fraction == 0.5 and config.train.optimizer == "adam"


def test_written_toml_reads_back_identically(tmp_path: Path) -> None:
    config = load_run_config(None, {"federation.algorithm": "scaffold", "semi.enabled": True})
    path = tmp_path / "run.toml"
    path.write_text(to_toml(config))
    assert load_run_config(path) == config
    assert RunConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[federation]\nfraction = 1.5\n", "'federation.fraction'"),
        ("[federation]\nrounds = 'many'\n", "'federation.rounds'"),
        ("[train]\noptimiser = 'sgd'\n", "'train.optimiser': unknown field"),
        ("[features]\nname = 'mfcc'\n", "'features.name'"),
        ("[labels]\nemotion_map = { joy = 9 }\n", "outside 0..3"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_malformed_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation\nrounds = 3")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.toml")


def test_global_normalisation_is_refused_not_silently_ignored() -> None:
    with pytest.raises(ConfigError, match="'global'.*not implemented"):
        load_run_config(None, {"features.normalisation": "global"})


def test_an_unknown_semi_method_names_the_field() -> None:
    with pytest.raises(ConfigError, match="semi.method"):
        load_run_config(None, {"semi.method": "mixmatch"})
