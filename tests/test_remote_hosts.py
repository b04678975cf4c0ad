"""Keys stay with their host and images leave only with consent (issue 17): the one implementation in
`remote_hosts`, and the CLI over real HTTP on 127.0.0.1."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tifffile

from napari_fracto.cli import main
from napari_fracto.remote_hosts import (
    CONSENT,
    RemoteHostError,
    host_of,
    ip_of,
    is_local_host,
    key_variable,
    require_key,
    resolve_api_key,
)
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "OTHER_KEY"):
        monkeypatch.delenv(name, raising=False)
    CONSENT.forget()
    yield
    CONSENT.forget()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://134744072/v1", "8.8.8.8"),  # decimal: counted as a local single-label name before
        ("http://0x08080808/v1", "8.8.8.8"),  # hex
        ("http://0x8.0x8.0x8.0x8/v1", "8.8.8.8"),
        ("http://8.8.2056/v1", "8.8.8.8"),  # short form
        ("http://[::ffff:8.8.8.8]/v1", "::ffff:808:808"),  # IPv4-mapped IPv6
        ("http://[2001:4860:4860::8888]/v1", "2001:4860:4860::8888"),
    ],
)
def test_numeric_forms_of_a_public_address_are_not_local(url, address):
    assert str(ip_of(host_of(url))) == address
    assert not is_local_host(url)
    assert CONSENT.warning(url) is not None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/v1", "http://2130706433/v1", "http://0x7f000001/v1", "http://[::1]/v1",
     "http://[::ffff:127.0.0.1]/v1", "http://localhost:8000/v1", "http://vllm.localhost/v1"],
)  # fmt: skip
def test_loopback_in_any_form_is_local(url):
    assert is_local_host(url)
    assert CONSENT.warning(url) is None


def test_lan_and_single_label_hosts_need_consent_which_is_remembered_for_that_host_only():
    assert not is_local_host("http://gpu-node-3:8000/v1")
    assert not is_local_host("http://192.168.1.20:8000/v1")
    CONSENT.confirm("http://gpu-node-3:8000/v1")
    assert CONSENT.warning("http://gpu-node-3:9000/v1") is None  # the host, whatever the port
    assert CONSENT.warning("http://gpu-node-4:8000/v1") is not None


def test_consent_names_the_real_host_when_the_base_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://vlm.example.org/v1")
    warning = CONSENT.warning("")
    assert "vlm.example.org" in warning
    assert "api.openai.com" not in warning


def test_openai_key_goes_only_to_openai_unless_named(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-key")
    assert resolve_api_key("https://api.openai.com/v1") == "sk-openai"
    assert resolve_api_key(None) == "sk-openai"
    assert resolve_api_key("https://generativelanguage.googleapis.com/v1beta/openai/") == "gm-key"
    for elsewhere in ("http://gpu-node-3:8000/v1", "http://192.168.1.20/v1", "https://vlm.example.org/v1"):
        assert resolve_api_key(elsewhere) is None
    assert resolve_api_key("https://vlm.example.org/v1", "OPENAI_API_KEY") == "sk-openai"  # named: used


def test_a_named_variable_is_the_only_one_read(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert key_variable("https://api.openai.com/v1", "OTHER_KEY") == "OTHER_KEY"
    assert resolve_api_key("https://api.openai.com/v1", "OTHER_KEY") is None
    with pytest.raises(RemoteHostError, match=r"\$OTHER_KEY is not set"):
        require_key("https://api.openai.com/v1", "OTHER_KEY")
    assert require_key("http://127.0.0.1:8000/v1") is None  # a local server needs no key


def test_cli_with_an_unset_named_variable_sends_nothing_and_says_which(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "a.tif", np.eye(64, dtype=np.uint8))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    with FakeOpenAIServer() as server:
        code = main(
            ["analyze", str(tmp_path), "--task", "fracture", "--backend", "openai", "--model", "m",
             "--base-url", server.base_url, "--api-key-env", "OTHER_KEY"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "$OTHER_KEY is not set" in err
    assert "Traceback" not in err
    assert server.chat_requests() == []


def test_cli_allow_remote_without_a_key_is_a_clear_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "a.tif", np.eye(64, dtype=np.uint8))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code = main(["analyze", str(tmp_path), "--task", "fracture", "--backend", "openai", "--model", "gpt",
                 "--allow-remote"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "no API key for api.openai.com" in err
    assert "$OPENAI_API_KEY" in err
