"""Roles are Django groups holding permissions; the policy on each environment narrows them.

- viewer: reads everything (pages, the audit trail, the API's GETs);
- developer: plans jobs and asks for them to run (`environments.request_job`);
- release_manager: approves or rejects them (`environments.approve_job`);
- admin: everything, the registry included.

The groups and their permissions are (re)made after every migrate and flush, so a fresh
database has them; `seed_demo` and the admin add people to them.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import post_migrate
from django.dispatch import receiver

VIEWER, DEVELOPER, RELEASE_MANAGER, ADMIN = "viewer", "developer", "release_manager", "admin"

_READ = [
    "view_project",
    "view_environment",
    "view_snapshot",
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


def may_request(user) -> bool:
    return bool(user and user.is_active and user.has_perm("environments.request_job"))


def may_approve(user, environment) -> bool:
    """Holds the permission, and belongs to the environment's approver group if it names one."""
    if not (user and user.is_active and user.has_perm("environments.approve_job")):
        return False
    group_id = environment.approver_group_id
    return group_id is None or user.groups.filter(pk=group_id).exists()


def approver_label(environment) -> str:
    group = environment.approver_group
    return f"members of {group.name}" if group else "release managers"
