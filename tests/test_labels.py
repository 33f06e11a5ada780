"""Environments carry free-form labels (tier=prod, region=eu, tenant=acme), declared in the
admin or the TOML file, shown on their cards, and filtered by in the status API and the CLI."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from environments.forms import EnvironmentForm, bound_data
from environments.models import Environment
from tests.conftest import env, read_all

pytestmark = pytest.mark.django_db


def _label(environment: Environment, labels: dict) -> None:
    environment.labels = labels
    environment.save()


def test_labels_are_typed_in_the_admin_and_declared_in_the_file_alike(demo_project, tmp_path):
    prod = env(demo_project, "prod")
    typed = EnvironmentForm(
        data=bound_data(EnvironmentForm, prod) | {"labels": "tier=prod, region=eu"}, instance=prod
    )
    wrong = EnvironmentForm(
        data=bound_data(EnvironmentForm, prod) | {"labels": "tier prod"}, instance=prod
    )
    assert typed.is_valid(), typed.errors
    typed.save()
    config = tmp_path / "retort.toml"
    config.write_text(
        f'[[project]]\nname = "inventory"\nalembic_ini = "{demo_project.alembic_ini}"\n\n'
        '[[project.environment]]\nname = "qa"\nurl = "sqlite:///qa.db"\n'
        'labels = { tier = "staging", tenant = "acme" }\n'
    )
    call_command("apply_config", str(config), stdout=StringIO())
    config.write_text(config.read_text().replace('tenant = "acme"', 'tenant = ["acme"]'))

    with pytest.raises(CommandError, match=r"labels must be a table of names and values"):
        call_command("apply_config", str(config), stdout=StringIO())
    prod.refresh_from_db()
    assert prod.labels == {"tier": "prod", "region": "eu"}
    assert env(demo_project, "qa").labels == {"tier": "staging", "tenant": "acme"}
    assert wrong.errors["labels"] == ["Write labels as name=value, separated by commas."]


def test_a_card_shows_its_labels(client_alice, demo_project):
    _label(env(demo_project, "prod"), {"tier": "prod", "items": "x"})

    html = client_alice.get(reverse("overview")).content.decode()

    card = html[html.index('aria-label="prod"') :]
    assert '<span class="tag" data-testid="label">items=x</span>' in card
    assert '<span class="tag" data-testid="label">tier=prod</span>' in card


def test_the_status_api_and_the_cli_filter_by_label_and_status(client_alice, demo_project):
    _label(env(demo_project, "staging"), {"tier": "pre", "region": "eu"})
    _label(env(demo_project, "prod"), {"tier": "prod", "region": "eu"})
    read_all(demo_project)

    def api(**params) -> list[str]:
        response = client_alice.get(reverse("api_status"), params)
        return [row["environment"] for row in response.json()]

    out = StringIO()
    with pytest.raises(SystemExit) as exit_code:
        call_command("migration_status", "--json", "--label", "region:eu", "--status", "behind",
                     stdout=out)  # fmt: skip
    bad = client_alice.get(reverse("api_status"), {"label": "region"})

    assert api(label="region:eu") == ["staging", "prod"]
    assert api(label=["region:eu", "tier:prod"]) == ["prod"]
    assert api(status="current") == ["dev"]
    assert api(status="behind", label="tier=pre") == ["staging"]
    assert [row["environment"] for row in json.loads(out.getvalue())] == ["staging", "prod"]
    assert json.loads(out.getvalue())[1]["labels"] == {"tier": "prod", "region": "eu"}
    assert exit_code.value.code == 1
    assert (bad.status_code, bad.json()["error"]) == (
        400,
        "'region' is not a label filter: write name:value.",
    )
