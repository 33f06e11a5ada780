from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from environments.audit import acting_as
from environments.tokens import token_issue


class Command(BaseCommand):
    help = "Issue an API token for a user; the token is printed once and stored only hashed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for")

    def handle(self, *args, **options) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        with acting_as("create_api_token"):
            _, token = token_issue(user=user, name=options["name"])
        self.stdout.write(token)
