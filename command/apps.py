from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CommandConfig(AppConfig):
    name = "command"
    verbose_name = "Command and linkage"

    def ready(self) -> None:
        # Role groups need the permissions that post_migrate creates, so they are ensured after it.
        post_migrate.connect(_ensure_groups, sender=self, dispatch_uid="command_roles_groups")
        _forget_tokens_on_change()
        from command.models import Department, LinkageRule
        from incidents import refcache

        # Linkage rules (with their departments) are kept per process by incidents/refcache.py.
        refcache.connect(LinkageRule, Department)
        refcache.connect_m2m(LinkageRule.assist_departments.through, Department.jurisdiction.through)
        _connect_to_incidents()
        from command import ws

        ws.register()


def _forget_tokens_on_change() -> None:
    """A token deleted, or its user saved or deleted, is forgotten by the process's token cache."""
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete, post_save
    from rest_framework.authtoken.models import Token

    from command.tokens import tokens_forget

    def token_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
        tokens_forget(key=instance.key)

    def user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
        tokens_forget(user_id=instance.pk)

    user_model = get_user_model()
    for name, signal in (("save", post_save), ("delete", post_delete)):
        signal.connect(token_changed, sender=Token, weak=False, dispatch_uid=f"tokens_forget_{name}_token")
        signal.connect(user_changed, sender=user_model, weak=False, dispatch_uid=f"tokens_forget_{name}_user")


def _ensure_groups(**kwargs: object) -> None:
    from command.services import roles_ensure_groups

    roles_ensure_groups()


def _department_sees_its_incidents(user: Any) -> Any:
    from django.db.models import Q

    if getattr(user, "role", None) == "department" and user.department_id:
        return Q(orders__department_id=user.department_id)
    return None


def _connect_to_incidents() -> None:
    """Plug dispatch into the incident loop (incidents does not import command: DESIGN.md)."""
    from command import services
    from incidents import selectors
    from incidents import services as incident_services

    incident_services.register_action_handler("dispatch", services.incident_dispatch)
    if services.auto_dispatch_after_register not in incident_services.AFTER_ACTION_HOOKS:
        incident_services.AFTER_ACTION_HOOKS.append(services.auto_dispatch_after_register)
    if services.rework_reopen_lead not in incident_services.REWORK_HOOKS:
        incident_services.REWORK_HOOKS.append(services.rework_reopen_lead)
    if _department_sees_its_incidents not in selectors.VISIBILITY_EXTENSIONS:
        selectors.VISIBILITY_EXTENSIONS.append(_department_sees_its_incidents)
