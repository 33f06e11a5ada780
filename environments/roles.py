"""Roles are Django groups holding permissions; the policy on each environment narrows them.

- viewer: reads everything (pages, the audit trail, the API's GETs);
- developer: plans jobs and asks for them to run (`environments.request_job`);
- release_manager: approves or rejects them (`environments.approve_job`);
- admin: everything, the registry included.

A person's group is their role everywhere, unless a `ProjectRole` gives them another one in a
project: then that one holds there, higher or lower (a developer of `billing`, a viewer
elsewhere; a release manager of one team's project only). Every check takes the project.

The groups and their permissions are (re)made after every migrate and flush, so a fresh
database has them; `seed_demo` and the admin add people to them.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from environments.models.registry import ProjectRole

VIEWER, DEVELOPER, RELEASE_MANAGER, ADMIN = "viewer", "developer", "release_manager", "admin"

_READ = [
    "view_project",
    "view_environment",
    "view_currentstate",
    "view_statechange",
    "view_job",
    "view_approval",
    "view_backup",
    "view_auditevent",
]
ROLES: dict[str, list[str]] = {
    VIEWER: _READ,
    DEVELOPER: [*_READ, "request_job"],
    RELEASE_MANAGER: [*_READ, "request_job", "approve_job"],
}


def ensure_roles() -> None:
    """Create the role groups and give them exactly their permissions (admin: all of ours)."""
    ours = Permission.objects.filter(content_type__app_label="environments")
    by_codename = {permission.codename: permission for permission in ours}
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set([by_codename[c] for c in codenames if c in by_codename])
    admin, _ = Group.objects.get_or_create(name=ADMIN)
    admin.permissions.set(list(ours))


@receiver(post_migrate)
def _roles_after_migrate(sender, app_config=None, using="default", **kwargs) -> None:
    if getattr(sender, "label", None) != "environments":
        return
    # This receiver may be connected before auth's own (the admin imports this module early),
    # so make sure our permissions exist first; auth's receiver then finds them made.
    create_permissions(sender, verbosity=0, using=using)
    ensure_roles()


_RANK = {VIEWER: 0, DEVELOPER: 1, RELEASE_MANAGER: 2, ADMIN: 3}


def _role(user, project) -> tuple[str | None, bool]:
    """The user's role in `project`, and whether it comes from a grant there (else: their
    global role, from their groups' permissions)."""
    if not (user and getattr(user, "is_authenticated", False) and user.is_active):
        return None, False
    if user.is_superuser:
        return ADMIN, False
    if project is not None:
        granted = (
            ProjectRole.objects.filter(project=project, user=user)
            .values_list("role", flat=True)
            .first()
        )
        if granted:
            return granted, True
    for permission, role in (("approve_job", RELEASE_MANAGER), ("request_job", DEVELOPER)):
        if user.has_perm(f"environments.{permission}"):
            return role, False
    return (VIEWER if user.has_perm("environments.view_project") else None), False


def role_in(user, project) -> str | None:
    """The user's role in `project`: their grant there, else their global role."""
    return _role(user, project)[0]


def _ranks(role: str | None, least: str) -> bool:
    return role is not None and _RANK[role] >= _RANK[least]


def may_request(user, project) -> bool:
    """May plan jobs in `project` and ask for them to run."""
    return _ranks(role_in(user, project), DEVELOPER)


def may_approve(user, environment) -> bool:
    """A release manager (or admin) in the environment's project, who also belongs to the
    environment's approver group if it names one — or, for the release manager group, is a
    release manager of this project by grant."""
    role, granted = _role(user, environment.project)
    if not _ranks(role, RELEASE_MANAGER):
        return False
    group = environment.approver_group
    if group is None or user.groups.filter(pk=group.pk).exists():
        return True
    # a release manager of this project by grant counts as a member of the role's group
    return granted and role == group.name == RELEASE_MANAGER


def approver_label(environment) -> str:
    group = environment.approver_group
    return f"members of {group.name}" if group else "release managers"


def may_act_on_jobs(user, environment) -> bool:
    """Whether `user` may queue, cancel or re-plan a job of `environment`: whoever may plan
    jobs in its project, or approve them for it."""
    return may_request(user, environment.project) or may_approve(user, environment)
