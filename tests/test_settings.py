"""Settings: sources in order, valid choices, the token kept out of sight."""

import pytest

from core.settings import DEFAULT_MODEL, SettingsError, load_settings


def test_defaults_without_any_source(tmp_path):
    """With nothing set, the app targets SD3.5 Medium on the automatic device."""
    settings = load_settings(environ={}, dotenv_path=tmp_path / "none")
    assert settings.model == DEFAULT_MODEL
    assert (settings.device, settings.dtype) == ("auto", "auto")
    assert settings.hf_token is None


def test_environment_beats_secrets_beats_dotenv(tmp_path):
    """The environment wins over st.secrets, which wins over .env."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("SD_MODEL=from-dotenv\nHF_TOKEN=hf_dotenv\nSD_DTYPE=float32\n")
    settings = load_settings(
        environ={"SD_MODEL": "from-env"},
        secrets={"SD_MODEL": "from-secrets", "HF_TOKEN": "hf_secret"},
        dotenv_path=dotenv,
    )
    assert settings.model == "from-env"
    assert settings.hf_token == "hf_secret"
    assert settings.dtype == "float32"


def test_invalid_choice_names_the_valid_values(tmp_path):
    """SD_DEVICE=tpu is refused with the list of devices."""
    with pytest.raises(SettingsError, match="auto, cpu, cuda, mps"):
        load_settings(environ={"SD_DEVICE": "tpu"}, dotenv_path=tmp_path / "none")


def test_token_is_not_in_repr(tmp_path):
    """The token never shows in the settings' repr (and so not in logs)."""
    settings = load_settings(environ={"HF_TOKEN": "hf_SECRET123"}, dotenv_path=tmp_path / "x")
    assert settings.has_token
    assert "hf_SECRET" not in repr(settings)
