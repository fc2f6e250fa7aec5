"""api.access: which stored task an id from a request may name, for each role (no Redis: pure mapping)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.access import ANONYMOUS_CALLER, NOBODY, Caller, Forbidden, list_prefix, may_see, public_event, stored_task_id
from api.errors import TaskNotFound
from shared.apikeys import Role
from shared.settings import Settings

WEB, WEB_READ, OPS = Caller("web", Role.SUBMIT), Caller("web", Role.READ), Caller("ops", Role.ADMIN)


@pytest.mark.parametrize("who", [WEB, WEB_READ])
def test_a_tenant_names_only_its_own_tasks(who: Caller) -> None:
    assert stored_task_id(who, "report-1") == "web~report-1"
    assert stored_task_id(who, "a:b.c-d_e") == "web~a:b.c-d_e"
    # Whatever it writes, a tenant's id lands in its own namespace or names nothing (the separator is no escape).
    for crafted in ("ci~report-1", "web~report-1", "~report-1", "report-1~", "..~x", "", "x/y", "x" * 129):
        with pytest.raises(TaskNotFound):
            stored_task_id(who, crafted)


def test_an_admin_names_every_task_by_its_stored_id() -> None:
    assert stored_task_id(OPS, "web~report-1") == "web~report-1"
    assert stored_task_id(OPS, "report-1") == "report-1"  # a task no tenant owns (from before tenants)
    for crafted in ("web~a~b", "~report-1", "web~", "bad name~x"):
        with pytest.raises(TaskNotFound):
            stored_task_id(OPS, crafted)
    assert stored_task_id(ANONYMOUS_CALLER, "web~report-1") == "web~report-1"  # auth off: one tenant, everyone


def test_who_may_see_what() -> None:
    assert may_see(WEB, "web~x")
    assert may_see(WEB_READ, "web~x")
    assert not may_see(WEB, "ci~x")
    assert not may_see(WEB, "x")  # tasks no tenant owns are for admins only
    assert not may_see(WEB, "webx~x")
    assert may_see(OPS, "x")
    assert may_see(OPS, "ci~x")
    assert not may_see(NOBODY, "x")  # an open path with keys configured reads nothing
    assert not may_see(NOBODY, "web~x")


def test_list_scopes() -> None:
    assert list_prefix(WEB, None) == list_prefix(WEB, "web") == "web~"
    with pytest.raises(Forbidden):
        list_prefix(WEB, "ci")
    assert list_prefix(OPS, None) == ""
    assert list_prefix(OPS, "ci") == "ci~"


def test_events_name_the_id_the_caller_knows() -> None:
    raw = b'{"seq":3,"type":"result","task_id":"web~r1","ts":1.0,"data":{"task_id":"web~r1"}}'
    assert public_event(raw, "web~r1", "r1") == (
        b'{"seq":3,"type":"result","task_id":"r1","ts":1.0,"data":{"task_id":"web~r1"}}'  # the task's data is its own
    )
    assert public_event(raw, "web~r1", "web~r1") is raw


@pytest.mark.parametrize("name", ["anonymous", "a~b", "no space"])
def test_bridge_and_schedule_tenants_are_key_names(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("RELAY_BRIDGE_TENANT", "RELAY_SCHEDULE_TENANT"):
        monkeypatch.setenv(variable, name)
        with pytest.raises(ValidationError):
            Settings()
        monkeypatch.delenv(variable)
