"""Audit events for what happens outside Retort's own services: logins, registry edits.

Registry edits are caught at the model level (any path: admin, apply_config, a shell), and
recorded in the same transaction as the save or delete (`AuditedModel.save` opens one).
"""

from __future__ import annotations

from django.contrib.auth import signals as auth_signals
from django.db.models import signals as model_signals
from django.dispatch import receiver

from environments.audit import audit_record
from environments.models.registry import Environment, Project, ProjectRole

# Fields whose values are secret: the event says they changed, never what to.
_SECRET_FIELDS = {"url_encrypted": "url", "webhook_url_encrypted": "webhook_url"}
_NOT_AUDITED = {"id", "created_at", "updated_at"}


@receiver(auth_signals.user_logged_in)
def _logged_in(sender, request, user, **kwargs) -> None:
    audit_record(action="login", user=user, request=request)


@receiver(auth_signals.user_logged_out)
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        audit_record(action="logout", user=user, request=request)


@receiver(auth_signals.user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Only the name tried: Django masks the password in `credentials`, and we keep nothing else.
    username = str(credentials.get("username", ""))[:150]
    audit_record(action="login_failed", request=request, details={"username": username})


def _audited_values(instance) -> dict:
    values = {}
    for field in instance._meta.concrete_fields:
        if field.name in _NOT_AUDITED:
            continue
        values[field.attname] = field.value_from_object(instance)
    return values


def _shown(name: str, value) -> tuple[str, object]:
    if name in _SECRET_FIELDS:
        return _SECRET_FIELDS[name], "(set)" if value else "(empty)"
    return name, value


def _scope(instance) -> dict:
    if isinstance(instance, Project):
        return {"project": instance}
    return {"project": instance.project, "environment": instance}


@receiver(model_signals.pre_save, sender=Project)
@receiver(model_signals.pre_save, sender=Environment)
def _remember_before(sender, instance, raw=False, **kwargs) -> None:
    instance._audit_before = None
    if instance.pk and not raw:
        before = sender.objects.filter(pk=instance.pk).first()
        instance._audit_before = _audited_values(before) if before else None


@receiver(model_signals.post_save, sender=Project)
@receiver(model_signals.post_save, sender=Environment)
def _record_save(sender, instance, created, raw=False, **kwargs) -> None:
    if raw:
        return  # loaddata
    kind = sender.__name__.lower()
    after = _audited_values(instance)
    before = getattr(instance, "_audit_before", None)
    if created or before is None:
        fields = dict(_shown(name, value) for name, value in after.items())
        audit_record(action=f"{kind}_created", details={"fields": fields}, **_scope(instance))
        return
    changed = {}
    for name, value in after.items():
        if before.get(name) != value:
            label, old = _shown(name, before.get(name))
            _, new = _shown(name, value)
            secret = name in _SECRET_FIELDS
            changed[label] = "changed (value not recorded)" if secret else {"from": old, "to": new}
    if changed:
        audit_record(action=f"{kind}_changed", details={"changed": changed}, **_scope(instance))


@receiver(model_signals.post_delete, sender=Project)
@receiver(model_signals.post_delete, sender=Environment)
def _record_delete(sender, instance, **kwargs) -> None:
    kind = sender.__name__.lower()
    details = {"name": instance.name, "slug": instance.slug}
    if isinstance(instance, Environment):
        audit_record(
            action="environment_deleted",
            project=instance.project,
            environment=instance,
            details=details,
        )
    else:
        audit_record(action=f"{kind}_deleted", project=instance, details=details)


@receiver(model_signals.post_save, sender=ProjectRole)
def _record_role_granted(sender, instance, raw=False, **kwargs) -> None:
    if not raw:
        audit_record(
            action="project_role_granted",
            project=instance.project,
            details={"user": instance.user.username, "role": instance.role},
        )


@receiver(model_signals.post_delete, sender=ProjectRole)
def _record_role_revoked(sender, instance, **kwargs) -> None:
    audit_record(
        action="project_role_revoked",
        project=instance.project,
        details={"user": instance.user.username, "role": instance.role},
    )
