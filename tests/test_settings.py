"""Backend settings persist between sessions, and an API key can never be among them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from napari_fracto.backends.factory import make_backend
from napari_fracto.remote_hosts import resolve_api_key
from napari_fracto.settings import BackendSettings, load_settings, save_settings, settings_path


def test_defaults_when_nothing_saved():
    settings = load_settings()
    assert settings.kind == "transformers"
    assert settings.model == "Qwen/Qwen3-VL-2B-Instruct"


def test_saved_settings_come_back_in_a_new_session():
    save_settings(BackendSettings(kind="openai", model="qwen3-vl", base_url="http://127.0.0.1:8000/v1"))
    again = load_settings()
    assert (again.kind, again.model, again.base_url) == ("openai", "qwen3-vl", "http://127.0.0.1:8000/v1")


def test_settings_refuse_an_api_key_field():
    with pytest.raises(ValidationError):
        BackendSettings(api_key="sk-test-SECRET123")


def test_a_key_put_in_the_file_by_hand_is_ignored_and_never_rewritten(monkeypatch):
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": "openai", "model": "m", "api_key": "sk-test-SECRET123"}))
    settings = load_settings()
    assert settings.kind == "openai"
    save_settings(settings)
    assert "SECRET123" not in path.read_text()


def test_unreadable_settings_fall_back_to_defaults(caplog):
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert load_settings() == BackendSettings()
    assert "Ignoring unreadable settings" in caplog.text


def test_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("MY_VLM_KEY", "sk-env")
    settings = BackendSettings(kind="openai", model="m", api_key_env="MY_VLM_KEY")
    assert resolve_api_key(settings.base_url, settings.api_key_env) == "sk-env"
    assert resolve_api_key(settings.base_url, settings.api_key_env, "sk-typed") == "sk-typed"


def test_the_old_default_key_variable_in_a_saved_file_is_not_taken_as_a_choice():
    save_settings(BackendSettings(kind="openai", model="m", base_url="http://10.0.0.5:8000/v1"))
    path = settings_path()
    path.write_text(path.read_text().replace('"api_key_env": ""', '"api_key_env": "OPENAI_API_KEY"'))
    assert load_settings().api_key_env == ""


def test_factory_builds_each_kind_without_loading_anything():
    local = make_backend(BackendSettings(model="/nonexistent/model", device="cpu"))
    assert (local.name, local.model) == ("transformers", "/nonexistent/model")
    remote = make_backend(BackendSettings(kind="openai", model="m", base_url="http://127.0.0.1:9/v1"), "sk-x")
    assert (remote.name, remote.model) == ("openai", "m")
