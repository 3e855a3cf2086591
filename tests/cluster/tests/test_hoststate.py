"""The host snapshot's iptables check: what kube-proxy's own cleanup would leave (a `KUBE-`
chain and the rule jumping into it) is removed, an iptables-nft table that appeared empty is
deleted, and anything else that differs is reported, never silently removed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.hoststate import HostSnapshot, fingerprint, iptables_rules, nft_tables

CHAIN = "KUBE-FIMTEST-LEFTOVER"
OTHER = "FIMTEST-OTHER"  # not kube-proxy's: reported, left to the test to remove


def _iptables(*args: str, check: bool = True) -> None:
    subprocess.run(["/usr/sbin/iptables", "-w", *args], capture_output=True, check=check)


@pytest.fixture
def clean_host() -> Iterator[None]:
    before, tables = fingerprint(), nft_tables()
    yield
    for table in ("nat", "filter"):
        _iptables("-t", table, "-D", "PREROUTING" if table == "nat" else "FORWARD",
                  "-j", CHAIN, check=False)  # fmt: skip
        for chain in (CHAIN, OTHER):
            _iptables("-t", table, "-F", chain, check=False)
            _iptables("-t", table, "-X", chain, check=False)
    for table in set(nft_tables()) - set(tables):
        subprocess.run(["/usr/sbin/nft", "delete", "table", *table.split()], check=False)
    assert fingerprint() == before


def test_kube_leftovers_are_removed_and_an_empty_new_table_deleted(clean_host: None) -> None:
    snapshot = HostSnapshot.take()
    _iptables("-t", "nat", "-N", CHAIN)
    _iptables("-t", "nat", "-A", CHAIN, "-p", "tcp", "-d", "10.96.0.99", "-j", "RETURN")
    _iptables("-t", "nat", "-I", "PREROUTING", "-j", CHAIN)
    assert iptables_rules() != snapshot.iptables
    assert snapshot._restore_iptables() == []
    assert iptables_rules() == snapshot.iptables
    assert nft_tables() == snapshot.nft_tables  # a nat table that was not there is gone


def test_other_differences_are_reported_not_removed(clean_host: None) -> None:
    snapshot = HostSnapshot.take()
    _iptables("-t", "filter", "-N", OTHER)
    problems = snapshot._restore_iptables()
    assert problems == [f"iptables/filter: left: ['-N {OTHER}']"]
    assert f"-N {OTHER}" in iptables_rules()["iptables/filter"]
