"""Prints the author table (master or replica) as one JSON array, sorted by id."""
import json

from django.apps import apps
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    def handle(self, *args, **options):
        label = "master_app" if apps.is_installed("master_app") else "replica_app"
        model = apps.get_model(label, "Author")
        rows = [
            {
                "id": a.id,
                "name": a.name,
                "rating": str(a.rating),
                "birth_date": a.birth_date.isoformat() if a.birth_date else None,
                "cqrs_revision": a.cqrs_revision,
            }
            for a in model.objects.order_by("id")
        ]
        self.stdout.write(json.dumps(rows))
