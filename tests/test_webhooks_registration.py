"""Registration of our V2 webhooks: the pure plan, and the real thing against the
emulator through the real Box adapter and state DB."""

from __future__ import annotations

from cfbox_watch.box_adapter import BoxRemote, RemoteWebhook
from cfbox_watch.config_model import Connection
from cfbox_watch.webhooks import registration
from cfbox_watch.webhooks.registration import Action, plan
from cfbox_watch.webhooks.service import WebhookService

ADDR = "https://studio.example.com/cfbox/webhook"
T = registration.TRIGGERS


def hook(id, folder, address=ADDR, triggers=T, type="folder"):
    return RemoteWebhook(id=id, target_id=folder, target_type=type, address=address, triggers=tuple(triggers))


def test_plan_creates_keeps_updates():
    wanted = {"10": "a", "20": "b", "30": "c"}
    existing = [hook("1", "10"), hook("2", "20", address="https://old.example.com/x"),
                hook("9", "99", address="https://someone-else.example.com")]
    assert plan(wanted, ADDR, T, existing, {}) == [
        Action("keep", "10", "1", "a"), Action("update", "20", "2", "b"), Action("create", "30", mapping="c")]


def test_plan_updates_when_triggers_differ_and_ignores_trigger_order():
    assert plan({"10": "a"}, ADDR, T, [hook("1", "10", triggers=reversed(T))], {}) == [Action("keep", "10", "1", "a")]
    assert plan({"10": "a"}, ADDR, T, [hook("1", "10", triggers=["FILE.UPLOADED"])], {}) == [
        Action("update", "10", "1", "a")]


def test_plan_removes_only_our_webhooks_on_unwanted_folders():
    existing = [hook("1", "10"),                                      # our address, folder gone
                hook("2", "20", address="https://old.example.com"),  # recorded as ours (old URL)
                hook("3", "30", address="https://other-app.example.com"),  # not ours: left alone
                hook("4", "40", type="file")]                          # a file webhook at our address
    ours = {"20": "2", "50": "5"}                                     # 5 no longer exists on Box
    assert plan({}, ADDR, T, existing, ours) == [
        Action("delete", "10", "1"), Action("delete", "20", "2"), Action("delete", "", "4"),
        Action("forget", "50", "5")]


def test_plan_is_idempotent():
    wanted = {"10": "a", "20": "b"}
    after = [hook("1", "10"), hook("2", "20")]
    assert all(a.kind == "keep" for a in plan(wanted, ADDR, T, after, {"10": "1", "20": "2"}))


def _remote(emu) -> BoxRemote:
    return BoxRemote.from_connection(Connection(name="emu", jwt_config=emu.config_path, base_url=emu.base_url,
                                                upload_url=emu.upload_url))


def test_registration_against_the_emulator(emulator, tmp_path):
    emu = emulator
    addr = "http://127.0.0.1:9/hook"
    down, deliv = emu.folders["download"], emu.folders["delivery"]
    remote = _remote(emu)
    # someone (an earlier install with another public URL) left a webhook on the Download folder
    old = remote.create_webhook(down, "http://127.0.0.1:9/old", ["FILE.UPLOADED"])
    svc = WebhookService(tmp_path / "state", lambda key: None)

    routes = svc.register("emu", {down: "acme", deliv: "brand"}, remote, addr)
    hooks = {w["target"]["id"]: w for w in emu.control.webhooks()}
    assert set(hooks) == {down, deliv}
    assert hooks[down]["id"] == old.id and hooks[down]["address"] == addr      # reused, updated
    assert set(hooks[down]["triggers"]) == set(T)
    assert routes == {hooks[down]["id"]: down, hooks[deliv]["id"]: deliv}

    # a restart (new service, same state DB, new adapter): nothing changes, no Box writes
    emu.control.reset_counters()
    svc2 = WebhookService(tmp_path / "state", lambda key: None)
    assert svc2.register("emu", {down: "acme", deliv: "brand"}, _remote(emu), addr) == routes
    writes = {k: v for k, v in emu.control.counters().items() if "webhooks" in k and not k.startswith("GET")}
    assert writes == {}
    assert len(emu.control.webhooks()) == 2

    # a mapping goes away: its webhook goes too, the other stays
    svc2.register("emu", {down: "acme"}, remote, addr)
    assert [w["target"]["id"] for w in emu.control.webhooks()] == [down]


