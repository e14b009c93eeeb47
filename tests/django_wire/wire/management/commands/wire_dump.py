"""Prints the author table (master or replica) as one JSON array, sorted by id.

--updated  adds each row's cqrs_updated (ISO 8601 with its offset)
"""
import json

from django.apps import apps
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--updated", action="store_true")

    def handle(self, *args, updated, **options):
        label = "master_app" if apps.is_installed("master_app") else "replica_app"
        model = apps.get_model(label, "Author")
        rows = []
        for a in model.objects.order_by("id"):
            row = {
                "id": a.id,
                "name": a.name,
                "rating": str(a.rating),
                "birth_date": a.birth_date.isoformat() if a.birth_date else None,
                "cqrs_revision": a.cqrs_revision,
            }
            if updated:
                row["cqrs_updated"] = a.cqrs_updated.isoformat()
            rows.append(row)
        self.stdout.write(json.dumps(rows))
