"""What a person asks for when they ask for a rollout, from the page, the API or the CLI: the
target, the labels that select the environments, the waves (one a line, `canary: count=2
parallel=1`), the failure policy (`stop`, `continue`, `3`, `10%`), whether to back up, why.
Whether it may be, and what it means, is for `rollout_plans.rollout_request`."""

from __future__ import annotations

from django import forms

from environments.forms import LabelsField
from environments.models import Project
from environments.rollout_specs import WaveSpec, failure_parse, wave_parse
from environments.transitions import Refused

DEFAULT_WAVES = "canary: count=1 parallel=1\nrest: parallel=4"
BACKUP_CHOICES = [("", "as each environment's policy says"), ("yes", "yes"), ("no", "no")]


class RolloutForm(forms.Form):
    target = forms.CharField(max_length=200, initial="heads")
    labels = LabelsField(required=False, help_text="Which environments: tier=tenant, region=eu.")
    waves = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        initial=DEFAULT_WAVES,
        help_text="One wave a line: a name, then labels, count=N (at most), parallel=N.",
    )
    on_failure = forms.CharField(
        max_length=20,
        initial="stop",
        help_text="stop (at the first failure), continue, 3 (failures allowed) or 10%.",
    )
    backup = forms.ChoiceField(choices=BACKUP_CHOICES, required=False)
    reason = forms.CharField(
        required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def clean_waves(self) -> list[WaveSpec]:
        lines = self.cleaned_data["waves"].splitlines()
        try:
            waves = [wave_parse(line) for line in lines if line.strip()]
        except Refused as exc:
            raise forms.ValidationError(str(exc)) from None
        if not waves:
            raise forms.ValidationError("Give at least one wave.")
        return waves

    def clean_on_failure(self) -> str:
        value = self.cleaned_data["on_failure"]
        try:
            failure_parse(value)
        except Refused as exc:
            raise forms.ValidationError(str(exc)) from None
        return value

    def errors_sentence(self) -> str:
        return " ".join(
            f"{'' if field == '__all__' else field.replace('_', ' ') + ': '}{error}"
            for field, errors in self.errors.items()
            for error in errors
        )

    def request(self, project: Project) -> dict:
        """The keyword arguments of `rollout_plans.rollout_request` (after `is_valid`)."""
        data = self.cleaned_data
        return {
            "project": project,
            "target": data["target"],
            "labels": data["labels"],
            "waves": data["waves"],
            "on_failure": data["on_failure"],
            "take_backup": {"yes": True, "no": False}.get(data.get("backup") or ""),
            "reason": data.get("reason", ""),
        }


def rollout_form_from_api(body: dict) -> RolloutForm:
    """The API's JSON: target, labels (an object), waves (a list of lines), on_failure,
    backup (true, false or absent), reason."""
    backup = body.get("backup")
    waves = body.get("waves") or DEFAULT_WAVES
    return RolloutForm(
        {
            "target": body.get("target", "heads"),
            "labels": body.get("labels") or {},
            "waves": "\n".join(map(str, waves)) if isinstance(waves, list) else str(waves),
            "on_failure": str(body.get("on_failure", "stop")),
            "backup": {True: "yes", False: "no"}.get(backup, "")
            if isinstance(backup, bool)
            else "",
            "reason": body.get("reason", "") if isinstance(body.get("reason", ""), str) else "",
        }
    )
