"""Config loading: unknown keys, wrong types and bad ranges are one-line errors naming the key."""
import pytest

from pipeline.config import ConfigError, load_config, result_values

DEMO = "configs/demo.yaml"


def test_demo_config_loads_with_contract_keys():
    cfg = load_config(DEMO)
    assert cfg.run.name == "demo"
    assert cfg.dataset.url is None and cfg.dataset.sha256 is None and cfg.dataset.test_url is None
    assert cfg.task.labels == 12 and len(cfg.labels) == 12
    assert cfg.labels[:2] == ["_silence_", "_unknown_"]


@pytest.mark.parametrize("path", ["configs/speech_commands_v2_12.yaml", "configs/speech_commands_v2_35.yaml",
                                  "configs/speech_commands_v1_12.yaml"])
def test_real_dataset_configs_load(path):
    cfg = load_config(path)
    assert cfg.dataset.source == "download" and cfg.dataset.url.startswith("http")


def test_set_overrides_dotted_keys_with_yaml_values():
    cfg = load_config(DEMO, ["train.epochs=3", "model.gru_units=[32, 16]", "run.name=x"])
    assert cfg.train.epochs == 3 and cfg.model.gru_units == [32, 16] and cfg.run.name == "x"
    v2 = "configs/speech_commands_v2_12.yaml"  # its test_url is set: YAML's null must clear it
    assert load_config(v2).dataset.test_url and load_config(v2, ["dataset.test_url=null"]).dataset.test_url is None


def test_int_is_accepted_where_a_float_is_expected():
    assert load_config(DEMO, ["train.learning_rate=1"]).train.learning_rate == 1.0


@pytest.mark.parametrize("override, key", [
    ("train.epoch=3", "train.epoch"),
    ("trian.epochs=3", "trian"),
    ("model.gru_units.x=1", "model.gru_units"),
])
def test_unknown_key_is_an_error_naming_it(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [override])
    assert key in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, key", [
    ("train.epochs=three", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("train.mixed_precision=maybe", "train.mixed_precision"),
    ("model.gru_units=64", "model.gru_units"),
    ("train.distribute=horovod", "train.distribute"),
    ("task.labels=[yes, 3]", "task.labels"),
])
def test_wrong_type_is_an_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEMO, [override])


@pytest.mark.parametrize("override, key", [
    ("features.n_fft=400", "features.n_fft"),
    ("model.gru_units=[64]", "model.gru_units"),
    ("train.epochs=0", "train.epochs"),
    ("task.labels=20", "task.labels"),
    ("features.shard=3/2", "features.shard"),
    ("features.fmax=9000", "features.fmax"),
    ("train.ema_momentum=1.0", "train.ema_momentum"),
    ("train.continuous_hard_negative_threshold=1.0", "train.continuous_hard_negative_threshold"),
    ("train.continuous_hard_negative_copies=0", "train.continuous_hard_negative_copies"),
    ("train.continuous_hard_negative_rounds=0", "train.continuous_hard_negative_rounds"),
    ("train.continuous_chain=0", "train.continuous_chain"),
    ("train.continuous_floor_probability=1.5", "train.continuous_floor_probability"),
    ("train.continuous_candidates=0", "train.continuous_candidates"),
    ("train.continuous_label_smoothing=1.0", "train.continuous_label_smoothing"),
    ("features.batch_size=0", "features.batch_size"),
    ("features.workers=-1", "features.workers"),
    ("synth.rate_min=250", "synth.rate_max"),
    ("synth.pitch_max=120", "synth.pitch_max"),
])
def test_out_of_range_is_an_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEMO, [override])


def test_continuous_candidates_need_the_validation_recordings_that_choose():
    load_config(DEMO, ["train.continuous_candidates=2"])
    with pytest.raises(ConfigError, match=r"export\.long_audio_minutes"):
        load_config(DEMO, ["train.continuous_candidates=2", "export.long_audio_minutes=0"])


def test_unknown_key_in_yaml_file_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  name: x\n  colour: blue\n")
    with pytest.raises(ConfigError, match=r"run\.colour"):
        load_config(path)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_feature_cache_key_ignores_training_keys_but_not_feature_keys():
    base = load_config(DEMO)
    assert load_config(DEMO, ["train.epochs=1"]).features_dir == base.features_dir
    assert load_config(DEMO, ["features.n_mels=32"]).features_dir != base.features_dir
    # SpecAugment masks are drawn while training, so they keep the cache; the offline augmentations do not
    assert load_config(DEMO, ["augment.time_mask_width=3"]).features_dir == base.features_dir
    assert load_config(DEMO, ["augment.tilt_probability=0.2"]).features_dir != base.features_dir
    assert load_config(DEMO, ["run.name=other"]).dataset_dir == base.dataset_dir


def test_each_stage_reruns_for_the_keys_it_reads():
    """The keys doit compares for each stage (pipeline/runner.py): a mask width re-runs train, not features."""
    from pipeline.runner import stages

    def keys(cfg):
        return {s.name: result_values(cfg, s.config_keys, s.ignore) for s in stages(cfg)}

    base, masked = keys(load_config(DEMO)), keys(load_config(DEMO, ["augment.time_mask_width=3"]))
    assert masked["features"] == base["features"] and masked["train"] != base["train"]
    # the validation recordings re-run verify alone, and train too when they choose among continuous candidates
    shorter = keys(load_config(DEMO, ["export.long_audio_minutes=5"]))
    assert shorter["train"] == base["train"] and shorter["verify"] != base["verify"]
    two = ["train.continuous_candidates=2"]
    assert keys(load_config(DEMO, two + ["export.long_audio_minutes=5"]))["train"] != keys(load_config(DEMO, two))["train"]


def test_unknown_config_key_on_the_command_line_is_a_one_line_error():
    import subprocess
    import sys

    from pipeline.config import REPO_ROOT

    result = subprocess.run([sys.executable, "-m", "pipeline", "status", "--set", "train.epochz=3"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown config key train.epochz")
    assert len(result.stderr.strip().splitlines()) == 1
