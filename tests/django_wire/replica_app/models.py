from dj_cqrs.mixins import ReplicaMixin
from django.db import models


class Author(ReplicaMixin):
    CQRS_ID = "author"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)
    rating = models.DecimalField(max_digits=6, decimal_places=2)
    birth_date = models.DateField(null=True)

    class Meta:
        app_label = "replica_app"
