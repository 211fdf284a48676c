"""wfs.credentials: base URL and API key resolution, without touching the real home directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wfs.credentials import CredentialsError, netrc_machine, resolve_api_key, resolve_base_url

KEY_OPTION = "o" * 40
KEY_ENV = "e" * 40
KEY_NETRC = "n" * 40
KEY_OTHER = "x" * 40


@pytest.fixture
def home(tmp_path):
    """An empty fake home; returns an env mapping pointing there."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home")}


def write_netrc(path, text):
    path = Path(path)
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


# --- base URL -------------------------------------------------------------


def test_base_url_default(home):
    assert resolve_base_url(None, env=home) == "https://api.wandb.ai"


def test_base_url_option_over_env_over_settings(home, tmp_path):
    settings_dir = tmp_path / "cfg"
    settings_dir.mkdir()
    (settings_dir / "settings").write_text("[default]\nbase_url = https://settings.example/\n")
    env = {**home, "WANDB_CONFIG_DIR": str(settings_dir)}
    assert resolve_base_url(None, env=env) == "https://settings.example"
    env["WANDB_BASE_URL"] = "http://env.example:8080/"
    assert resolve_base_url(None, env=env) == "http://env.example:8080"
    assert resolve_base_url("https://option.example//", env=env) == "https://option.example"


def test_base_url_from_default_settings_location(home):
    cfg = os.path.join(home["HOME"], ".config", "wandb")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "settings"), "w") as fh:
        fh.write("[default]\nentity = me\nbase_url = http://127.0.0.1:8080/\n")
    assert resolve_base_url(None, env=home) == "http://127.0.0.1:8080"


def test_settings_without_base_url_falls_back_to_default(home, tmp_path):
    (tmp_path / "settings").write_text("[default]\nentity = me\n")
    assert resolve_base_url(None, env={**home, "WANDB_CONFIG_DIR": str(tmp_path)}) == "https://api.wandb.ai"


def test_broken_settings_file_is_a_clear_error(home, tmp_path):
    (tmp_path / "settings").write_text("base_url = no section header\n")
    with pytest.raises(ValueError, match="settings"):
        resolve_base_url(None, env={**home, "WANDB_CONFIG_DIR": str(tmp_path)})


@pytest.mark.parametrize("bad", ["ftp://host", "api.wandb.ai", "https://", "file:///etc/passwd"])
def test_base_url_scheme_is_validated(home, bad):
    with pytest.raises(ValueError, match="http"):
        resolve_base_url(bad, env=home)


# --- API key --------------------------------------------------------------


def test_key_option_over_env_over_netrc(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", f"machine api.wandb.ai login user password {KEY_NETRC}\n")
    env = {**home, "NETRC": str(netrc)}
    base = "https://api.wandb.ai"
    assert resolve_api_key(base, None, env=env) == KEY_NETRC
    env["WANDB_API_KEY"] = KEY_ENV
    assert resolve_api_key(base, None, env=env) == KEY_ENV
    assert resolve_api_key(base, KEY_OPTION, env=env) == KEY_OPTION


def test_netrc_in_home_is_used(home):
    write_netrc(os.path.join(home["HOME"], ".netrc"), f"machine api.wandb.ai login user password {KEY_NETRC}\n")
    assert resolve_api_key("https://api.wandb.ai", env=home) == KEY_NETRC


def test_netrc_keyed_by_host_and_port(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", (
        f"machine 127.0.0.1 login user password {KEY_OTHER}\n"
        f"machine 127.0.0.1:8080 login user password {KEY_NETRC}\n"
    ))
    env = {**home, "NETRC": str(netrc)}
    assert netrc_machine("http://127.0.0.1:8080") == "127.0.0.1:8080"
    assert resolve_api_key("http://127.0.0.1:8080", env=env) == KEY_NETRC
    assert resolve_api_key("http://127.0.0.1", env=env) == KEY_OTHER


def test_host_entry_without_port_does_not_match_url_with_port(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", f"machine 127.0.0.1 login user password {KEY_OTHER}\n")
    with pytest.raises(CredentialsError, match="127.0.0.1:8080"):
        resolve_api_key("http://127.0.0.1:8080", env={**home, "NETRC": str(netrc)})


def test_host_port_entry_does_not_match_url_without_port(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", f"machine example.com:8443 login user password {KEY_OTHER}\n")
    with pytest.raises(CredentialsError):
        resolve_api_key("https://example.com", env={**home, "NETRC": str(netrc)})


def test_netrc_default_entry_is_not_used(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", f"default login user password {KEY_OTHER}\n")
    with pytest.raises(CredentialsError):
        resolve_api_key("https://api.wandb.ai", env={**home, "NETRC": str(netrc)})


def test_missing_key_message_names_host_and_fix_but_no_key(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", f"machine other.example login user password {KEY_OTHER}\n")
    with pytest.raises(CredentialsError) as exc:
        resolve_api_key("http://wandb.local:8080", env={**home, "NETRC": str(netrc)})
    message = str(exc.value)
    assert "wandb.local:8080" in message
    assert "wandb login --host http://wandb.local:8080" in message
    assert "WANDB_API_KEY" in message
    assert str(netrc) in message
    assert KEY_OTHER not in message


def test_malformed_key_is_a_clear_error_without_the_key(home):
    short = "abc123"
    with pytest.raises(CredentialsError, match="malformed") as exc:
        resolve_api_key("https://api.wandb.ai", None, env={**home, "WANDB_API_KEY": short})
    assert short not in str(exc.value)
    with pytest.raises(CredentialsError, match="malformed"):
        resolve_api_key("https://api.wandb.ai", "k" * 39 + "!", env=home)


def test_prefixed_on_prem_key_is_accepted(home):
    key = "local-" + "a1_B" * 10
    assert resolve_api_key("https://wandb.corp", key, env=home) == key


def test_netrc_parse_error_is_a_credentials_error(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", "bogus api.wandb.ai\n")
    with pytest.raises(CredentialsError, match="cannot parse the netrc file .* line 1"):
        resolve_api_key("https://api.wandb.ai", env={**home, "NETRC": str(netrc)})


def test_unreadable_netrc_is_a_credentials_error(home, tmp_path, monkeypatch):
    netrc = write_netrc(tmp_path / "netrc", f"machine api.wandb.ai login u password {KEY_NETRC}\n")

    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("wfs.credentials.netrc.netrc", denied)  # chmod 0 does not stop root
    with pytest.raises(CredentialsError, match="permission denied"):
        resolve_api_key("https://api.wandb.ai", env={**home, "NETRC": str(netrc)})


def test_entry_without_password_is_a_credentials_error(home, tmp_path):
    netrc = write_netrc(tmp_path / "netrc", "machine api.wandb.ai login user\n")
    with pytest.raises(CredentialsError, match="no password"):
        resolve_api_key("https://api.wandb.ai", env={**home, "NETRC": str(netrc)})


def test_unreadable_netrc_via_directory_is_a_credentials_error(home, tmp_path):
    # A directory where the file should be fails on every uid (also root).
    (tmp_path / "netrc").mkdir()
    with pytest.raises(CredentialsError, match="cannot read the netrc file"):
        resolve_api_key("https://api.wandb.ai", env={**home, "NETRC": str(tmp_path / "netrc")})
