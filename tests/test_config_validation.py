"""The configuration is validated: typos, wrong types and missing values name the key and the file."""

import pytest

from braggscope.core.config import DEFAULT_CONFIG_PATH, load_config, save_config, validate_config
from braggscope.core.errors import ConfigError, UserError


def _site(tmp_path, text):
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def _error(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg  # one line, naming the file
    return msg


def test_misspelt_key_is_refused_with_the_allowed_keys(tmp_path):
    msg = _error(_site(tmp_path, "[detector]\ndistanse_m = 1.4\n"))
    assert "[detector] distanse_m: unknown key (allowed: name, pixel_m, shape, cch, distance_m," in msg


def test_wrong_type_is_refused(tmp_path):
    msg = _error(_site(tmp_path, '[detector]\npixel_m = "55e-6"\n'))
    assert "[detector] pixel_m: input should be a valid number, got '55e-6' (str)" in msg
    msg = _error(_site(tmp_path, "[detector]\nshape = [512.5, 512]\n"))
    assert "[detector] shape[0]: input should be a valid integer" in msg
    msg = _error(_site(tmp_path, "[beamline]\nsimulated = 1\n"))
    assert "[beamline] simulated: input should be a valid boolean, got 1 (int)" in msg


def test_misspelt_section_is_refused(tmp_path):
    msg = _error(_site(tmp_path, '[storag]\ndata_dir = "/data"\n'))
    assert "[storag]: unknown section (allowed: beamline, pv, detector, energy, limits, eccentricity, storage, " \
           "simulator" in msg


def test_missing_and_empty_required_values_are_refused(tmp_path):
    msg = _error(_site(tmp_path, '[pv]\ndetector = ""\n'))
    assert "[pv] detector: required value is empty" in msg
    msg = _error(_site(tmp_path, "detector = 5\n"))
    assert "[detector]: must be a table of keys" in msg
    # a whole configuration checked without the packaged defaults: what is missing is named
    data = load_config()
    del data["detector"]["pixel_m"]
    del data["storage"]
    with pytest.raises(ConfigError) as err:
        validate_config(data, "cfg.toml")
    assert "[detector] pixel_m: required key missing" in str(err.value)
    assert "[storage]: required section missing" in str(err.value)


def test_values_out_of_range_are_refused(tmp_path):
    assert "[detector] distance_m: input should be greater than 0" in _error(
        _site(tmp_path, "[detector]\ndistance_m = -1.0\n"))
    assert "[eccentricity] x[0]: input should be a finite number" in _error(
        _site(tmp_path, "[eccentricity]\nx = [nan, 0.0]\n"))
    assert "[limits] eta: limits must be [low, high] with low < high" in _error(
        _site(tmp_path, "[limits]\neta = [120.0, -5.0]\n"))
    assert "[simulator] velocities: unknown motor(s) ['etta']" in _error(
        _site(tmp_path, "[simulator]\nvelocities = {etta = 1.0}\n"))
    assert "[simulator.eccentricity] y: list should have at least 2 items" in _error(
        _site(tmp_path, "[simulator.eccentricity]\ny = [0.1]\n"))


def test_config_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ValueError, match="invalid TOML"):  # ConfigError is a ValueError too
        load_config(_site(tmp_path, "[detector\n"))


def test_a_valid_site_file_and_a_saved_config_load(tmp_path):
    cfg = load_config(_site(tmp_path, "[detector]\ndistance_m = 1\npixel_m = 75e-6\n"
                                      "[storage]\nreadable_paths = [\"/data\"]\n"))
    assert cfg["detector.distance_m"] == 1 and cfg["detector.pixel_m"] == 75e-6
    assert cfg.get("detector.saturation") == 401540 and cfg.path == tmp_path / "site.toml"
    cfg.set("eccentricity.x", [0.5, 0.01])
    saved = save_config(cfg, tmp_path / "saved.toml")
    assert load_config(saved)["eccentricity.x"] == [0.5, 0.01]
    assert load_config().path == DEFAULT_CONFIG_PATH
