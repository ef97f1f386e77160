"""`edgectl keys generate`: a usable Ed25519 pair, private key 0600, no silent overwrite."""

from __future__ import annotations

import json
import stat

from edge_common import bundle as B
from edgectl.cli import main


def test_generate_writes_a_working_pair(cli_runner, tmp_path):
    out = tmp_path / "keys"
    res = cli_runner.invoke(main, ["keys", "generate", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    paths = json.loads(res.output)
    priv, pub = out / "edge-signing.key", out / "edge-signing.pub"
    assert paths == {"private_key": str(priv), "public_key": str(pub)}
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in priv.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    key = B.load_private_key(priv)
    sig = key.sign(b"hello")
    B.load_public_key(pub).verify(sig, b"hello")  # raises if the two do not match


def test_refuses_to_overwrite_without_force(cli_runner, tmp_path):
    assert cli_runner.invoke(main, ["keys", "generate", "--out", str(tmp_path)]).exit_code == 0
    before = (tmp_path / "edge-signing.key").read_bytes()
    res = cli_runner.invoke(main, ["keys", "generate", "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert "exists; pass --force" in res.output
    assert (tmp_path / "edge-signing.key").read_bytes() == before
    res = cli_runner.invoke(main, ["keys", "generate", "--out", str(tmp_path), "--force"])
    assert res.exit_code == 0
    assert (tmp_path / "edge-signing.key").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-signing.key", "edge-signing.pub"]


def test_new_key_folder_is_private_and_force_keeps_the_key_private(cli_runner, tmp_path):
    out = tmp_path / "new" / "keys"
    assert cli_runner.invoke(main, ["keys", "generate", "--out", str(out)]).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert cli_runner.invoke(main, ["keys", "generate", "--out", str(out),
                                    "--force"]).exit_code == 0
    assert stat.S_IMODE((out / "edge-signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "edge-signing.pub").stat().st_mode) == 0o644
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp left behind
