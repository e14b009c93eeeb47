"""What the Django master does in the wire test, in phases.

before  creates authors 1-10 (published before any replica queue exists: the broker drops them)
main    creates 11-60, updates every third twice, deletes every seventh, then sends a SYNC of
        1-5 directed at --queue and a broadcast SYNC of 6-10
"""
import datetime
from decimal import Decimal

from django.core.management.base import BaseCommand

from master_app.models import Author


def create(i):
    Author.objects.create(
        id=i,
        name=f"author {i} \u00e9\u00e8 \"quoted\" / slash",
        rating=Decimal(i % 40) + Decimal("0.25"),
        birth_date=datetime.date(1950 + i % 50, 1 + i % 12, 1 + i % 28) if i % 4 else None,
    )


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("phase", choices=["before", "main"])
        parser.add_argument("--queue", default=None)

    def handle(self, *args, phase, queue, **options):
        if phase == "before":
            for i in range(1, 11):
                create(i)
            return
        for i in range(11, 61):
            create(i)
        for i in range(11, 61, 3):
            a = Author.objects.get(id=i)
            a.name = f"{a.name} v1"
            a.save()
            a.rating = a.rating + Decimal("1.50")
            a.save()
        for i in range(14, 61, 7):
            Author.objects.get(id=i).delete()
        for a in Author.objects.filter(id__lte=5):
            assert a.cqrs_sync(queue=queue), "directed sync failed"
        for a in Author.objects.filter(id__gt=5, id__lte=10):
            assert a.cqrs_sync(), "broadcast sync failed"
