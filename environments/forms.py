"""Forms for the pages: the audit filters."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from environments import audit
from environments.models import AuditEvent, Environment, Project


class AuditFilterForm(forms.Form):
    project = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    environment = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    actor = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(required=False)
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        everything = [("", "All")]
        self.fields["project"].choices = everything + [
            (p.pk, p.name) for p in Project.objects.order_by("name")
        ]
        self.fields["environment"].choices = everything + [
            (e.pk, f"{e.project.name} / {e.name}")
            for e in Environment.objects.select_related("project")
        ]
        recorded = AuditEvent.objects.order_by().values_list("action", flat=True).distinct()
        self.fields["action"].choices = everything + [
            (action, action) for action in audit.known_actions(list(recorded))
        ]
        self.actor_names = list(
            get_user_model().objects.order_by("username").values_list("username", flat=True)
        )

    def clean_date_to(self):
        return self._bounded(self.cleaned_data.get("date_to"))

    def clean_date_from(self):
        return self._bounded(self.cleaned_data.get("date_from"))

    @staticmethod
    def _bounded(day):
        if day is not None and day.year >= 9999:
            raise forms.ValidationError("Pick a date before the year 9999.")
        return day

    def errors_sentence(self) -> str:
        """Every error of the filters in one line, for a 400."""
        parts = []
        for field, errors in self.errors.items():
            name = "" if field == "__all__" else f"{field.replace('_', ' ')}: "
            parts += [f"{name}{error}" for error in errors]
        return " ".join(parts)

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def filters(self) -> dict:
        """The cleaned filters for `audit_export.events_filtered` (none if the form is invalid)."""
        if not self.is_bound or not self.is_valid():
            return {}
        data = self.cleaned_data
        return {
            "project_id": data.get("project"),
            "environment_id": data.get("environment"),
            "actor": data.get("actor", "").strip(),
            "action": data.get("action", ""),
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
        }
