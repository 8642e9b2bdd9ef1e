"""First start: the Box app (client id/secret, RSA key pair, enterprise), the service
account, the vendor user and the shared folders; and the Dev-Console-shaped config.json.

Everything is kept in the store's meta table, so a restart on the same `--data` keeps
the same app, keys and folder ids."""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cfbox_watch.emulator.store import Store

FOLDERS = ("upload", "download", "delivery", "rejection", "archive")


def _rand(n: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def provision(store: Store) -> None:
    if store.meta("client_id"):
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    passphrase = secrets.token_hex(16)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(passphrase.encode())).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    enterprise_id = str(secrets.randbelow(9 * 10 ** 8) + 10 ** 8)
    sa = store.create_user("cfbox-watch emulator app", "")
    store.x("UPDATE users SET login=? WHERE id=?", (f"AutomationUser_{_rand(6, string.digits)}_{_rand(10)}@boxdevedition.com", sa))
    vendor = store.create_user("Studio Vendor", "vendor@example.com")
    folders = {}
    for name in FOLDERS:
        row = store.insert_item(type="folder", name=name.capitalize(), parent_id="0", actor=vendor)
        store.add_collab(row["id"], sa, "editor")
        folders[name] = row["id"]
    config = {
        "boxAppSettings": {
            "clientID": _rand(32), "clientSecret": _rand(32, string.ascii_letters + string.digits),
            "appAuth": {"publicKeyID": _rand(8, string.digits), "privateKey": private_pem, "passphrase": passphrase},
        },
        "enterpriseID": enterprise_id,
        "webhooks": {"primaryKey": _rand(32, string.ascii_letters + string.digits),
                     "secondaryKey": _rand(32, string.ascii_letters + string.digits)},
    }
    for k, v in {"client_id": config["boxAppSettings"]["clientID"],
                 "client_secret": config["boxAppSettings"]["clientSecret"],
                 "public_key_id": config["boxAppSettings"]["appAuth"]["publicKeyID"],
                 "public_key_pem": public_pem, "enterprise_id": enterprise_id,
                 "service_account_id": sa, "vendor_id": vendor,
                 "folders": json.dumps(folders), "config_json": json.dumps(config)}.items():
        store.set_meta(k, v)


def write_config(store: Store, path: str | os.PathLike) -> None:
    """Write the app's config.json readable by its owner only (it holds the key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(json.loads(store.meta("config_json")), f, indent=2)
    os.replace(tmp, path)


def folders(store: Store) -> dict:
    return json.loads(store.meta("folders"))
