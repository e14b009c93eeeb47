from dj_cqrs.mixins import MasterMixin
from django.db import models


class Author(MasterMixin, models.Model):
    CQRS_ID = "author"

    name = models.CharField(max_length=200)
    rating = models.DecimalField(max_digits=6, decimal_places=2)
    birth_date = models.DateField(null=True)

    class Meta:
        app_label = "master_app"