def test_create_race_reuses_the_webhook_that_won(emulator, tmp_path):
    """Two daemons (or a crash after Box created it but before we recorded it): the
    409 on create becomes an update of the existing webhook."""
    emu = emulator
    remote = _remote(emu)
    down = emu.folders["download"]
    winner = remote.create_webhook(down, "http://127.0.0.1:9/other", ["FILE.UPLOADED"])
    actions = [Action("create", down, mapping="acme")]   # planned before the winner appeared
    recorded = []
    routes = registration.apply(remote, actions, "http://127.0.0.1:9/hook", T,
                                record=lambda f, w, m: recorded.append((f, w, m)), forget=lambda f: None)
    assert routes == {winner.id: down} and recorded == [(down, winner.id, "acme")]
    [only] = emu.control.webhooks()
    assert only["address"] == "http://127.0.0.1:9/hook"


def test_webhook_of_a_mapping_removed_while_stopped_goes_at_next_start(emulator, tmp_path):
    """Sync as the daemon does it: first with the Download mapping, then (a 'restart'
    with a config where the connection keeps `webhooks` but has no Download folder)."""
    import time

    from cfbox_watch.config_model import Config, IncomingMapping, WebhookSettings

    emu = emulator
    hooks = WebhookSettings("http://127.0.0.1:9/hook", "127.0.0.1", 0)
    conn = Connection(name="emu", jwt_config=emu.config_path, base_url=emu.base_url, upload_url=emu.upload_url,
                      webhooks=hooks)
    m = IncomingMapping(name="acme", connection="emu", folder_id=emu.folders["download"], local=tmp_path / "in",
                        key_path="post_production[0]")
    with_mapping = Config(path=tmp_path / "c.yaml", state_dir=tmp_path / "state", connections={"emu": conn},
                          incoming=(m,))
    remote = _remote(emu)
    svc = WebhookService(tmp_path / "state", lambda key: None)
    svc.sync(with_mapping, lambda c: remote)
    deadline = time.monotonic() + 10
    while not emu.control.webhooks() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emu.control.webhooks()) == 1
    svc.stop()

    without = Config(path=tmp_path / "c.yaml", state_dir=tmp_path / "state", connections={"emu": conn})
    svc2 = WebhookService(tmp_path / "state", lambda key: None)
    svc2.sync(without, lambda c: remote)
    deadline = time.monotonic() + 10
    while emu.control.webhooks() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emu.control.webhooks() == []
    svc2.stop()


def test_webhooks_switched_off_while_stopped_are_removed_at_next_start(emulator, tmp_path):
    import time
    from types import SimpleNamespace

    from cfbox_watch.config_model import Config, IncomingMapping, WebhookSettings
    from cfbox_watch.webhooks import service

    emu = emulator
    base = dict(name="emu", jwt_config=emu.config_path, base_url=emu.base_url, upload_url=emu.upload_url)
    on = Connection(**base, webhooks=WebhookSettings("http://127.0.0.1:9/hook", "127.0.0.1", 0))
    m = IncomingMapping(name="acme", connection="emu", folder_id=emu.folders["download"], local=tmp_path / "in",
                        key_path="post_production[0]")
    remote = _remote(emu)

    def daemon(conn):
        cfg = Config(path=tmp_path / "c.yaml", state_dir=tmp_path / "state", connections={"emu": conn}, incoming=(m,))
        return SimpleNamespace(config=cfg, sides={}, _remote_for=lambda c: remote)

    def wait(pred):
        deadline = time.monotonic() + 10
        while not pred() and time.monotonic() < deadline:
            time.sleep(0.05)
        return pred()

    first = daemon(on)
    service.sync(first)
    assert wait(lambda: len(emu.control.webhooks()) == 1)
    service.stop(first)
    assert service.recorded_connections(tmp_path / "state" / "state.sqlite3") == {"emu"}

    second = daemon(Connection(**base))          # `webhooks:` removed from the connection
    service.sync(second)
    assert wait(lambda: emu.control.webhooks() == [])
    assert wait(lambda: service.recorded_connections(tmp_path / "state" / "state.sqlite3") == set())
    service.stop(second)
