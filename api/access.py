"""Who may do what to which task: the one place every route asks.

A caller is the key's name (its tenant) and role (``shared.apikeys.Role``). A tenant addresses its tasks by the
ids it chose (``shared.tenancy`` stores them in its namespace); an admin addresses every task by its stored id
(``web~report-1``, or a bare id for a task no tenant owns). ``stored_task_id`` maps an id from a request to the
task it may name: a tenant's id can only ever name a task of that tenant, so another tenant's id reaches the
same code, the same Redis calls and the same 404 as an id nobody used (ids cannot be probed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sanic import Request

from api.errors import ApiError, TaskNotFound
from shared import tenancy
from shared.apikeys import ANONYMOUS, Role
from shared.tasks import TaskState


class Forbidden(ApiError):
    status, code = 403, "forbidden"


@dataclass(frozen=True)
class Caller:
    """Who a request is: the key's name (its tenant) and role."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def tenant(self) -> str | None:
        """The namespace this caller's submits go to (None: a task no tenant owns, an admin's or auth off's)."""
        return None if self.is_admin else self.name


# With auth off there is one tenant, everyone, who sees everything (today's single-tenant behaviour).
ANONYMOUS_CALLER: Final = Caller(ANONYMOUS, Role.ADMIN)
# With keys configured, a request on an open path (health, metrics, a CORS preflight) is nobody: it could read
# only the tasks of a tenant named "anonymous", a name no key may have.
NOBODY: Final = Caller(ANONYMOUS, Role.READ)


def caller(request: Request) -> Caller:
    """Who ``request`` is (set by ``api.auth.require_api_key``)."""
    who: Caller = request.ctx.caller
    return who


def require(request: Request, role: Role) -> Caller:
    """The caller, if its role grants what ``role`` grants; 403 otherwise (it reveals nothing of any task)."""
    who = caller(request)
    if role is Role.SUBMIT and who.role is Role.READ:
        raise Forbidden(f"the key {who.name!r} may only read tasks (its role is {who.role})")
    if role is Role.ADMIN and not who.is_admin:
        raise Forbidden(f"only an admin key may do this (the key {who.name!r} has the role {who.role})")
    return who


def may_see(who: Caller, stored_id: str) -> bool:
    """May ``who`` see (and, with the role for it, act on) the task stored as ``stored_id``?"""
    return who.is_admin or tenancy.owner(stored_id) == who.name


def stored_task_id(who: Caller, task_id: str) -> str:
    """The stored id of the task ``who`` names ``task_id``, or 404 ``task_not_found`` if it can name none."""
    stored = task_id if who.is_admin else tenancy.stored_id(who.tenant, task_id)
    if not tenancy.is_stored_id(stored) or not may_see(who, stored):
        raise TaskNotFound(f"no task {task_id[:130]!r}", {"state": TaskState.UNKNOWN.value})
    return stored


def public_task_id(who: Caller, stored_id: str) -> str:
    """The id ``who`` knows a visible task by."""
    return stored_id if who.is_admin else tenancy.client_id(stored_id)


def list_prefix(who: Caller, tenant: str | None) -> str:
    """The stored-id prefix a ``GET /tasks`` by ``who`` is limited to ('' for all), for a ``?tenant=`` filter:
    an admin's filter picks a tenant; a tenant sees only its own and may only name itself."""
    if who.is_admin:
        return tenancy.prefix(tenant) if tenant else ""
    if tenant is not None and tenant != who.name:
        raise Forbidden("only an admin key may list another tenant's tasks")
    return tenancy.prefix(who.name)


def public_event(raw: bytes, stored_id: str, public_id: str) -> bytes:
    """An event of a task as ``public_id``'s caller knows it: its ``task_id`` field (the second, after
    ``type``; see ``shared.events.body``) names the id the caller used."""
    if stored_id == public_id:
        return raw
    return raw.replace(b'"task_id":"%s"' % stored_id.encode(), b'"task_id":"%s"' % public_id.encode(), 1)


def public_workflow_event(raw: bytes, who: Caller) -> bytes:
    """An event of a workflow's log as ``who`` knows it: its workflow's and its steps' ids (``task_id``,
    ``workflow_id``, in the event and in a step's value) as the tenant chose them."""
    if who.is_admin:
        return raw
    prefix = tenancy.prefix(who.name).encode()
    for field in (b'"task_id":"', b'"workflow_id":"'):
        raw = raw.replace(field + prefix, field)
    return raw
