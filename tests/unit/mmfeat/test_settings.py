import pytest

from mmfeat.errors import ConfigError
from mmfeat.settings import FIELDS, PROJECT_ROOT, load_settings


def test_unknown_env_var_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFEAT_BATCH_SIZ", "4")
    with pytest.raises(ConfigError, match="MMFEAT_BATCH_SIZ"):
        load_settings()


def test_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFEAT_BATCH_SIZE", "8")
    monkeypatch.setenv("MMFEAT_ALLOWED_HOSTS", '["Media.Example.com"]')
    s = load_settings(group_id="g1", triton_url=None)
    assert s.worker.batch_size == 8 and s.worker.group_id == "g1" and s.fetch.allowed_hosts == ["media.example.com"]


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFEAT_BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match="invalid setting batch_size"):
        load_settings()


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFEAT_SASL_PASSWORD", "hunter2")
    s = load_settings()
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    from mmfeat.kafka.client import connection_config

    assert connection_config(s.updated({"bootstrap_servers": "b:1"}))["sasl.password"] == "hunter2"


def test_every_setting_is_documented() -> None:
    doc = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    assert [n for n in FIELDS if f"`MMFEAT_{n.upper()}`" not in doc] == []
