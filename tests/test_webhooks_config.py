"""The optional `webhooks:` key of a connection: parsing, every mistake reported with
file, line and key, and the signature keys checked (never shown) at load time."""

from __future__ import annotations

import json

import pytest

from cfbox_watch import config as cfg
from tests.test_config import make_jwt_json, problems_of, write_yaml

KEYS = {"primaryKey": "PRIMARY-KEY-VALUE-123", "secondaryKey": "SECONDARY-KEY-VALUE-456"}


def yaml_with(hooks: str) -> str:
    return f"""
state_dir: state
connections:
  acme:
    jwt_config: acme-config.json
    webhooks: {hooks}
post_production:
  - name: acme-retouch
    connection: acme
    download_folder_id: "5678"
    incoming: in
"""


def jwt(tmp_path, webhooks=KEYS):
    p = make_jwt_json(tmp_path / "acme-config.json")
    if webhooks is not None:
        data = json.loads(p.read_text())
        data["webhooks"] = webhooks
        p.write_text(json.dumps(data))
    return p


def test_parsed(tmp_path):
    jwt(tmp_path)
    c = cfg.load_config(write_yaml(tmp_path, yaml_with(
        "{public_url: 'https://studio.example.com/cfbox/hook', listen: '127.0.0.1:8470'}")))
    w = c.connections["acme"].webhooks
    assert (w.public_url, w.listen_host, w.listen_port) == ("https://studio.example.com/cfbox/hook", "127.0.0.1", 8470)
    ipv6 = cfg.load_config(write_yaml(tmp_path, yaml_with(
        "{public_url: 'https://s.example.com/h', listen: '[::1]:9000'}"), name="b.yaml"))
    assert ipv6.connections["acme"].webhooks.listen_host == "::1"


def test_absent_is_none(tmp_path):
    jwt(tmp_path, webhooks=None)
    c = cfg.load_config(write_yaml(tmp_path, yaml_with("null")))
    assert c.connections["acme"].webhooks is None


@pytest.mark.parametrize("hooks,needle", [
    ("{public_url: 'http://studio.example.com/h', listen: '127.0.0.1:8470'}",
     "connections.acme.webhooks.public_url: 'http://studio.example.com/h': Box delivers webhooks only to https"),
    ("{public_url: 'https://s.example.com/h', listen: '8470'}", "connections.acme.webhooks.listen: '8470' is not host:port"),
    ("{public_url: 'https://s.example.com/h', listen: 'host:99999'}", "webhooks.listen: 'host:99999' is not host:port"),
    ("{public_url: 'https://s.example.com/h'}", "connections.acme.webhooks.listen: is required"),
    ("{listen: '127.0.0.1:1', public_url: 'https://s.example.com/h', lisen: 1}",
     "connections.acme.webhooks.lisen: unknown key; did you mean `listen`?"),
    ("yes", "connections.acme.webhooks"),
])
def test_mistakes_are_named(tmp_path, hooks, needle):
    jwt(tmp_path)
    problems = problems_of(write_yaml(tmp_path, yaml_with(hooks)))
    assert any(needle in p and ":5:" in p for p in problems), problems


def test_missing_signature_keys_refused_without_showing_any_secret(tmp_path):
    jwt(tmp_path, webhooks={})
    problems = problems_of(write_yaml(tmp_path, yaml_with(
        "{public_url: 'https://s.example.com/h', listen: '127.0.0.1:8470'}")))
    assert any("no webhooks.primaryKey or webhooks.secondaryKey" in p for p in problems), problems


def test_one_key_is_a_warning_only(tmp_path):
    jwt(tmp_path, webhooks={"secondaryKey": KEYS["secondaryKey"]})
    c = cfg.load_config(write_yaml(tmp_path, yaml_with(
        "{public_url: 'https://s.example.com/h', listen: '127.0.0.1:8470'}")))
    assert any("has only webhooks.secondaryKey" in w for w in c.warnings)
    assert not any(v in w for w in c.warnings for v in KEYS.values())
    assert "SECONDARY-KEY-VALUE" not in repr(cfg.read_jwt_config(c.connections["acme"]))
