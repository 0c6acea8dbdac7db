from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CommandConfig(AppConfig):
    name = "command"
    verbose_name = "Command and linkage"

    def ready(self) -> None:
        # Role groups need the permissions that post_migrate creates, so they are ensured after it.
        post_migrate.connect(_ensure_groups, sender=self, dispatch_uid="command_roles_groups")


def _ensure_groups(**kwargs: object) -> None:
    from command.services import roles_ensure_groups

    roles_ensure_groups()
