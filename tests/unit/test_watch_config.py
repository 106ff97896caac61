"""Configuration of `syncagent watch`: flags over environment over TOML over defaults; secrets only from env or files."""

from __future__ import annotations

import argparse

import pytest

from syncagent.sidecar.config import ConfigError, add_config_flags, load_config, parse_duration, parse_size


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_flags(parser)
    return parser.parse_args(list(argv))


def test_precedence_flag_over_env_over_file(tmp_path):
    config_file = tmp_path / "watch.toml"
    config_file.write_text('source = "/srv/primary"\ndestination = "/srv/secondary"\nworkers = 2\nsettle = "1s"\n'
                           'max_delay = "10s"\nreconcile_interval = "10m"\n')
    env = {"SYNCAGENT_CONFIG": str(config_file), "SYNCAGENT_WORKERS": "3", "SYNCAGENT_TOKEN": "t0k3n"}
    config = load_config(parse(), env)
    assert (config.source, config.workers, config.settle, config.reconcile_interval) == ("/srv/primary", 3, 1.0, 600.0)
    config = load_config(parse("--workers", "5", "/other/src", "/other/dst"), env)
    assert (config.workers, config.source, config.destination) == (5, "/other/src", "/other/dst")
    assert config.auth_settings().tokens == ("t0k3n",)


def test_watch_section_is_accepted(tmp_path):
    config_file = tmp_path / "watch.toml"
    config_file.write_text('[watch]\nsource = "/a"\ndestination = "/b"\nnotifications = false\n')
    config = load_config(parse("--config", str(config_file)), {})
    assert config.notifications is False


def test_secrets_are_refused_in_the_file(tmp_path):
    config_file = tmp_path / "watch.toml"
    for key in ("token", "jwt_secret"):
        config_file.write_text(f'source = "/a"\ndestination = "/b"\n{key} = "hunter2"\n')
        with pytest.raises(ConfigError, match="secrets are not read") as error:
            load_config(parse("--config", str(config_file)), {})
        assert "hunter2" not in str(error.value)


def test_there_is_no_flag_for_a_secret(capsys):
    for flag in ("--token", "--jwt-secret"):
        with pytest.raises(SystemExit):
            parse("/a", "/b", flag, "hunter2")
        assert "not accepted on the command line" in capsys.readouterr().err


def test_token_file_with_several_tokens(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("# rotation\nold-token\n\nnew-token\n")
    config = load_config(parse("/a", "/b", "--token-file", str(token_file)), {})
    assert config.auth_settings().tokens == ("old-token", "new-token")


def test_notifications_without_credentials_are_a_configuration_error():
    with pytest.raises(ConfigError, match="credentials"):
        load_config(parse("/a", "/b"), {})
    assert load_config(parse("/a", "/b", "--notifications", "false"), {}).notifications is False


def test_jwt_needs_issuer_and_audience():
    with pytest.raises(ConfigError, match="issuer"):
        load_config(parse("/a", "/b"), {"SYNCAGENT_JWT_SECRET": "s" * 40})
    config = load_config(parse("/a", "/b", "--jwt-issuer", "i", "--jwt-audience", "a"), {"SYNCAGENT_JWT_SECRET": "s" * 40})
    assert config.auth_settings().jwt_enabled


def test_describe_never_shows_secrets():
    config = load_config(parse("/a", "/b"), {"SYNCAGENT_TOKEN": "t0k3n-value", "SYNCAGENT_JWT_SECRET": "jwt-secret-value",
                                             "SYNCAGENT_JWT_ISSUER": "i", "SYNCAGENT_JWT_AUDIENCE": "a"})
    shown = repr(config.describe()) + repr(config)
    assert "t0k3n-value" not in shown and "jwt-secret-value" not in shown
    assert config.describe()["token"] == "set"


def test_bad_values_name_their_origin(tmp_path):
    with pytest.raises(ConfigError, match="--workers"):
        load_config(parse("/a", "/b", "--workers", "0"), {"SYNCAGENT_TOKEN": "x"})
    with pytest.raises(ConfigError, match="SYNCAGENT_SETTLE"):
        load_config(parse("/a", "/b"), {"SYNCAGENT_TOKEN": "x", "SYNCAGENT_SETTLE": "soon"})
    config_file = tmp_path / "watch.toml"
    config_file.write_text("nonsense = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'nonsense'"):
        load_config(parse("/a", "/b", "--config", str(config_file)), {"SYNCAGENT_TOKEN": "x"})


def test_every_source_off_is_refused():
    with pytest.raises(ConfigError, match="every event source is off"):
        load_config(parse("s3://bucket/x", "/b", "--notifications", "false", "--reconcile-interval", "0"), {})


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("2", 2), (1.5, 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, size", [("1MiB", 1 << 20), ("16KiB", 16384), ("4096", 4096), (10, 10)])
def test_sizes(text, size):
    assert parse_size(text) == size
